package dashboard

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/browserbroker/broker/internal/lease"
)

// State is what the dashboard shows, as /dashboard/api/state serves it.
// Durations are in seconds.
type State struct {
	Now       time.Time         `json:"now"`
	Draining  bool              `json:"draining"`
	Capacity  CapacityState     `json:"capacity"`
	Invariant InvariantState    `json:"invariant"`
	Leases    []LeaseState      `json:"leases"`
	Queue     []WaiterState     `json:"queue"`
	Browsers  []BrowserState    `json:"browsers"`
	Fleet     *FleetState       `json:"fleet,omitempty"`
	Reclaims  ReclaimsState     `json:"reclaims"`
	Viewer    ViewerState       `json:"viewer"`
	Uptime    float64           `json:"uptime_seconds"`
	Totals    map[string]uint64 `json:"totals"`
}

// CapacityState is the lease capacity, its use, and the warm pool.
type CapacityState struct {
	Capacity int `json:"capacity"`
	// Active leases (Closing of them being reclaimed), capacity reserved
	// for contexts being opened, and acquires waiting.
	Active  int `json:"active"`
	Closing int `json:"closing"`
	Opening int `json:"opening"`
	Waiting int `json:"waiting"`
	// OldestWait is how long the head of the queue has waited.
	OldestWait float64 `json:"oldest_wait_seconds"`
	// WarmContexts are made ahead for acquires with default options;
	// WarmHits and WarmMisses count those acquires.
	WarmContexts int    `json:"warm_contexts"`
	WarmHits     uint64 `json:"warm_hits"`
	WarmMisses   uint64 `json:"warm_misses"`
	// SessionsHeld and SessionsWarm count sticky sessions held by a lease
	// and kept open between leases.
	SessionsHeld int `json:"sessions_held"`
	SessionsWarm int `json:"sessions_warm"`
	// MemoryLow: new leases wait for memory; MemoryDetail says why.
	MemoryLow    bool   `json:"memory_low"`
	MemoryDetail string `json:"memory_detail"`
}

// InvariantState is the lease invariant in plain words.
type InvariantState struct {
	OK         bool   `json:"ok"`
	Text       string `json:"text"`
	Violations uint64 `json:"violations"`
}

// LeaseState is one row of the lease table.
type LeaseState struct {
	ID          string            `json:"id"`
	Principal   string            `json:"principal"`
	Labels      map[string]string `json:"labels"`
	SessionKey  string            `json:"session_key"`
	Age         float64           `json:"age_seconds"`
	Idle        float64           `json:"idle_seconds"`
	ExpiresIn   float64           `json:"expires_in_seconds"`
	LastCommand string            `json:"last_command"`
	Commands    uint64            `json:"commands"`
	// State is ACTIVE, or CLOSING while its reclaim runs (Reason then
	// says why).
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// WaiterState is one acquire waiting in the queue.
type WaiterState struct {
	Position int     `json:"position"`
	Waited   float64 `json:"waited_seconds"`
}

// BrowserState is one browser of the pool.
type BrowserState struct {
	Name     string  `json:"name"`
	PID      int     `json:"pid"`
	Remote   bool    `json:"remote"`
	Contexts int     `json:"contexts"`
	Created  int     `json:"created"`
	PSSBytes uint64  `json:"pss_bytes"`
	Age      float64 `json:"age_seconds"`
	Retiring string  `json:"retiring,omitempty"`
}

// FleetState is the fleet this broker is in: its members as they last
// registered.
type FleetState struct {
	BrokerID string        `json:"broker_id"`
	Members  []MemberState `json:"members"`
	// Error says why the members could not be read (Redis away).
	Error string `json:"error,omitempty"`
}

// MemberState is one broker of the fleet.
type MemberState struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Self     bool   `json:"self"`
	Capacity int    `json:"capacity"`
	Active   int    `json:"active"`
	Free     int    `json:"free"`
	Waiting  int    `json:"waiting"`
	Draining bool   `json:"draining"`
	// Heartbeat is how long ago it last registered.
	Heartbeat float64 `json:"heartbeat_age_seconds"`
}

// ReclaimsState is reclaims by reason over the last hour.
type ReclaimsState struct {
	// Reasons lists every reason, in the API's order.
	Reasons []string `json:"reasons"`
	// Minutes are the last 60 minutes, oldest first.
	Minutes []MinuteReclaims `json:"minutes"`
	// LastHour sums Minutes by reason.
	LastHour map[string]uint64 `json:"last_hour"`
}

// ViewerState says who looks.
type ViewerState struct {
	// Principal is the viewer's; empty without authentication.
	Principal string `json:"principal"`
	// Auth is true when the dashboard needs a login.
	Auth bool `json:"auth"`
}

func seconds(d time.Duration) float64 { return d.Seconds() }

