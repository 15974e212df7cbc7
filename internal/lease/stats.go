package lease

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Get describes the live lease with that id.
func (m *Manager) Get(id string) (Info, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, err := m.lookupLocked(id)
	if err != nil {
		return Info{}, err
	}
	return l.infoLocked(), nil
}

// Filter selects leases; zero fields select all.
type Filter struct {
	// Labels the lease carries, every one.
	Labels map[string]string
	// SessionKey the lease holds.
	SessionKey string
	// Principal that acquired the lease.
	Principal string
}

func (f Filter) match(l *Lease) bool {
	return hasLabels(l.labels, f.Labels) && (f.SessionKey == "" || f.SessionKey == l.SessionKey()) &&
		(f.Principal == "" || f.Principal == l.principal)
}

// List describes the live leases the filter selects, oldest first.
func (m *Manager) List(f Filter) []Info {
	m.mu.Lock()
	out := make([]Info, 0, len(m.leases))
	for _, l := range m.leases {
		if f.match(l) {
			out = append(out, l.infoLocked())
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Info) int {
		if c := a.GrantedAt.Compare(b.GrantedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// Stats is a snapshot of the manager's counters, taken under its lock.
type Stats struct {
	Capacity int
	// Draining is true while the manager grants nothing new.
	Draining bool
	// Active counts leases granted and not fully reclaimed, Closing the
	// part of them whose reclaim has begun.
	Active, Closing, Opening, Waiting int
	// OldestWait is how long the head of the queue has waited.
	OldestWait          time.Duration
	GrantedTotal        uint64
	Reclaimed           map[Reason]uint64
	ReclaimedTotal      uint64
	DuplicateTriggers   uint64
	AcquireFailures     uint64
	BackendLive         int
	InvariantErr        error // nil when the invariant holds
	InvariantViolations uint64
	// OrphansClosed counts sessions the auditor closed because no lease
	// owned them.
	OrphansClosed uint64
	Uptime        time.Duration
	// SessionsHeld and SessionsWarm count sticky sessions held by a lease
	// and open between leases; warm ones hold capacity until closed.
	SessionsHeld, SessionsWarm int
	// MemoryLow is true while Admit says no; MemoryDetail is its reason.
	MemoryLow    bool
	MemoryDetail string
}

// Stats returns the counters and checks the invariant.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Stats{
		Capacity:            m.cfg.Capacity,
		Draining:            m.draining,
		Active:              m.active,
		Closing:             m.closing,
		Opening:             m.opening,
		Waiting:             len(m.queue),
		GrantedTotal:        m.granted,
		Reclaimed:           make(map[Reason]uint64, numReasons),
		DuplicateTriggers:   m.duplicates,
		AcquireFailures:     m.failures,
		InvariantViolations: m.violations,
		OrphansClosed:       m.orphans,
		Uptime:              time.Since(m.start),
		SessionsWarm:        m.warm,
		MemoryLow:           m.memLow,
		MemoryDetail:        m.memDetail,
	}
	for _, n := range m.sticky {
		if n.holder != nil {
			s.SessionsHeld++
		}
	}
	if len(m.queue) > 0 {
		s.OldestWait = time.Since(m.queue[0].since)
	}
	for _, r := range Reasons() {
		s.Reclaimed[r] = m.reclaimed[r]
		s.ReclaimedTotal += m.reclaimed[r]
	}
	s.BackendLive, s.InvariantErr = m.invariantLocked()
	return s
}

// invariantLocked checks, under the lock, that the books balance:
//   - every grant is either active or reclaimed, once;
//   - the table holds exactly the active leases;
//   - capacity is not exceeded (warm sticky sessions hold capacity);
//   - the backend's live sessions are the leases' and the warm ones.
//     Sessions being opened or closed at this instant may or may not be
//     counted yet by the backend, so its count must lie in
//     [active-closing + warm-warmClosing, active+opening + warm].
func (m *Manager) invariantLocked() (live int, err error) {
	var reclaimed uint64
	for _, n := range m.reclaimed {
		reclaimed += n
	}
	live = m.backend.Live()
	var problems []string
	if m.granted != uint64(m.active)+reclaimed {
		problems = append(problems, fmt.Sprintf("granted(%d) != active(%d) + reclaimed(%d)", m.granted, m.active, reclaimed))
	}
	if len(m.leases) != m.active {
		problems = append(problems, fmt.Sprintf("lease table(%d) != active(%d)", len(m.leases), m.active))
	}
	if m.active+m.opening+m.warm > m.cfg.Capacity {
		problems = append(problems, fmt.Sprintf("active(%d) + opening(%d) + warm(%d) > capacity(%d)",
			m.active, m.opening, m.warm, m.cfg.Capacity))
	}
	if lo, hi := m.active-m.closing+m.warm-m.warmClosing, m.active+m.opening+m.warm; live < lo || live > hi {
		problems = append(problems, fmt.Sprintf("backend sessions(%d) outside [active(%d)-closing(%d)+warm(%d)-closing warm(%d), active+opening(%d)+warm]",
			live, m.active, m.closing, m.warm, m.warmClosing, m.opening))
	}
	warm := 0
	for _, n := range m.sticky {
		if n.warm != nil || n.closing != nil {
			warm++
		}
	}
	if warm != m.warm {
		problems = append(problems, fmt.Sprintf("warm sessions(%d) != warm(%d)", warm, m.warm))
	}
	if len(problems) > 0 {
		return live, fmt.Errorf("lease invariant broken: %s", strings.Join(problems, "; "))
	}
	return live, nil
}
