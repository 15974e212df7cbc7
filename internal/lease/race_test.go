package lease

import (
	"context"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// The race model drives thousands of leases through random, concurrent and
// often simultaneous triggers (release, stream break, idle expiry racing
// renews, max lifetime, admin revoke, backend crash, commands in flight,
// waiters giving up, shutdown) and checks what doc.go promises: each lease is
// reclaimed exactly once, for the first trigger's reason; no renew or
// command succeeds, and no command is let in, once its reclaim has begun;
// no lease outlives its max lifetime; capacity is never exceeded; the books
// balance; Close leaves nothing behind. It runs under synctest's fake clock,
// so millisecond TTLs cost no wall time and events aimed at the same instant
// really happen together.
//
// "Once its reclaim has begun" is decided with sequence numbers, not
// timing: every observation takes a number from one atomic counter, so one
// numbered lower happened before one numbered higher. Any sign of the
// reclaim (a *ReclaimedError, a trigger returning, Done closed, the session's
// Close called) is numbered after the reclaim began, and a renew that was
// called later than such a sign must have failed.
//
// The checker returns what it saw broken instead of failing the test, so
// TestRaceModelCatchesBrokenReclaim (-tags leasefault) can show that it
// catches a broken reclaim.

var raceDuration = flag.Duration("lease.race.duration", 0,
	"run TestRaceModel for at least this long, round after round (or set LEASE_RACE_DURATION, e.g. 5m)")

// raceConfig sizes a run of the race model.
type raceConfig struct {
	Rounds   int // managers run one after another, each closed mid-flight
	Leases   int // grants per round, after which the round's manager is closed
	Capacity int
	Workers  int // concurrent acquirers; more than Capacity, so the queue fills
	MaxQueue int // below Workers-Capacity, so the queue also overflows
}

// ciRace is the default size: 3000 leases, a few seconds under -race.
var ciRace = raceConfig{Rounds: 3, Leases: 1000, Capacity: 8, Workers: 24, MaxQueue: 12}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func chance(percent int) bool { return mrand.IntN(100) < percent }

func TestRaceModel(t *testing.T) {
	if injectBrokenReclaim {
		t.Skip("manager built with a broken reclaim (-tags leasefault); TestRaceModelCatchesBrokenReclaim covers it")
	}
	d := *raceDuration
	if env := os.Getenv("LEASE_RACE_DURATION"); env != "" && d == 0 {
		var err error
		if d, err = time.ParseDuration(env); err != nil {
			t.Fatalf("LEASE_RACE_DURATION=%q: %v", env, err)
		}
	}
	sum, errs := runRaceModel(t, ciRace, d)
	t.Log(sum)
	if len(errs) > 0 {
		t.Errorf("race model: %s", describeViolations(errs, 15))
	}
}

// runRaceModel runs cfg.Rounds rounds, and more until d has passed, each in
// its own bubble. It stops after the first round that broke a promise.
func runRaceModel(t *testing.T, cfg raceConfig, d time.Duration) (raceSummary, []error) {
	t.Helper()
	start := time.Now()
	var sum raceSummary
	var errs []error
	for round := 0; round < cfg.Rounds || time.Since(start) < d; round++ {
		synctest.Test(t, func(t *testing.T) {
			errs = runRaceRound(cfg, &sum)
		})
		sum.rounds++
		if len(errs) > 0 {
			break
		}
	}
	sum.took = time.Since(start)
	return sum, errs
}

// raceViolation is a broken promise seen by the model.
type raceViolation struct {
	Kind  string // exactly-once, reason, after-reclaim, lifetime, capacity, books, serial, shutdown, api
	Lease string
	Msg   string
}

func (v *raceViolation) Error() string {
	if v.Lease == "" {
		return v.Kind + ": " + v.Msg
	}
	return v.Kind + ": lease " + v.Lease + ": " + v.Msg
}

func violationKinds(errs []error) map[string]int {
	kinds := map[string]int{}
	for _, err := range errs {
		var v *raceViolation
		if errors.As(err, &v) {
			kinds[v.Kind]++
		}
	}
	return kinds
}

func describeViolations(errs []error, most int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d violations %v", len(errs), violationKinds(errs))
	for i, err := range errs {
		if i == most {
			fmt.Fprintf(&sb, "\n\t... and %d more", len(errs)-most)
			break
		}
		sb.WriteString("\n\t" + err.Error())
	}
	return sb.String()
}

// raceSummary counts what the model did, over all rounds.
type raceSummary struct {
	rounds, granted, hidden                   int
	reclaimed                                 [numReasons]uint64
	duplicates                                uint64
	renewsOK, commandsOK, aborted, refused    int
	waitersCancelled, waitTimeouts, queueFull int
	withdrawn, openFailed, shutOut            int
	lateStarts                                [3]int // commands started as the reclaim began: before Close, during, after Done
	closeActive, closeWaiting                 int    // at the instants Close was called
	took                                      time.Duration
}

func (s raceSummary) String() string {
	var reasons []string
	for _, r := range Reasons() {
		if n := s.reclaimed[r]; n > 0 {
			reasons = append(reasons, fmt.Sprintf("%v=%d", r, n))
		}
	}
	return fmt.Sprintf("race model: %d rounds, %d leases (%d never reached their acquirer); reclaimed %s; "+
		"%d duplicate triggers absorbed; %d commands aborted in flight, %d refused after reclaim, %d ok; %d renews ok; "+
		"%d commands started as their reclaim began (%d of them after Close began, %d after the lease was reclaimed); "+
		"%d waiters cancelled, %d withdrawn, %d timed out, %d shut out, %d queue full, %d opens failed; "+
		"Close met %d active and %d waiting; took %v",
		s.rounds, s.granted, s.hidden, strings.Join(reasons, " "), s.duplicates,
		s.aborted, s.refused, s.commandsOK, s.renewsOK,
		s.lateStarts[0]+s.lateStarts[1]+s.lateStarts[2], s.lateStarts[1]+s.lateStarts[2], s.lateStarts[2],
		s.waitersCancelled, s.withdrawn, s.waitTimeouts, s.shutOut, s.queueFull, s.openFailed,
		s.closeActive, s.closeWaiting, s.took.Round(time.Millisecond))
}

// raceRound is one manager's life in the model, inside one bubble.
type raceRound struct {
	cfg raceConfig
	m   *Manager
	b   *modelBackend

	// seq orders events across goroutines: an event whose number is lower
	// happened before one whose number is higher.
	seq atomic.Uint64

	closeCalled   atomic.Uint64 // seq when Close was called; 0 before
	closeReturned atomic.Bool
	full          chan struct{} // closed at cfg.Leases grants

	mu         sync.Mutex
	violations []error
	leases     []*Lease // every lease handed to a worker
	sum        raceSummary
	byReason   [numReasons]uint64 // reclaims of the leases workers held
	// dupFloor counts the triggers the model knows were absorbed: every
	// Lease.Reclaim or Manager.Reclaim that went through the reclaim path,
	// but the winner. (Crash watchers and Close add more it cannot count.)
	dupFloor uint64
}

func (r *raceRound) tick() uint64 { return r.seq.Add(1) }

func (r *raceRound) fail(kind, lease, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.violations = append(r.violations, &raceViolation{Kind: kind, Lease: lease, Msg: fmt.Sprintf(format, args...)})
}

func (r *raceRound) count(f func(s *raceSummary)) {
	r.mu.Lock()
	f(&r.sum)
	r.mu.Unlock()
}

// modelBackend is the fake backend as the model wants it: opens take a
// moment (so acquirers can leave mid-open) and sometimes fail, and sessions
// note when their Close began.
type modelBackend struct {
	*fakeBackend
	r *raceRound
}

var errModelOpen = errors.New("model: open failed")

func (b *modelBackend) Open(ctx context.Context, spec any) (Session, error) {
	if chance(2) {
		return nil, errModelOpen
	}
	if d := ms(mrand.IntN(3)); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s, err := b.fakeBackend.Open(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &modelSession{fakeSession: s.(*fakeSession), r: b.r}, nil
}

type modelSession struct {
	*fakeSession
	r          *raceRound
	closeBegan atomic.Uint64 // seq of the first Close; 0 before
	closeAt    atomic.Pointer[time.Time]
}

func (s *modelSession) Close(ctx context.Context) error {
	now := time.Now()
	s.closeAt.CompareAndSwap(nil, &now)
	s.closeBegan.CompareAndSwap(0, s.r.tick())
	return s.fakeSession.Close(ctx)
}

// runRaceRound runs one manager until cfg.Leases grants, closes it while
// leases, commands and waiters are in flight, and checks the books. It adds
// its counts to sum and returns the violations it saw.
func runRaceRound(cfg raceConfig, sum *raceSummary) []error {
	r := &raceRound{cfg: cfg, full: make(chan struct{})}
	r.b = &modelBackend{fakeBackend: &fakeBackend{}, r: r}
	r.m = New(r.b, Config{
		Capacity:      cfg.Capacity,
		MaxQueue:      cfg.MaxQueue,
		DefaultTTL:    ms(10),
		MaxTTL:        ms(50),
		DefaultWait:   ms(20),
		MaxWait:       ms(100),
		MaxLifetime:   ms(60),
		Jitter:        0.25,
		OpenTimeout:   ms(5),
		CloseTimeout:  ms(10),
		CheckInterval: ms(2),
	})

	var workers, monitor sync.WaitGroup
	stopMonitor := make(chan struct{})
	monitor.Go(func() { r.monitor(stopMonitor) })
	for range cfg.Workers {
		workers.Go(r.worker)
	}

	<-r.full
	r.closeCalled.Store(r.tick())
	st := r.m.Stats()
	r.count(func(s *raceSummary) { s.closeActive, s.closeWaiting = st.Active, st.Waiting })
	if err := r.m.Close(context.Background()); err != nil {
		r.fail("api", "", "Close = %v, want nil", err)
	}
	r.closeReturned.Store(true)
	r.mu.Lock()
	held := append([]*Lease(nil), r.leases...)
	r.mu.Unlock()
	for _, l := range held {
		select {
		case <-l.Done():
		default:
			r.fail("shutdown", l.ID(), "Close returned before the lease was fully reclaimed (Done still open)")
		}
	}
	workers.Wait()
	close(stopMonitor)
	monitor.Wait()
	r.finalChecks()

	st = r.m.Stats()
	sum.granted += int(st.GrantedTotal)
	sum.hidden += int(st.GrantedTotal) - len(r.leases)
	for _, rs := range Reasons() {
		sum.reclaimed[rs] += st.Reclaimed[rs]
	}
	sum.duplicates += st.DuplicateTriggers
	s := r.sum
	sum.renewsOK += s.renewsOK
	sum.commandsOK += s.commandsOK
	sum.aborted += s.aborted
	sum.refused += s.refused
	sum.waitersCancelled += s.waitersCancelled
	sum.withdrawn += s.withdrawn
	sum.waitTimeouts += s.waitTimeouts
	sum.queueFull += s.queueFull
	sum.openFailed += s.openFailed
	sum.shutOut += s.shutOut
	for i := range s.lateStarts {
		sum.lateStarts[i] += s.lateStarts[i]
	}
	sum.closeActive += s.closeActive
	sum.closeWaiting += s.closeWaiting
	return r.violations
}

// monitor checks the manager's books at every tick of the fake clock.
func (r *raceRound) monitor(stop <-chan struct{}) {
	t := time.NewTicker(ms(1))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			r.checkpoint("tick")
		}
	}
}

