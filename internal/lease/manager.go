package lease

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"runtime"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Session is what the backend opens for one lease: a browser context and
// its page. The manager closes it exactly once, when the lease is reclaimed.
type Session interface {
	// Close releases the session. The context carries the close deadline;
	// Close must return by then.
	Close(ctx context.Context) error
	// Lost is closed when the session died under the lease (its browser or
	// page crashed). LostReason then says why.
	Lost() <-chan struct{}
	// LostReason is the reclaim reason and message for a lost session.
	LostReason() (Reason, string)
}

// Backend opens sessions.
type Backend interface {
	// Open creates a fresh, isolated session from an opaque spec (the
	// browser context options). Cancelling ctx abandons the open.
	Open(ctx context.Context, spec any) (Session, error)
	// Live counts the sessions opened and not yet closed; the manager checks
	// its lease table against it.
	Live() int
}

// Config configures a Manager. Zero values mean the defaults.
type Config struct {
	// Capacity is the most leases held (or being opened) at once.
	// Default: 4 per CPU.
	Capacity int
	// MaxQueue is the most acquires waiting at once; beyond it acquires
	// fail at once with ErrQueueFull. Default 1000.
	MaxQueue int
	// DefaultTTL is the idle TTL of an acquire that names none. Default 60s.
	DefaultTTL time.Duration
	// MaxTTL bounds a requested idle TTL. Default 1h.
	MaxTTL time.Duration
	// DefaultWait is how long an acquire that names no wait timeout waits
	// for capacity. Default 30s.
	DefaultWait time.Duration
	// MaxWait bounds a requested wait timeout. Default 10m.
	MaxWait time.Duration
	// MaxLifetime bounds the whole life of a lease. Default 1h.
	MaxLifetime time.Duration
	// Jitter is the fraction of the TTL added at random to each lease's
	// idle expiry, so leases granted together do not expire together.
	// Default 0.1; negative: none.
	Jitter float64
	// OpenTimeout bounds the backend's Open. Default 60s.
	OpenTimeout time.Duration
	// CloseTimeout bounds the backend's Close on reclaim. Default 10s.
	CloseTimeout time.Duration
	// CheckInterval is how often the invariant is checked. Default 10s;
	// negative: never.
	CheckInterval time.Duration
	// Tombstones is how many reclaimed leases are remembered, so a late
	// call names the reason instead of "not found". Default 10000.
	Tombstones int
	// SessionIdleTTL is how long a sticky session stays open after its
	// lease ends, for the next lease of its key. Default 5m; negative:
	// sessions are saved and closed when their lease ends.
	SessionIdleTTL time.Duration
	// Sessions keeps sticky sessions' generations (and whatever the
	// backend's Saver sessions save). Default: generations in memory only.
	Sessions SessionStore
	// Admit, when set, is asked every AdmitInterval whether new sessions
	// may be opened (say, whether memory is left). While it says no,
	// acquires that need a new session wait in the queue; detail says why.
	Admit func() (ok bool, detail string)
	// AdmitInterval is how often Admit is asked. Default 1s.
	AdmitInterval time.Duration
	// PrincipalLimit, when set, is the most leases a principal may hold
	// (or be opening) at once; beyond it acquires fail at once with
	// ErrLimit. 0: no limit for that principal.
	PrincipalLimit func(principal string) int
	// PrincipalElsewhere, when set, is how many leases a principal holds
	// elsewhere (on the other brokers of a fleet); they count toward its
	// PrincipalLimit beside its leases here.
	PrincipalElsewhere func(principal string) int
	// OnChange, when set, is called after what Free and Stats report of
	// the load changes: a lease granted or fully reclaimed, a warm session
	// closed, draining turned on or off, admission changed. It is called
	// without the manager's lock held, and must not block (a fleet's
	// registration nudge).
	OnChange func()
	// IDPrefix begins every lease id, before a random text. Default "l_";
	// a fleet's brokers put their own id in it, so an id names its owner.
	IDPrefix string
	// Logger; nil: no logs.
	Logger *zap.Logger
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Capacity <= 0 {
		c.Capacity = 4 * runtime.NumCPU()
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = 1000
	}
	def(&c.DefaultTTL, time.Minute)
	def(&c.MaxTTL, time.Hour)
	def(&c.DefaultWait, 30*time.Second)
	def(&c.MaxWait, 10*time.Minute)
	def(&c.MaxLifetime, time.Hour)
	def(&c.OpenTimeout, time.Minute)
	def(&c.CloseTimeout, 10*time.Second)
	def(&c.CheckInterval, 10*time.Second)
	if c.Jitter == 0 {
		c.Jitter = 0.1
	}
	def(&c.SessionIdleTTL, 5*time.Minute)
	def(&c.AdmitInterval, time.Second)
	if c.Sessions == nil {
		c.Sessions = &memStore{}
	}
	if c.Tombstones <= 0 {
		c.Tombstones = 10000
	}
	if c.IDPrefix == "" {
		c.IDPrefix = "l_"
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// Manager owns the leases: their table, the capacity counter and the wait
// queue, all under one mutex, and the one reclaim path.
type Manager struct {
	cfg     Config
	backend Backend
	store   SessionStore
	log     *zap.Logger
	start   time.Time

	mu          sync.Mutex
	closed      bool
	draining    bool
	leases      map[string]*Lease
	queue       []*waiter
	active      int // leases in the table: granted and not yet fully reclaimed
	closing     int // of which reclaim has begun
	opening     int // capacity reserved for sessions being opened
	warm        int // sticky sessions open between leases (sticky.go)
	warmClosing int // of which being closed
	sticky      map[string]*sticky
	byPrincipal map[string]int // leases held or being acquired, per principal
	memLow      bool           // Admit said no at its last call
	memDetail   string         // and why
	granted     uint64
	reclaimed   [numReasons]uint64
	duplicates  uint64
	failures    uint64
	violations  uint64
	orphans     uint64
	tombs       map[string]tomb
	tombOrder   []string
	tombNext    int
	opens       sync.WaitGroup // acquires between reserving capacity and registering
	reclaims    sync.WaitGroup // finishReclaim goroutines, until Done is closed and logged
	stopCheck   chan struct{}
	checkerDone chan struct{}
	admitDone   chan struct{}
}

type tomb struct {
	reason    Reason
	message   string
	principal string
}

// waiter is an acquire in the queue.
type waiter struct {
	ready   chan struct{} // closed once granted or failed
	granted bool          // set under m.mu before ready is closed
	err     error         // set under m.mu before ready is closed
	pos     chan int      // latest queue position, buffer of one
	since   time.Time
}

// New starts a Manager over the backend. Close stops it.
func New(backend Backend, cfg Config) *Manager {
	cfg = cfg.withDefaults()
	m := &Manager{
		cfg:         cfg,
		backend:     backend,
		store:       cfg.Sessions,
		log:         cfg.Logger,
		start:       time.Now(),
		leases:      make(map[string]*Lease),
		sticky:      make(map[string]*sticky),
		byPrincipal: make(map[string]int),
		tombs:       make(map[string]tomb),
		stopCheck:   make(chan struct{}),
		checkerDone: make(chan struct{}),
		admitDone:   make(chan struct{}),
	}
	go m.checkLoop()
	if cfg.Admit != nil {
		m.memLow, m.memDetail = m.askAdmit()
		go m.admitLoop()
	} else {
		close(m.admitDone)
	}
	return m
}

func (m *Manager) askAdmit() (low bool, detail string) {
	ok, detail := m.cfg.Admit()
	return !ok, detail
}

// admitLoop asks Admit every AdmitInterval and lets waiters in when it
// says yes again.
func (m *Manager) admitLoop() {
	defer close(m.admitDone)
	t := time.NewTicker(m.cfg.AdmitInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-m.stopCheck:
			return
		}
		low, detail := m.askAdmit()
		m.mu.Lock()
		changed := low != m.memLow
		m.memLow, m.memDetail = low, detail
		if changed {
			m.log.Warn("admission changed", zap.Bool("new_sessions_wait", low), zap.String("detail", detail),
				zap.Int("waiting", len(m.queue)))
		}
		m.dispatchLocked()
		m.mu.Unlock()
		if changed {
			m.changed()
		}
	}
}

// Capacity is the configured capacity.
func (m *Manager) Capacity() int { return m.cfg.Capacity }

// AcquireRequest describes a wanted lease. Zero durations mean the defaults.
type AcquireRequest struct {
	TTL         time.Duration
	Wait        time.Duration
	MaxLifetime time.Duration
	Labels      map[string]string
	// SessionKey names a sticky session (see sticky.go); empty: none.
	SessionKey string
	// Principal is who asks: the lease is theirs (see Owner), and counts
	// toward their PrincipalLimit. Empty: anonymous, no limit.
	Principal string
	// Spec is passed to Backend.Open as it is.
	Spec any
	// Withdraw, when closed, takes the acquire out of the queue if it is
	// still waiting there: Acquire returns ErrWithdrawn. Once the acquire
	// has its unit of capacity, Withdraw is no longer heard. Nil: never.
	Withdraw <-chan struct{}
}

// WaitTimeout is how long an acquire that asks to wait asked (0: the
// default) may wait in the queue, within the bounds of Config.
func (m *Manager) WaitTimeout(asked time.Duration) time.Duration {
	if asked <= 0 {
		return m.cfg.DefaultWait
	}
	return min(asked, m.cfg.MaxWait)
}

func (m *Manager) normalize(req AcquireRequest) (AcquireRequest, error) {
	bound := func(name string, d *time.Duration, def, max time.Duration) error {
		switch {
		case *d < 0:
			return fmt.Errorf("%w: %s %v is negative", ErrInvalid, name, *d)
		case *d == 0:
			*d = def
		case *d > max:
			return fmt.Errorf("%w: %s %v is over the broker's maximum %v", ErrInvalid, name, *d, max)
		}
		return nil
	}
	if err := bound("ttl", &req.TTL, m.cfg.DefaultTTL, m.cfg.MaxTTL); err != nil {
		return req, err
	}
	if err := bound("wait_timeout", &req.Wait, m.cfg.DefaultWait, m.cfg.MaxWait); err != nil {
		return req, err
	}
	if req.MaxLifetime < 0 {
		return req, fmt.Errorf("%w: max_lifetime %v is negative", ErrInvalid, req.MaxLifetime)
	}
	if req.MaxLifetime == 0 || req.MaxLifetime > m.cfg.MaxLifetime {
		req.MaxLifetime = m.cfg.MaxLifetime
	}
	if err := checkSessionKey(req.SessionKey); err != nil {
		return req, err
	}
	return req, nil
}

// Acquire waits for capacity (FIFO, at most req.Wait), opens a session and
// returns the granted lease. onQueued, if not nil, is called from Acquire's
// goroutine with the queue position (1 = next) whenever it changes. When ctx
// ends first the acquire leaves the queue at once and returns ctx's error.
func (m *Manager) Acquire(ctx context.Context, req AcquireRequest, onQueued func(position int)) (*Lease, error) {
	req, err := m.normalize(req)
	if err != nil {
		return nil, err
	}
	if err := m.countPrincipal(req.Principal); err != nil {
		return nil, err
	}
	l, err := m.acquire(ctx, req, onQueued)
	if l == nil {
		// No lease took over the count (a lease gives it back when
		// reclaimed).
		m.mu.Lock()
		m.uncountPrincipalLocked(req.Principal)
		m.mu.Unlock()
	}
	if err != nil {
		return nil, err
	}
	return l, nil
}

// acquire is Acquire after the checks. It returns the lease it registered,
// with an error if that lease was reclaimed before the grant.
func (m *Manager) acquire(ctx context.Context, req AcquireRequest, onQueued func(position int)) (_ *Lease, err error) {
	started := time.Now()
	deadline := started.Add(req.Wait)
	var n *sticky
	if req.SessionKey != "" {
		timer := time.NewTimer(req.Wait)
		n, err = m.lockKey(ctx, req.SessionKey, timer.C, onQueued)
		timer.Stop()
		if err != nil {
			return nil, err
		}
		// The key is ours until the lease holds it, or we fail.
	}
	session, warm, err := m.obtain(ctx, n, req.Spec, time.Until(deadline), req.Withdraw, onQueued)
	if err != nil {
		if n != nil {
			m.mu.Lock()
			m.unlockKeyLocked(n)
			m.mu.Unlock()
		}
		return nil, err
	}
	defer m.opens.Done()
	var gen uint64
	var genErr error
	if n != nil {
		// Durably, before anyone sees the grant: a fencing number must
		// never be handed out twice.
		gen, genErr = m.store.NextGeneration(n.key)
	}
	l := m.register(session, req, n, gen, warm)
	fields := []zap.Field{zap.String("lease_id", l.id), zap.Duration("open", time.Since(started)),
		zap.Duration("ttl", req.TTL), zap.Any("labels", req.Labels)}
	if n != nil {
		fields = append(fields, zap.String("session_key", n.key), zap.Uint64("generation", gen), zap.Bool("warm", warm))
	}
	m.log.Info("lease granted", fields...)

	// A lease granted to a caller that went away, or while the manager
	// closed, is reclaimed through the one path like any other.
	m.mu.Lock()
	switch {
	case m.closed:
		m.reclaimLocked(l, Shutdown, "broker shutting down")
		err = ErrShuttingDown
	case ctx.Err() != nil:
		m.reclaimLocked(l, StreamClosed, "acquirer went away before the grant")
		err = context.Cause(ctx)
	case genErr != nil:
		err = fmt.Errorf("%w: recording the session's generation: %w", ErrBackend, genErr)
		m.reclaimLocked(l, Revoked, err.Error())
	case n != nil && n.deleting > 0:
		m.reclaimLocked(l, Revoked, "session deleted")
		err = fmt.Errorf("%w: session %q was deleted", ErrNotFound, n.key)
	}
	m.mu.Unlock()
	if err != nil {
		<-l.done
		return l, err
	}
	go m.watchSession(l)
	return l, nil
}

// obtain gets the session for a new lease: the key's warm session, or a
// new one from the backend once there is capacity. On success the caller
// owns one m.opening unit and one m.opens count.
func (m *Manager) obtain(ctx context.Context, n *sticky, spec any, wait time.Duration, withdraw <-chan struct{}, onQueued func(int)) (s Session, warm bool, err error) {
	if n != nil {
		m.mu.Lock()
		if s = m.takeWarmLocked(n); s != nil {
			m.warm--
			m.opening++
			m.opens.Add(1)
		}
		m.mu.Unlock()
		if s != nil {
			return s, true, nil
		}
	}
	if err := m.reserve(ctx, wait, withdraw, onQueued); err != nil {
		return nil, false, err
	}
	openCtx, cancel := context.WithTimeout(ctx, m.cfg.OpenTimeout)
	s, err = m.backend.Open(openCtx, spec)
	cancel()
	if err != nil {
		m.mu.Lock()
		m.opening--
		m.failures++
		m.dispatchLocked()
		m.mu.Unlock()
		m.opens.Done()
		if ctx.Err() != nil {
			return nil, false, context.Cause(ctx)
		}
		return nil, false, fmt.Errorf("%w: %w", ErrBackend, err)
	}
	return s, false, nil
}

// countPrincipal counts an acquire toward its principal's limit, or
// refuses it. The count ends when the acquire fails or its lease is
// reclaimed.
func (m *Manager) countPrincipal(p string) error {
	if p == "" {
		return nil
	}
	limit, elsewhere := 0, 0
	if m.cfg.PrincipalLimit != nil {
		limit = m.cfg.PrincipalLimit(p)
	}
	if limit > 0 && m.cfg.PrincipalElsewhere != nil {
		elsewhere = m.cfg.PrincipalElsewhere(p) // outside the lock: it may read the network's view
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.byPrincipal[p]; limit > 0 && n+elsewhere >= limit {
		m.failures++
		if elsewhere > 0 {
			return fmt.Errorf("%w: principal %q holds or is acquiring %d leases here and %d on other brokers of the fleet (its limit of live leases is %d)",
				ErrLimit, p, n, elsewhere, limit)
		}
		return fmt.Errorf("%w: principal %q holds or is acquiring %d leases (its limit of live leases is %d)", ErrLimit, p, n, limit)
	}
	m.byPrincipal[p]++
	return nil
}

// Load is what the manager tells others of its load (a fleet's
// registration): one snapshot under the lock, without the counters and
// the invariant check that Stats adds.
type Load struct {
	Capacity, Active, Waiting int
	// Free is as Manager.Free says.
	Free     int
	Draining bool
	// Principals is how many leases each principal holds or is acquiring
	// here (anonymous ones not counted): what a fleet's other brokers
	// count toward its limit.
	Principals map[string]int
}

// Load returns the manager's load now.
func (m *Manager) Load() Load {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Load{Capacity: m.cfg.Capacity, Active: m.active, Waiting: len(m.queue), Free: m.freeNowLocked(),
		Draining: m.draining, Principals: maps.Clone(m.byPrincipal)}
}

func (m *Manager) uncountPrincipalLocked(p string) {
	if p == "" {
		return
	}
	if m.byPrincipal[p]--; m.byPrincipal[p] <= 0 {
		delete(m.byPrincipal, p)
	}
}

// refuseLocked says why no acquire may begin, if so.
func (m *Manager) refuseLocked() error {
	switch {
	case m.closed:
		return ErrShuttingDown
	case m.draining:
		return ErrDraining
	}
	return nil
}

// roomLocked is how many new sessions may be opened now: the capacity
// left after the leases held or opening and the sticky sessions kept
// warm; none while memory is low.
func (m *Manager) roomLocked() int {
	if m.memLow {
		return 0
	}
	return max(0, m.cfg.Capacity-m.active-m.opening-m.warm)
}

// freeLocked says whether a new session may be opened now.
func (m *Manager) freeLocked() bool { return m.roomLocked() > 0 }

// Free is how many acquires the manager could grant now without queueing:
// the room left after the acquires already waiting; none while it drains
// or is closed. It is cheap (a fleet asks it on acquires).
func (m *Manager) Free() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.freeNowLocked()
}

func (m *Manager) freeNowLocked() int {
	if m.closed || m.draining {
		return 0
	}
	return max(0, m.roomLocked()-len(m.queue))
}

// reserve takes a unit of capacity for the caller, waiting FIFO in the
// queue when there is none, until the wait passes, ctx ends or withdraw is
// closed. On success the caller owns one m.opening unit and one m.opens
// count.
func (m *Manager) reserve(ctx context.Context, wait time.Duration, withdraw <-chan struct{}, onQueued func(int)) error {
	m.mu.Lock()
	if err := m.refuseLocked(); err != nil {
		m.mu.Unlock()
		return err
	}
	if len(m.queue) == 0 && m.freeLocked() {
		m.opening++
		m.opens.Add(1)
		m.mu.Unlock()
		return nil
	}
	if len(m.queue) >= m.cfg.MaxQueue {
		n := len(m.queue)
		m.failures++
		m.mu.Unlock()
		return fmt.Errorf("%w: %d acquires waiting (limit %d)", ErrQueueFull, n, m.cfg.MaxQueue)
	}
	w := &waiter{ready: make(chan struct{}), pos: make(chan int, 1), since: time.Now()}
	m.queue = append(m.queue, w)
	w.pos <- len(m.queue)
	m.evictLocked()
	m.mu.Unlock()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	var err error
	failed := false
	for {
		select {
		case <-w.ready:
			return w.err
		case p := <-w.pos:
			if onQueued != nil {
				onQueued(p)
			}
			continue
		case <-ctx.Done():
			err = context.Cause(ctx) // the caller gave up: not a failure of ours
		case <-withdraw:
			err = ErrWithdrawn
		case <-timer.C:
			m.mu.Lock()
			if m.memLow {
				err = fmt.Errorf("%w (waited %v; memory is low: %s)", ErrNoCapacity, wait, m.memDetail)
			} else {
				err = fmt.Errorf("%w (waited %v)", ErrNoCapacity, wait)
			}
			m.mu.Unlock()
			failed = true
		}
		break
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if w.granted {
		// Granted in the same instant: hand the unit on.
		m.opening--
		m.opens.Done()
		m.dispatchLocked()
	} else {
		m.removeWaiterLocked(w)
	}
	if failed {
		m.failures++
	}
	return err
}

// dispatchLocked hands free capacity to the waiters at the head of the
// queue, then tells the rest their new positions.
func (m *Manager) dispatchLocked() {
	moved := false
	for len(m.queue) > 0 && m.freeLocked() && !m.closed {
		w := m.queue[0]
		m.queue[0] = nil
		m.queue = m.queue[1:]
		m.opening++
		m.opens.Add(1)
		w.granted = true
		close(w.ready)
		moved = true
	}
	if moved {
		m.notifyPositionsLocked(0)
	}
	m.evictLocked()
}

func (m *Manager) removeWaiterLocked(w *waiter) {
	for i, q := range m.queue {
		if q == w {
			m.queue = append(m.queue[:i], m.queue[i+1:]...)
			m.notifyPositionsLocked(i)
			return
		}
	}
}

// notifyPositionsLocked tells every waiter from index i on its position.
func (m *Manager) notifyPositionsLocked(from int) {
	for i := from; i < len(m.queue); i++ {
		w := m.queue[i]
		select {
		case <-w.pos:
		default:
		}
		w.pos <- i + 1
	}
}

// register turns the caller's opening unit into a lease in the table.
func (m *Manager) register(s Session, req AcquireRequest, n *sticky, gen uint64, warm bool) *Lease {
	now := time.Now()
	ctx, cancel := context.WithCancelCause(context.Background())
	l := &Lease{
		id:          m.cfg.IDPrefix + rand.Text(),
		m:           m,
		session:     s,
		labels:      req.Labels,
		ttl:         req.TTL,
		grantedAt:   now,
		maxDeadline: now.Add(req.MaxLifetime),
		ctx:         ctx,
		cancel:      cancel,
		done:        make(chan struct{}),
		turn:        make(chan struct{}, 1),
		state:       StateActive,
		sticky:      n,
		principal:   req.Principal,
		generation:  gen,
		warmGrant:   warm,
	}
	if m.cfg.Jitter > 0 {
		if j := int64(float64(req.TTL) * m.cfg.Jitter); j > 0 {
			l.jitter = time.Duration(mrand.Int64N(j))
		}
	}
	m.mu.Lock()
	m.opening--
	m.active++
	m.granted++
	m.leases[l.id] = l
	if n != nil {
		n.holder = l
		n.gen = gen
	}
	l.touchLocked(now)
	l.timer = time.AfterFunc(l.expiresAtLocked().Sub(now), l.onTimer)
	m.mu.Unlock()
	m.changed()
	return l
}

// changed tells Config.OnChange that the load changed.
func (m *Manager) changed() {
	if m.cfg.OnChange != nil {
		m.cfg.OnChange()
	}
}

// watchSession reclaims the lease when its session is lost.
func (m *Manager) watchSession(l *Lease) {
	select {
	case <-l.session.Lost():
		reason, msg := l.session.LostReason()
		if reason == ReasonUnspecified {
			reason = BrowserCrashed
		}
		m.reclaim(l, reason, msg)
	case <-l.ctx.Done():
	}
}

// reclaim is the entry of every trigger: the first one reclaims, later ones
// are counted and absorbed. It returns once the lease is fully reclaimed,
// with the reason it was reclaimed for.
func (m *Manager) reclaim(l *Lease, reason Reason, msg string) Reason {
	m.mu.Lock()
	m.reclaimLocked(l, reason, msg)
	m.mu.Unlock()
	<-l.done
	return l.reason // written before done was closed
}

// reclaimLocked begins the reclaim of l if none has begun; the rest runs in
// its own goroutine so that no caller holds m.mu across backend I/O.
// Callers wait on l.done.
func (m *Manager) reclaimLocked(l *Lease, reason Reason, msg string) {
	if l.state != StateActive {
		if injectBrokenReclaim { // test of the test; compiled out unless -tags leasefault
			l.session.Close(context.Background()) // the seed bug: a late trigger cleans up again
		}
		m.duplicates++
		m.log.Debug("duplicate reclaim trigger absorbed", zap.String("lease_id", l.id),
			zap.Stringer("trigger", reason), zap.Stringer("reason", l.reason))
		return
	}
	l.state = StateClosing
	l.reason, l.message = reason, msg
	m.closing++
	l.timer.Stop()
	// Cancel under the lock: no command can begin after this point, and
	// running ones see the cause.
	l.cancel(&ReclaimedError{ID: l.id, Reason: reason, Message: msg, InFlight: true})
	m.reclaims.Add(1)
	go m.finishReclaim(l)
}

// finishReclaim closes the session, or keeps a sticky one warm, and frees
// the capacity: once per lease.
func (m *Manager) finishReclaim(l *Lease) {
	defer m.reclaims.Done()
	started := time.Now()
	n := l.sticky
	save, keep := false, false
	if n != nil {
		m.mu.Lock()
		save = n.deleting == 0 && keepable(l)
		keep = save && !m.closed && m.cfg.SessionIdleTTL > 0
		m.mu.Unlock()
	}
	var err error
	if save {
		if err = m.save(l.session); err != nil {
			keep = false // a warm session must be one whose state is saved
		}
	}
	if !keep {
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CloseTimeout)
		err = errors.Join(err, l.session.Close(ctx))
		cancel()
	}
	closeTook := time.Since(started)

	m.mu.Lock()
	delete(m.leases, l.id)
	m.active--
	m.closing--
	m.reclaimed[l.reason]++
	m.addTombLocked(l.id, tomb{reason: l.reason, message: l.message, principal: l.principal})
	m.uncountPrincipalLocked(l.principal)
	if n != nil {
		n.holder = nil
		if keep {
			m.parkLocked(n, l.session) // the lease's unit of capacity stays with it
		}
		m.unlockKeyLocked(n)
		if keep && (m.closed || n.deleting > 0) {
			// Shut down or deleted while we saved: close it after all.
			m.closeWarmLocked(n, l.session, n.deleting == 0, "closed while its lease ended")
		}
	}
	m.dispatchLocked()
	m.mu.Unlock()
	close(l.done)
	m.changed()

	fields := []zap.Field{zap.String("lease_id", l.id), zap.Stringer("reason", l.reason),
		zap.Duration("held", started.Sub(l.grantedAt)), zap.Duration("close", closeTook)}
	if l.message != "" {
		fields = append(fields, zap.String("message", l.message))
	}
	if err != nil {
		m.log.Warn("lease reclaimed; closing its session failed", append(fields, zap.Error(err))...)
		return
	}
	m.log.Info("lease reclaimed", fields...)
}

func (m *Manager) addTombLocked(id string, t tomb) {
	if len(m.tombOrder) < m.cfg.Tombstones {
		m.tombOrder = append(m.tombOrder, id)
	} else {
		delete(m.tombs, m.tombOrder[m.tombNext])
		m.tombOrder[m.tombNext] = id
		m.tombNext = (m.tombNext + 1) % len(m.tombOrder)
	}
	m.tombs[id] = t
}

// lookupLocked finds a lease by id, or explains why there is none.
func (m *Manager) lookupLocked(id string) (*Lease, error) {
	return m.lookupAsLocked(anyPrincipal, id)
}

// anyPrincipal stands for a caller that may see every lease.
const anyPrincipal = "\x00any"

// lookupAsLocked is lookupLocked for a principal: another principal's lease
// is not found, exactly as one that never existed.
func (m *Manager) lookupAsLocked(principal, id string) (*Lease, error) {
	if l, ok := m.leases[id]; ok && (principal == anyPrincipal || principal == l.principal) {
		return l, nil
	}
	if t, ok := m.tombs[id]; ok && (principal == anyPrincipal || principal == t.principal) {
		return nil, &ReclaimedError{ID: id, Reason: t.reason, Message: t.message}
	}
	return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
}

// Lookup returns the live lease with that id.
func (m *Manager) Lookup(id string) (*Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lookupLocked(id)
}

// Reclaim reclaims the lease with that id for the reason, and returns once
// it is fully reclaimed, with the reason it ended for (the first trigger's).
func (m *Manager) Reclaim(id string, reason Reason, msg string) (Reason, error) {
	l, err := m.Lookup(id)
	if err != nil {
		return ReasonUnspecified, err
	}
	return m.reclaim(l, reason, msg), nil
}

// Renew resets the idle TTL of the lease and returns its new expiry.
func (m *Manager) Renew(id string) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, err := m.lookupLocked(id)
	if err != nil {
		return time.Time{}, err
	}
	if l.state != StateActive {
		return time.Time{}, l.reclaimedErrLocked(false)
	}
	l.touchLocked(time.Now())
	return l.expiresAtLocked(), nil
}

