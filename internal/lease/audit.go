package lease

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// SessionLister is a Backend that can list the sessions it holds open, so
// the auditor can find sessions that no lease owns. Sessions are matched by
// their SessionID when they have one (Identified), else by ==, so they must
// be comparable.
type SessionLister interface {
	Sessions() []Session
}

// Identified is a Session that names what it is a view of, for when two
// Session values can stand for the same thing.
type Identified interface {
	SessionID() any
}

func sessionID(s Session) any {
	if id, ok := s.(Identified); ok {
		return id.SessionID()
	}
	return s
}

// Sweeper is a Backend that can find and close resources of its own that
// no session accounts for (its own orphans). The auditor calls it each
// round and counts what it closed.
type Sweeper interface {
	SweepOrphans(ctx context.Context) int
}

// audit is the auditor's memory between two runs. Only checkLoop uses it.
type audit struct {
	lastProblem string       // the broken invariant last logged
	suspects    map[any]bool // sessions (by id) no lease owned at the last run
}

// CheckInvariant checks the invariant now. A broken one is counted and
// logged loudly, once per episode (until it holds again or breaks
// differently).
func (m *Manager) CheckInvariant() error {
	return m.checkInvariant(&audit{})
}

func (m *Manager) checkInvariant(a *audit) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, err := m.invariantLocked()
	if err == nil {
		a.lastProblem = ""
		return nil
	}
	if err.Error() == a.lastProblem {
		return err
	}
	a.lastProblem = err.Error()
	m.violations++
	fields := []zap.Field{zap.Error(err),
		zap.Int("active", m.active), zap.Int("closing", m.closing), zap.Int("opening", m.opening),
		zap.Uint64("granted_total", m.granted), zap.Uint64("violations", m.violations)}
	for id, l := range m.leases {
		fields = append(fields, zap.Dict("lease_"+id, zap.Stringer("state", l.state),
			zap.Time("last_activity", l.lastActivity), zap.Uint64("commands", l.commands),
			zap.Int("inflight", l.inflight)))
	}
	m.log.Error("LEASE INVARIANT BROKEN", fields...)
	return err
}

// sweepOrphans closes sessions the backend holds that no lease owns, such
// as one a bug forgot. A session must be unowned at two audits in a row:
// between Open and the grant a session is briefly unowned.
func (m *Manager) sweepOrphans(a *audit) {
	if sw, ok := m.backend.(Sweeper); ok {
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CloseTimeout)
		n := sw.SweepOrphans(ctx)
		cancel()
		if n > 0 {
			m.mu.Lock()
			m.orphans += uint64(n)
			m.mu.Unlock()
		}
	}
	lister, ok := m.backend.(SessionLister)
	if !ok {
		return
	}
	sessions := lister.Sessions()
	m.mu.Lock()
	owned := make(map[any]bool, len(m.leases)+m.warm)
	for _, l := range m.leases {
		owned[sessionID(l.session)] = true
	}
	for _, n := range m.sticky {
		for _, s := range []Session{n.warm, n.closing} {
			if s != nil {
				owned[sessionID(s)] = true
			}
		}
	}
	m.mu.Unlock()
	suspects := make(map[any]bool)
	var orphans []Session
	for _, s := range sessions {
		id := sessionID(s)
		switch {
		case owned[id]:
		case a.suspects[id]:
			orphans = append(orphans, s)
		default:
			suspects[id] = true
		}
	}
	a.suspects = suspects
	for _, s := range orphans {
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CloseTimeout)
		err := s.Close(ctx)
		cancel()
		m.mu.Lock()
		m.orphans++
		n := m.orphans
		m.mu.Unlock()
		m.log.Error("closed an orphan session that no lease owned", zap.Error(err),
			zap.String("session", sessionName(s)), zap.Uint64("orphans_closed", n))
	}
}

func sessionName(s Session) string {
	if n, ok := s.(interface{ String() string }); ok {
		return n.String()
	}
	return "unnamed"
}

func (m *Manager) checkLoop() {
	defer close(m.checkerDone)
	if m.cfg.CheckInterval < 0 {
		<-m.stopCheck
		return
	}
	a := &audit{}
	t := time.NewTicker(m.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			m.checkInvariant(a)
			m.sweepOrphans(a)
		case <-m.stopCheck:
			return
		}
	}
}