// checkpoint checks the invariant and capacity at one instant.
func (r *raceRound) checkpoint(when string) {
	st := r.m.Stats()
	if st.InvariantErr != nil {
		r.fail("books", "", "%s: Stats().InvariantErr = %v, want nil", when, st.InvariantErr)
	}
	if st.Active+st.Opening > st.Capacity {
		r.fail("capacity", "", "%s: active %d + opening %d > capacity %d", when, st.Active, st.Opening, st.Capacity)
	}
	if st.GrantedTotal != uint64(st.Active)+st.ReclaimedTotal {
		r.fail("books", "", "%s: granted %d != active %d + reclaimed %d", when, st.GrantedTotal, st.Active, st.ReclaimedTotal)
	}
	if st.Closing > st.Active || st.Waiting > r.cfg.MaxQueue {
		r.fail("books", "", "%s: closing %d of %d active, %d waiting (queue limit %d)", when, st.Closing, st.Active, st.Waiting, r.cfg.MaxQueue)
	}
	r.b.mu.Lock()
	most := r.b.maxLive
	r.b.mu.Unlock()
	if most > r.cfg.Capacity {
		r.fail("capacity", "", "%s: backend had %d sessions live at once, capacity %d", when, most, r.cfg.Capacity)
	}
}

// finalChecks runs once the manager is closed and every worker is done.
func (r *raceRound) finalChecks() {
	r.checkpoint("end")
	st := r.m.Stats()
	if st.Active != 0 || st.Opening != 0 || st.Closing != 0 || st.Waiting != 0 {
		r.fail("books", "", "after Close: active %d, opening %d, closing %d, waiting %d; want all 0",
			st.Active, st.Opening, st.Closing, st.Waiting)
	}
	if st.InvariantViolations != 0 {
		r.fail("books", "", "the manager's own checker counted %d invariant violations", st.InvariantViolations)
	}
	if live := r.b.Live(); live != 0 {
		r.fail("exactly-once", "", "backend has %d sessions live after Close, want 0", live)
	}
	sessions := r.b.opened()
	for i, s := range sessions {
		if n := s.closeCalls.Load(); n != 1 {
			r.fail("exactly-once", "", "session %d of %d opened was closed %d times, want once", i+1, len(sessions), n)
		}
	}
	if st.GrantedTotal != uint64(len(sessions)) {
		r.fail("books", "", "granted %d leases over %d opened sessions, want one each", st.GrantedTotal, len(sessions))
	}
	// Leases granted to acquirers that had left, or during Close, never
	// reach a worker; they are reclaimed as STREAM_CLOSED or SHUTDOWN.
	hidden := st.GrantedTotal - uint64(len(r.leases))
	for _, rs := range Reasons() {
		got, want := st.Reclaimed[rs], r.byReason[rs]
		if rs == StreamClosed || rs == Shutdown {
			continue
		}
		if got != want {
			r.fail("books", "", "Stats().Reclaimed[%v] = %d, the workers saw %d", rs, got, want)
		}
	}
	if got, want := st.Reclaimed[StreamClosed]+st.Reclaimed[Shutdown], r.byReason[StreamClosed]+r.byReason[Shutdown]+hidden; got != want {
		r.fail("books", "", "Stats().Reclaimed STREAM_CLOSED+SHUTDOWN = %d, want %d (%d seen by workers, %d never handed out)",
			got, want, r.byReason[StreamClosed]+r.byReason[Shutdown], hidden)
	}
	if st.DuplicateTriggers < r.dupFloor {
		r.fail("books", "", "Stats().DuplicateTriggers = %d, but at least %d triggers found their lease already reclaimed",
			st.DuplicateTriggers, r.dupFloor)
	}
	if _, err := r.m.Acquire(context.Background(), AcquireRequest{}, nil); !errors.Is(err, ErrShuttingDown) {
		r.fail("api", "", "Acquire after Close = %v, want ErrShuttingDown", err)
	}
}