// Do runs fn on the lease's session, after the commands that arrived before
// it. fn's context ends when ctx ends or when the lease is reclaimed; in the
// latter case Do returns a *ReclaimedError with InFlight set. The command
// counts as activity when it arrives and when it ends. Do checks no
// ownership: the server uses DoCommand.
func (m *Manager) Do(ctx context.Context, id string, fn func(ctx context.Context, s Session) error) error {
	return m.DoCommand(ctx, anyPrincipal, id, "", fn)
}

// DoCommand is Do for a principal and a named command: only the principal
// that acquired the lease may use it (for any other the lease is not
// found), and the name (such as "Navigate") is kept as the lease's last
// command (Info.LastCommand); empty: not named.
func (m *Manager) DoCommand(ctx context.Context, principal, id, command string, fn func(ctx context.Context, s Session) error) error {
	m.mu.Lock()
	l, err := m.activeLocked(principal, id)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	l.inflight++
	l.commands++
	if command != "" {
		l.lastCommand = command
	}
	l.touchLocked(time.Now())
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		l.inflight--
		if l.state == StateActive {
			l.touchLocked(time.Now())
		}
		m.mu.Unlock()
	}()
	return l.inTurn(ctx, fn)
}

// Inspect runs fn on the lease's session in its turn, after the commands
// that arrived before it, like Do, but as an onlooker (an operator's
// thumbnail): it is not the holder's activity, so it neither extends the
// idle TTL nor counts as a command, nor keeps the lease from expiring
// while it runs. fn must not change the session. Any principal's lease.
func (m *Manager) Inspect(ctx context.Context, id string, fn func(ctx context.Context, s Session) error) error {
	m.mu.Lock()
	l, err := m.activeLocked(anyPrincipal, id)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	return l.inTurn(ctx, fn)
}