// state reads the manager and the pool once.
func (h *Handler) state(viewer string) State {
	now := h.cfg.Now()
	st := h.sample()
	s := State{
		Now:      now,
		Draining: st.Draining,
		Capacity: CapacityState{
			Capacity: st.Capacity, Active: st.Active, Closing: st.Closing, Opening: st.Opening, Waiting: st.Waiting,
			OldestWait: seconds(st.OldestWait), SessionsHeld: st.SessionsHeld, SessionsWarm: st.SessionsWarm,
			MemoryLow: st.MemoryLow, MemoryDetail: st.MemoryDetail,
		},
		Invariant: invariantState(st),
		Leases:    []LeaseState{},
		Queue:     []WaiterState{},
		Browsers:  []BrowserState{},
		Viewer:    ViewerState{Principal: viewer, Auth: h.cfg.Auth != nil},
		Uptime:    seconds(st.Uptime),
		Totals: map[string]uint64{
			"granted":            st.GrantedTotal,
			"reclaimed":          st.ReclaimedTotal,
			"acquire_failures":   st.AcquireFailures,
			"duplicate_triggers": st.DuplicateTriggers,
			"orphans_closed":     st.OrphansClosed,
		},
	}
	live := make(map[string]bool)
	for _, l := range h.leases.List(lease.Filter{}) {
		live[l.ID] = true
		ls := LeaseState{
			ID: l.ID, Principal: l.Principal, Labels: maps.Clone(l.Labels), SessionKey: l.SessionKey,
			Age: seconds(now.Sub(l.GrantedAt)), Idle: seconds(now.Sub(l.LastActivity)),
			ExpiresIn: seconds(l.ExpiresAt.Sub(now)), LastCommand: l.LastCommand, Commands: l.Commands,
			State: l.State.String(),
		}
		if ls.Labels == nil {
			ls.Labels = map[string]string{}
		}
		if l.State == lease.StateClosing {
			ls.Reason = l.Reason.String()
		}
		s.Leases = append(s.Leases, ls)
	}
	h.thumbs.keep(live)
	for i, w := range h.leases.QueueWaits() {
		s.Queue = append(s.Queue, WaiterState{Position: i + 1, Waited: seconds(w)})
	}
	if h.cfg.Browsers != nil {
		bs := h.cfg.Browsers.Stats()
		s.Capacity.WarmContexts, s.Capacity.WarmHits, s.Capacity.WarmMisses = bs.Warm, bs.WarmHits, bs.WarmMisses
		s.Totals["browser_launches"] = bs.Launches
		s.Totals["browser_crashes"] = bs.BrowserCrashes
		s.Totals["page_crashes"] = bs.PageCrashes
		s.Totals["driver_crashes"] = bs.DriverCrashes
		for _, b := range h.cfg.Browsers.Browsers() {
			s.Browsers = append(s.Browsers, BrowserState{Name: b.Name, PID: b.PID, Remote: b.Remote,
				Contexts: b.Contexts, Created: b.Created, PSSBytes: b.PSSBytes, Age: seconds(b.Age), Retiring: b.Retiring})
		}
	}
	if h.cfg.Fleet != nil {
		s.Fleet = h.fleetState(now)
	}
	s.Reclaims = ReclaimsState{Minutes: h.reclaims.series(now), LastHour: map[string]uint64{}}
	for _, r := range lease.Reasons() {
		s.Reclaims.Reasons = append(s.Reclaims.Reasons, r.String())
	}
	for _, m := range s.Reclaims.Minutes {
		for r, n := range m.Counts {
			s.Reclaims.LastHour[r] += n
		}
	}
	return s
}

// invariantState says in words whether the books balance.
func invariantState(st lease.Stats) InvariantState {
	if st.InvariantErr != nil {
		return InvariantState{Violations: st.InvariantViolations,
			Text: fmt.Sprintf("Broken: %v. The broker's books do not balance; see the log (LEASE INVARIANT BROKEN).", st.InvariantErr)}
	}
	text := fmt.Sprintf("Holding: every one of the %d leases granted is active or was reclaimed exactly once (%d active, %d reclaimed), "+
		"capacity is not exceeded, and the %d open browser contexts match the leases and warm sessions.",
		st.GrantedTotal, st.Active, st.ReclaimedTotal, st.BackendLive)
	if st.InvariantViolations > 0 {
		text += fmt.Sprintf(" It was found broken %d times since the broker started.", st.InvariantViolations)
	}
	return InvariantState{OK: true, Text: text, Violations: st.InvariantViolations}
}

// fleetState reads the fleet's members, from Redis at most once per
// Interval whatever the number of viewers.
func (h *Handler) fleetState(now time.Time) *FleetState {
	fs := &FleetState{BrokerID: h.cfg.Fleet.ID(), Members: []MemberState{}}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Interval)
	defer cancel()
	ms, err := h.cfg.Fleet.MembersWithin(ctx, h.cfg.Interval)
	if err != nil {
		fs.Error = err.Error()
		return fs
	}
	for _, m := range ms {
		fs.Members = append(fs.Members, MemberState{ID: m.ID, Address: m.Address, Self: m.ID == fs.BrokerID,
			Capacity: m.Load.Capacity, Active: m.Load.Active, Free: m.Load.Free, Waiting: m.Load.Waiting,
			Draining: m.Load.Draining, Heartbeat: seconds(now.Sub(m.At))})
	}
	return fs
}