// worker acquires leases and runs each through random events until the
// manager shuts it out.
func (r *raceRound) worker() {
	for {
		l, err := r.acquire()
		if errors.Is(err, ErrShuttingDown) {
			return
		}
		if err != nil {
			time.Sleep(ms(1 + mrand.IntN(2))) // back off, and let the clock move
			continue
		}
		r.runLease(l)
	}
}

func (r *raceRound) acquire() (*Lease, error) {
	var req AcquireRequest
	if chance(75) {
		req.TTL = ms(2 + mrand.IntN(18))
	}
	if chance(50) {
		req.MaxLifetime = ms(10 + mrand.IntN(50))
	}
	if chance(30) {
		req.Wait = ms(1 + mrand.IntN(8))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if chance(20) { // a caller that goes away while queued or while its session opens
		t := time.AfterFunc(ms(mrand.IntN(6)), cancel)
		defer t.Stop()
	}
	if chance(10) { // a waiter that moves to another broker: withdrawn from the queue
		withdraw := make(chan struct{})
		req.Withdraw = withdraw
		t := time.AfterFunc(ms(mrand.IntN(6)), func() { close(withdraw) })
		defer t.Stop()
	}
	l, err := r.m.Acquire(ctx, req, func(pos int) {
		if pos < 1 || pos > r.cfg.MaxQueue {
			r.fail("api", "", "Acquire reported queue position %d, want 1..%d", pos, r.cfg.MaxQueue)
		}
	})
	switch {
	case err == nil:
		r.deliver(l)
	case errors.Is(err, context.Canceled):
		r.count(func(s *raceSummary) { s.waitersCancelled++ })
	case errors.Is(err, ErrWithdrawn):
		if req.Withdraw == nil {
			r.fail("api", "", "Acquire = %v without a Withdraw", err)
		}
		r.count(func(s *raceSummary) { s.withdrawn++ })
	case errors.Is(err, ErrNoCapacity):
		r.count(func(s *raceSummary) { s.waitTimeouts++ })
	case errors.Is(err, ErrQueueFull):
		r.count(func(s *raceSummary) { s.queueFull++ })
	case errors.Is(err, ErrBackend):
		r.count(func(s *raceSummary) { s.openFailed++ })
	case errors.Is(err, ErrShuttingDown):
		if r.closeCalled.Load() == 0 {
			r.fail("api", "", "Acquire = %v before Close was called", err)
		}
		r.count(func(s *raceSummary) { s.shutOut++ })
	default:
		r.fail("api", "", "Acquire(%+v) = %v, want a lease or a known error", req, err)
	}
	return l, err
}

func (r *raceRound) deliver(l *Lease) {
	if r.closeReturned.Load() {
		// Close returns once every lease it found is reclaimed, and a lease
		// granted after that point is reclaimed before Acquire returns.
		select {
		case <-l.Done():
		default:
			r.fail("shutdown", l.ID(), "Acquire returned a live lease after Close returned")
		}
	}
	r.mu.Lock()
	r.leases = append(r.leases, l)
	n := len(r.leases)
	r.mu.Unlock()
	if n == r.cfg.Leases {
		close(r.full)
	}
	if n%50 == 0 {
		r.checkpoint(fmt.Sprintf("grant %d", n))
	}
}

// leaseRec is what the model observed of one lease. Every observation
// carries a sequence number, so that "after the reclaim began" can be
// decided soundly: an event numbered after any sign of the reclaim happened
// after the reclaim began.
type leaseRec struct {
	r           *raceRound
	l           *Lease
	s           *modelSession
	granted     time.Time
	maxDeadline time.Time

	mu sync.Mutex
	// evidence is the lowest seq of any sign that the reclaim had begun: a
	// call refused or cut short with a *ReclaimedError, a trigger returned,
	// Done seen closed, the session's Close called.
	evidence     uint64
	evidenceWhat string
	seen         []seenReason // reasons the API reported for the lease
	triggers     []triggerObs
	crashed      Reason // reason the crash should reclaim with; 0: no crash
	crashSeq     uint64
	renewsOK     []renewObs
	commandsOK   []uint64 // seq at which each successful command's fn returned
	fnStarts     []fnObs
	fnSawCancel  uint64 // first seq at which a fn saw the reclaim cancel it
	running      int    // fns running now
	doneAt       time.Time
}

type seenReason struct {
	what   string
	reason Reason
}

type triggerObs struct {
	reason  Reason
	called  uint64
	reached bool // went through the reclaim path (not refused with a tombstone)
}

type renewObs struct {
	called uint64
	at     time.Time
}

type fnObs struct {
	called, started uint64 // Do called, fn started
}

// sawReclaim notes a call that reported the lease reclaimed, for reason.
func (rec *leaseRec) sawReclaim(seq uint64, what string, reason Reason) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.beganLocked(seq, what)
	rec.seen = append(rec.seen, seenReason{what, reason})
}