// activeLocked looks the principal's lease up for a command: an error if
// it is unknown, or if its reclaim has begun.
func (m *Manager) activeLocked(principal, id string) (*Lease, error) {
	l, err := m.lookupAsLocked(principal, id)
	if err == nil && l.state != StateActive {
		err = l.reclaimedErrLocked(false)
	}
	return l, err
}

// inTurn waits for the lease's turn, then runs fn with a context that ends
// when ctx ends or the lease is reclaimed.
func (l *Lease) inTurn(ctx context.Context, fn func(ctx context.Context, s Session) error) error {
	// Wait for our turn. Channel senders are served in arrival order.
	select {
	case l.turn <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-l.ctx.Done():
		return context.Cause(l.ctx)
	}
	defer func() { <-l.turn }()

	cctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(l.ctx, func() { cancel(context.Cause(l.ctx)) })
	defer func() {
		stop()
		cancel(nil)
	}()
	// The reclaim may have begun while we waited: select picks at random
	// when the turn and l.ctx.Done() are both ready, and AfterFunc cancels
	// cctx from another goroutine, so cctx may not show it yet.
	if l.ctx.Err() != nil {
		return context.Cause(l.ctx)
	}
	if err := cctx.Err(); err != nil {
		return context.Cause(cctx)
	}
	err := fn(cctx, l.session)
	if l.ctx.Err() != nil {
		return context.Cause(l.ctx)
	}
	return err
}

