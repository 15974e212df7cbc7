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

// List describes the live leases that carry every label in the filter,
// oldest first.
func (m *Manager) List(labels map[string]string) []Info {
	m.mu.Lock()
	out := make([]Info, 0, len(m.leases))
	for _, l := range m.leases {
		if hasLabels(l.labels, labels) {
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
//   - capacity is not exceeded;
//   - the backend's live sessions are the leases' sessions. Sessions being
//     opened or closed at this instant may or may not be counted yet by the
//     backend, so its count must lie in [active-closing, active+opening].
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
	if m.active+m.opening > m.cfg.Capacity {
		problems = append(problems, fmt.Sprintf("active(%d) + opening(%d) > capacity(%d)", m.active, m.opening, m.cfg.Capacity))
	}
	if live < m.active-m.closing || live > m.active+m.opening {
		problems = append(problems, fmt.Sprintf("backend sessions(%d) outside [active(%d)-closing(%d), active+opening(%d)]",
			live, m.active, m.closing, m.opening))
	}
	if len(problems) > 0 {
		return live, fmt.Errorf("lease invariant broken: %s", strings.Join(problems, "; "))
	}
	return live, nil
}