// beganLocked notes a sign, numbered seq, that the reclaim had begun.
func (rec *leaseRec) beganLocked(seq uint64, what string) {
	if rec.evidence == 0 || seq < rec.evidence {
		rec.evidence, rec.evidenceWhat = seq, what
	}
}

// runLease fires a random set of events at the lease, many of them at one
// shared instant, waits until it is reclaimed and every event has run, then
// checks what was observed.
func (r *raceRound) runLease(l *Lease) {
	rec := &leaseRec{r: r, l: l, s: l.Session().(*modelSession), granted: time.Now(), maxDeadline: l.MaxDeadline()}
	life := rec.maxDeadline.Sub(rec.granted)
	var clash time.Duration // when several events hit the lease together
	switch mrand.IntN(3) {
	case 0:
		clash = l.ExpiresAt().Sub(rec.granted) // the idle expiry
	case 1:
		clash = life // the max lifetime
	default:
		clash = ms(mrand.IntN(int(life/time.Millisecond) + 1))
	}
	when := func() time.Duration {
		if chance(50) {
			return clash
		}
		// Up to half a lifetime past the end: late triggers are absorbed too.
		return ms(mrand.IntN(int(life*3/2/time.Millisecond) + 1))
	}

	var events sync.WaitGroup
	at := func(d time.Duration, event func()) {
		events.Go(func() {
			time.Sleep(d)
			event()
		})
	}
	if chance(35) {
		at(when(), func() { rec.trigger(Released, false) })
	}
	if chance(25) {
		at(when(), func() { rec.trigger(StreamClosed, false) })
	}
	if chance(20) {
		at(when(), func() { rec.trigger(Revoked, true) })
	}
	if chance(15) {
		at(when(), rec.crash)
	}
	for range mrand.IntN(5) {
		at(when(), rec.command)
	}
	if chance(50) {
		at(0, rec.keepRenewing)
	}
	if chance(30) {
		at(0, rec.renewAtExpiry)
	}
	if chance(20) {
		at(life, func() { rec.renew() }) // renew racing the max lifetime
	}

	<-l.Done()
	seq := r.tick()
	rec.mu.Lock()
	rec.doneAt = time.Now()
	rec.beganLocked(seq, "Done closed")
	rec.mu.Unlock()
	events.Wait()
	rec.check()
}