// QueueWaits says how long each acquire waiting in the queue has waited,
// the head of the queue first.
func (m *Manager) QueueWaits() []time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	out := make([]time.Duration, len(m.queue))
	for i, w := range m.queue {
		out[i] = now.Sub(w.since)
	}
	return out
}

// Drain stops (true) or resumes (false) granting leases. While draining,
// acquires fail at once with ErrDraining, those waiting in the queue leave
// it with ErrDraining, and live leases go on until they end.
func (m *Manager) Drain(on bool) {
	m.mu.Lock()
	if on == m.draining {
		m.mu.Unlock()
		return
	}
	m.draining = on
	m.log.Info("draining", zap.Bool("on", on), zap.Int("active", m.active), zap.Int("waiting", len(m.queue)))
	if on {
		for _, w := range m.queue {
			w.err = ErrDraining
			close(w.ready)
		}
		m.queue = nil
		m.failKeyWaitersLocked(ErrDraining)
	}
	m.mu.Unlock()
	m.changed()
}

// Close shuts the manager down: new acquires fail with ErrShuttingDown,
// waiters leave the queue with it, and every lease is reclaimed with
// Shutdown. It returns when all are reclaimed, or when ctx ends.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		close(m.stopCheck)
		for _, w := range m.queue {
			w.err = ErrShuttingDown
			close(w.ready)
		}
		m.queue = nil
		m.failKeyWaitersLocked(ErrShuttingDown)
	}
	for _, n := range m.sticky {
		if n.warm != nil {
			m.closeWarmLocked(n, n.warm, n.deleting == 0, "broker shutting down")
		}
	}
	leases := make([]*Lease, 0, len(m.leases))
	for _, l := range m.leases {
		m.reclaimLocked(l, Shutdown, "broker shutting down")
		leases = append(leases, l)
	}
	m.mu.Unlock()

	done := make(chan struct{})
	go func() {
		m.opens.Wait() // late grants reclaim themselves
		for _, l := range leases {
			<-l.done
		}
		m.reclaims.Wait() // and those already out of the table, finishing
		<-m.checkerDone
		<-m.admitDone
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("lease: close: %w", context.Cause(ctx))
	}
}
