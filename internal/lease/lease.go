package lease

import (
	"context"
	"maps"
	"time"
)

// State is where a lease is in its life.
type State int

const (
	// StateActive: granted and usable.
	StateActive State = iota + 1
	// StateClosing: reclaim has begun; nothing more runs on the lease.
	StateClosing
)

func (s State) String() string {
	switch s {
	case StateActive:
		return "ACTIVE"
	case StateClosing:
		return "CLOSING"
	}
	return "UNKNOWN"
}

// Lease is one granted lease. Its mutable fields are guarded by the
// manager's mutex.
type Lease struct {
	id          string
	m           *Manager
	session     Session
	labels      map[string]string
	ttl         time.Duration
	jitter      time.Duration
	grantedAt   time.Time
	maxDeadline time.Time
	ctx         context.Context // cancelled when the reclaim begins
	cancel      context.CancelCauseFunc
	done        chan struct{} // closed when the reclaim is complete
	turn        chan struct{} // held by the running command
	sticky      *sticky       // the sticky session held, if any
	principal   string        // who acquired it
	generation  uint64        // its generation at this grant
	warmGrant   bool          // the session was warm at the grant

	// Guarded by m.mu.
	state        State
	reason       Reason
	message      string
	lastActivity time.Time
	idleDeadline time.Time
	inflight     int
	commands     uint64
	lastCommand  string
	timer        *time.Timer
}

// ID names the lease.
func (l *Lease) ID() string { return l.id }

// Session is the lease's session, for callers that hold the lease itself.
func (l *Lease) Session() Session { return l.session }

// SessionKey names the sticky session the lease holds; empty: none.
func (l *Lease) SessionKey() string {
	if l.sticky == nil {
		return ""
	}
	return l.sticky.key
}

// Principal is who acquired the lease.
func (l *Lease) Principal() string { return l.principal }

// Generation is the sticky session's fencing number at this grant.
func (l *Lease) Generation() uint64 { return l.generation }

// WarmSession says whether the lease got its sticky session warm.
func (l *Lease) WarmSession() bool { return l.warmGrant }

// TTL is the idle TTL in force.
func (l *Lease) TTL() time.Duration { return l.ttl }

// MaxDeadline is when the lease ends at the latest.
func (l *Lease) MaxDeadline() time.Time { return l.maxDeadline }

// Done is closed once the lease is fully reclaimed: its session closed and
// its capacity free.
func (l *Lease) Done() <-chan struct{} { return l.done }

// Reason says why the lease was reclaimed. Valid once Done is closed.
func (l *Lease) Reason() (Reason, string) {
	<-l.done
	return l.reason, l.message
}

// ExpiresAt is when the lease expires unless used or renewed.
func (l *Lease) ExpiresAt() time.Time {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	return l.expiresAtLocked()
}

// Renew resets the idle TTL; see Manager.Renew.
func (l *Lease) Renew() (time.Time, error) { return l.m.Renew(l.id) }

// Reclaim reclaims the lease; see Manager.Reclaim.
func (l *Lease) Reclaim(reason Reason, msg string) Reason { return l.m.reclaim(l, reason, msg) }

func (l *Lease) touchLocked(now time.Time) {
	l.lastActivity = now
	l.idleDeadline = now.Add(l.ttl + l.jitter)
}

func (l *Lease) expiresAtLocked() time.Time {
	if l.maxDeadline.Before(l.idleDeadline) {
		return l.maxDeadline
	}
	return l.idleDeadline
}

// onTimer runs when the lease's timer fires. Activity does not reset the
// timer (that would put a timer operation on every command); instead the
// timer checks the deadlines when it fires and re-arms itself if they moved.
// The decision and the reclaim's start happen under one lock, so a renew
// either lands before (and the lease lives on) or after (and fails).
func (l *Lease) onTimer() {
	m := l.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if l.state != StateActive {
		return
	}
	now := time.Now()
	switch {
	case !now.Before(l.maxDeadline):
		m.reclaimLocked(l, MaxLifetime, "maximum lifetime of "+l.maxDeadline.Sub(l.grantedAt).String()+" reached")
	case !now.Before(l.idleDeadline) && l.inflight == 0:
		m.reclaimLocked(l, TTLExpired, "no activity for "+now.Sub(l.lastActivity).String())
	default:
		wake := l.expiresAtLocked()
		if l.inflight > 0 && !wake.After(now) {
			// A command is running: the lease is busy, not idle.
			wake = now.Add(l.ttl)
			if l.maxDeadline.Before(wake) {
				wake = l.maxDeadline // busy or not, the lease ends then
			}
		}
		l.timer.Reset(wake.Sub(now))
	}
}

func (l *Lease) reclaimedErrLocked(inFlight bool) *ReclaimedError {
	return &ReclaimedError{ID: l.id, Reason: l.reason, Message: l.message, InFlight: inFlight}
}

// Info is a snapshot of a lease.
type Info struct {
	ID           string
	State        State
	Reason       Reason // set while closing
	Labels       map[string]string
	TTL          time.Duration
	GrantedAt    time.Time
	ExpiresAt    time.Time
	MaxExpiresAt time.Time
	LastActivity time.Time
	Commands     uint64
	// LastCommand names the last named command (see Manager.DoCommand);
	// empty: none yet.
	LastCommand string
	SessionKey  string
	Generation  uint64
	Principal   string
	// Session is the lease's session, for callers that describe it.
	Session Session
}

func (l *Lease) infoLocked() Info {
	return Info{
		ID:           l.id,
		State:        l.state,
		Reason:       l.reason,
		Labels:       maps.Clone(l.labels),
		TTL:          l.ttl,
		GrantedAt:    l.grantedAt,
		ExpiresAt:    l.expiresAtLocked(),
		MaxExpiresAt: l.maxDeadline,
		LastActivity: l.lastActivity,
		Commands:     l.commands,
		LastCommand:  l.lastCommand,
		SessionKey:   l.SessionKey(),
		Principal:    l.principal,
		Generation:   l.generation,
		Session:      l.session,
	}
}