// trigger reclaims the lease, as its holder (Lease.Reclaim) or as an
// operator (Manager.Reclaim by id).
func (rec *leaseRec) trigger(reason Reason, byID bool) {
	r := rec.r
	called := r.tick()
	var got Reason
	var err error
	what := fmt.Sprintf("Lease.Reclaim(%v)", reason)
	if byID {
		what = fmt.Sprintf("Manager.Reclaim(id, %v)", reason)
		got, err = r.m.Reclaim(rec.l.ID(), reason, "model")
	} else {
		got = rec.l.Reclaim(reason, "model")
	}
	returned := r.tick()
	var re *ReclaimedError
	switch {
	case err == nil:
		rec.sawReclaim(returned, what, got)
	case errors.As(err, &re):
		rec.sawReclaim(returned, what+" error", re.Reason)
	default:
		r.fail("api", rec.l.ID(), "%s = %v, want a reason or *ReclaimedError", what, err)
		return
	}
	rec.mu.Lock()
	rec.triggers = append(rec.triggers, triggerObs{reason: reason, called: called, reached: err == nil})
	rec.mu.Unlock()
}

// crash loses the session under the lease, as a dying browser or page would.
func (rec *leaseRec) crash() {
	reason := []Reason{BrowserCrashed, PageCrashed, ReasonUnspecified}[mrand.IntN(3)]
	want := reason
	if want == ReasonUnspecified {
		want = BrowserCrashed // the manager's default for a loss without a reason
	}
	rec.mu.Lock()
	rec.crashed, rec.crashSeq = want, rec.r.tick()
	rec.mu.Unlock()
	rec.s.crash(reason, "model crash")
}

func (rec *leaseRec) renew() bool {
	r := rec.r
	called := r.tick()
	var err error
	if chance(50) {
		_, err = rec.l.Renew()
	} else {
		_, err = r.m.Renew(rec.l.ID())
	}
	returned := r.tick()
	var re *ReclaimedError
	switch {
	case err == nil:
		now := time.Now()
		if now.After(rec.maxDeadline) {
			r.fail("lifetime", rec.l.ID(), "Renew succeeded %v past the max deadline", now.Sub(rec.maxDeadline))
		}
		rec.mu.Lock()
		rec.renewsOK = append(rec.renewsOK, renewObs{called: called, at: now})
		rec.mu.Unlock()
		r.count(func(s *raceSummary) { s.renewsOK++ })
		return true
	case errors.As(err, &re):
		rec.sawReclaim(returned, "Renew error", re.Reason)
	default:
		r.fail("api", rec.l.ID(), "Renew = %v, want nil or *ReclaimedError", err)
	}
	return false
}

// keepRenewing renews at random intervals within the TTL, as a holder
// that uses its lease now and then.
func (rec *leaseRec) keepRenewing() {
	ttl := int(rec.l.TTL() / time.Millisecond)
	for range 1 + mrand.IntN(8) {
		time.Sleep(ms(1 + mrand.IntN(ttl)))
		if !rec.renew() {
			return
		}
	}
}

// renewAtExpiry renews at the very instant the lease would idle out, when
// the manager's timer fires too: one of them wins, and the other must see it.
func (rec *leaseRec) renewAtExpiry() {
	for range 1 + mrand.IntN(3) {
		time.Sleep(time.Until(rec.l.ExpiresAt()))
		if !rec.renew() {
			return
		}
	}
}

// command runs a page command on the lease: one that blocks until it is
// cancelled, one that takes a moment, or one that returns at once, under a
// context that may end on its own.
func (rec *leaseRec) command() {
	r := rec.r
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	switch mrand.IntN(3) {
	case 0:
		var cancelT context.CancelFunc
		ctx, cancelT = context.WithTimeout(ctx, ms(1+mrand.IntN(5)))
		defer cancelT()
	case 1:
		t := time.AfterFunc(ms(mrand.IntN(5)), cancel)
		defer t.Stop()
	}
	kind, nap := mrand.IntN(3), ms(mrand.IntN(4))
	called := r.tick()
	ran := false
	var returned uint64
	err := r.m.Do(ctx, rec.l.ID(), func(ctx context.Context, s Session) error {
		ran = true // fn runs on Do's goroutine
		rec.fnStart(called, s)
		defer func() { returned = rec.fnEnd(ctx) }()
		switch kind {
		case 0:
			<-ctx.Done()
			return ctx.Err()
		case 1:
			t := time.NewTimer(nap)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	done := r.tick()
	var re *ReclaimedError
	switch {
	case err == nil:
		if !ran {
			r.fail("api", rec.l.ID(), "Do = nil, but its fn never ran")
			return
		}
		rec.mu.Lock()
		rec.commandsOK = append(rec.commandsOK, returned)
		rec.mu.Unlock()
		r.count(func(s *raceSummary) { s.commandsOK++ })
	case errors.As(err, &re):
		rec.sawReclaim(done, "Do error", re.Reason)
		if !re.InFlight && ran {
			r.fail("api", rec.l.ID(), "Do = %v (not in flight), but its fn ran", err)
		}
		r.count(func(s *raceSummary) {
			if re.InFlight {
				s.aborted++
			} else {
				s.refused++
			}
		})
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// The command's own context ended.
	default:
		r.fail("api", rec.l.ID(), "Do = %v, want nil, *ReclaimedError or a context error", err)
	}
}

func (rec *leaseRec) fnStart(called uint64, s Session) {
	started := rec.r.tick()
	// A command that starts once the reclaim has begun is not a broken
	// promise the model can prove: Do decides, then calls fn, and the
	// reclaim may begin in between (a goroutine can stall there for as long
	// as the scheduler likes). It is counted; many of them, or any after the
	// lease is fully reclaimed, point at Do deciding late.
	if rec.l.ctx.Err() != nil {
		late := 0
		if c := rec.s.closeBegan.Load(); c != 0 && c < started {
			late = 1
			select {
			case <-rec.l.Done():
				late = 2
			default:
			}
		}
		rec.r.count(func(s *raceSummary) { s.lateStarts[late]++ })
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.running++
	if rec.running > 1 {
		rec.r.fail("serial", rec.l.ID(), "%d commands running at once, want one at a time", rec.running)
	}
	if s != Session(rec.s) {
		rec.r.fail("api", rec.l.ID(), "fn got session %p, want the lease's %p", s, rec.s)
	}
	rec.fnStarts = append(rec.fnStarts, fnObs{called: called, started: started})
}

// fnEnd notes the end of a command's fn and returns its number, taken
// before Do looks at the lease again.
func (rec *leaseRec) fnEnd(ctx context.Context) uint64 {
	returned := rec.r.tick()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.running--
	var re *ReclaimedError
	if ctx.Err() != nil && errors.As(context.Cause(ctx), &re) {
		seen := rec.r.tick() // numbered after the sighting, not before
		if rec.fnSawCancel == 0 {
			rec.fnSawCancel = seen
		}
		rec.beganLocked(seen, "a command cut short")
		rec.seen = append(rec.seen, seenReason{"a command's context cause", re.Reason})
	}
	return returned
}

// check decides, once the lease is reclaimed and every event has run,
// whether what was observed is allowed.
func (rec *leaseRec) check() {
	r, id := rec.r, rec.l.ID()
	reason, _ := rec.l.Reason()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if c := rec.s.closeBegan.Load(); c != 0 {
		rec.beganLocked(c, "session Close began")
	}
	evidence := rec.evidence

	// Reclaimed once, for one reason: everything that reported a reason
	// reported this one.
	if n := rec.s.closeCalls.Load(); n != 1 {
		r.fail("exactly-once", id, "Done closed, and the session was closed %d times, want once", n)
	}
	for _, s := range rec.seen {
		if s.reason != reason {
			r.fail("reason", id, "%s reported %v, but Lease.Reason() = %v", s.what, s.reason, reason)
		}
	}

	// ... and that reason is the first trigger's: one that fired before
	// any sign of the reclaim.
	var ok bool
	switch reason {
	case Released, StreamClosed, Revoked:
		for _, t := range rec.triggers {
			ok = ok || (t.reason == reason && t.called < evidence)
		}
	case BrowserCrashed, PageCrashed:
		ok = rec.crashed == reason && rec.crashSeq < evidence
	case Shutdown:
		c := r.closeCalled.Load()
		ok = c != 0 && c < evidence
	case TTLExpired:
		last := rec.granted
		for _, rn := range rec.renewsOK {
			if rn.at.After(last) {
				last = rn.at
			}
		}
		ok = !rec.doneAt.Before(last.Add(rec.l.TTL()))
	case MaxLifetime:
		ok = !rec.doneAt.Before(rec.maxDeadline)
	}
	if !ok {
		r.fail("reason", id, "reclaimed for %v, which no trigger before the reclaim explains (triggers %+v, crash %v at %d, first sign of the reclaim: %s at %d, done at +%v, ok renews %v)",
			reason, rec.triggers, rec.crashed, rec.crashSeq, rec.evidenceWhat, evidence, rec.doneAt.Sub(rec.granted), rec.renewsOK)
	}
	// The reclaim starts closing the session at once, in the same instant
	// of the fake clock, so the session's Close shows when it began.
	if at := rec.s.closeAt.Load(); at != nil && at.After(rec.maxDeadline) {
		r.fail("lifetime", id, "reclaim (%v) began %v past the max deadline (max lifetime %v)",
			reason, at.Sub(rec.maxDeadline), rec.maxDeadline.Sub(rec.granted))
	}

	// Nothing succeeds, and no command starts, once the reclaim has begun.
	for _, rn := range rec.renewsOK {
		if rn.called > evidence {
			r.fail("after-reclaim", id, "Renew called at %d succeeded, after the reclaim began (by %d)", rn.called, evidence)
		}
	}
	for _, ret := range rec.commandsOK {
		if ret > evidence {
			r.fail("after-reclaim", id, "Do succeeded with its fn returning at %d, after the reclaim began (by %d)", ret, evidence)
		}
	}
	for _, f := range rec.fnStarts {
		if f.called > evidence {
			r.fail("after-reclaim", id, "Do called at %d ran its fn (at %d), after the reclaim began (by %d)", f.called, f.started, evidence)
		}
		if rec.fnSawCancel != 0 && f.started > rec.fnSawCancel {
			// Commands take turns: this one got the turn after an earlier
			// command had been cut short by the reclaim and returned.
			r.fail("after-reclaim", id, "a command started at %d, after an earlier one was cut short by the reclaim (at %d); Do called at %d",
				f.started, rec.fnSawCancel, f.called)
		}
	}

	// The books, for the round's totals.
	reached := 0
	for _, t := range rec.triggers {
		if t.reached {
			reached++
		}
	}
	if reached > 0 && (reason == Released || reason == StreamClosed || reason == Revoked) {
		reached-- // the winner is not a duplicate
	}
	r.mu.Lock()
	r.byReason[reason]++
	r.dupFloor += uint64(reached)
	r.mu.Unlock()
}
