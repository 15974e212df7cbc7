package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// FuzzLeaseEvents reads its input as a program of events applied to a
// manager over the fake backend, in a synctest bubble: acquires with and
// without a session key (waiting, or in the background where they can be
// cancelled), release, stream break, renew, revoke, crash, time passing,
// commands, session deletes, drain and undrain, memory admission, backend
// failures and hung closes, and Close. After every event, once the bubble is
// idle, and at the end, it checks the books: the invariant holds, capacity
// is never exceeded, granted == active + reclaimed, no session is closed
// twice or saved after its close, and after Close every session is closed
// and every lease reclaimed.
//
// Each event is one byte (the event, modulo the number of events) followed
// by the bytes its arguments take; a program that runs out of bytes reads
// zeros. Seeds are in testdata/fuzz/FuzzLeaseEvents.
func FuzzLeaseEvents(f *testing.F) {
	f.Fuzz(func(t *testing.T, program []byte) {
		if len(program) > 512 {
			program = program[:512] // longer programs add time, not cases
		}
		synctest.Test(t, func(t *testing.T) {
			runEvents(t, program)
		})
	})
}

// fuzzCapacity is small so that the queue, the key lines and eviction of
// warm sessions all come into play within a few events.
const fuzzCapacity = 3

var fuzzKeys = [...]string{"k1", "k2", "k3"}

// The events. Arguments follow as bytes, in the order of the comments.
const (
	evAcquire       = iota // wait, ttl: acquire without a key, waiting here
	evAcquireKey           // key, wait: acquire a sticky session, waiting here
	evAcquireAsync         // key (0: none), wait, principal: acquire in the background
	evCancelAcquire        // which: cancel a background acquire (even), or withdraw it from the queue (odd)
	evRelease              // lease, async
	evStreamClosed         // lease, async
	evRenew                // lease
	evRevoke               // lease: by id, as an operator does
	evCrash                // lease, page (odd) or browser: the session is lost
	evAdvance              // ms: time passes
	evCommand              // lease, ms: a command in the background, running ms
	evDeleteSession        // key: in the background
	evDrain                // on (odd) or off
	evClose                // Close the manager
	evOpenFails            // on (odd) or off: the backend's Open fails
	evCloseHangs           // on (odd) or off: sessions' Close hangs until its deadline
	evSaveFails            // on (odd) or off: sessions' Save fails
	evMemoryLow            // on (odd) or off: Admit says no
	numEvents
)

var eventNames = [...]string{"acquire", "acquire-key", "acquire-async", "cancel-acquire", "release",
	"stream-closed", "renew", "revoke", "crash", "advance", "command", "delete-session", "drain",
	"close", "open-fails", "close-hangs", "save-fails", "memory-low"}

// eventRun is one program's run.
type eventRun struct {
	t       *testing.T
	m       *Manager
	b       *fakeBackend
	program []byte
	pos     int
	trace   []string
	closed  atomic.Bool // Close was called
	memLow  atomic.Bool

	bg        sync.WaitGroup // background acquires, triggers, commands, deletes
	mu        sync.Mutex
	leases    []*Lease
	cancels   []context.CancelFunc
	withdraws []func() // close a background acquire's Withdraw, once
	errs      []string // broken promises seen in the background
}

func (r *eventRun) next() byte {
	if r.pos >= len(r.program) {
		r.pos++
		return 0
	}
	b := r.program[r.pos]
	r.pos++
	return b
}

func (r *eventRun) failf(format string, args ...any) {
	r.mu.Lock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// lease picks one of the leases granted so far (live or not), or nil.
func (r *eventRun) lease() *Lease {
	i := int(r.next())
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.leases) == 0 {
		return nil
	}
	return r.leases[i%len(r.leases)]
}

func (r *eventRun) granted(l *Lease) {
	r.mu.Lock()
	r.leases = append(r.leases, l)
	r.mu.Unlock()
}

// acquireErrOK says whether an acquire may fail so with the run's valid
// requests.
func acquireErrOK(err error) bool {
	for _, e := range []error{ErrNoCapacity, ErrQueueFull, ErrShuttingDown, ErrDraining, ErrBackend, ErrNotFound, ErrLimit, ErrWithdrawn, context.Canceled} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (r *eventRun) acquire(ctx context.Context, req AcquireRequest, what string) {
	closed := r.closed.Load()
	l, err := r.m.Acquire(ctx, req, nil)
	switch {
	case err == nil && closed:
		r.failf("%s after Close = granted %s, want ErrShuttingDown", what, l.ID())
	case err == nil:
		r.granted(l)
	case !acquireErrOK(err):
		r.failf("%s = %v, want a lease or a capacity, shutdown, drain, backend or cancel error", what, err)
	}
}

func runEvents(t *testing.T, program []byte) {
	r := &eventRun{t: t, b: &fakeBackend{}, program: program}
	r.m = New(r.b, Config{
		Capacity:       fuzzCapacity,
		MaxQueue:       4,
		DefaultTTL:     ms(50),
		MaxTTL:         time.Second,
		DefaultWait:    ms(20),
		MaxWait:        ms(300),
		MaxLifetime:    2 * time.Second,
		Jitter:         -1,
		CloseTimeout:   ms(30),
		CheckInterval:  ms(25),
		SessionIdleTTL: ms(100),
		Tombstones:     8,
		Admit:          func() (bool, string) { return !r.memLow.Load(), "fuzz" },
		AdmitInterval:  ms(10),
		PrincipalLimit: func(string) int { return 2 },
	})
	for step := 0; r.pos < len(program); step++ {
		r.step()
		synctest.Wait()
		r.check(fmt.Sprintf("after event %d (%s)", step, r.trace[len(r.trace)-1]))
	}

	r.mu.Lock()
	for _, cancel := range r.cancels {
		cancel()
	}
	r.mu.Unlock()
	if err := r.m.Close(context.Background()); err != nil {
		r.fatalf("Close() = %v at the end, want nil", err)
	}
	r.bg.Wait()
	r.check("after Close")
	st := r.m.Stats()
	if st.Active != 0 || st.Opening != 0 || st.Waiting != 0 || st.SessionsWarm != 0 || r.b.Live() != 0 {
		r.fatalf("after Close: active %d, opening %d, waiting %d, warm %d, backend live %d; want all 0",
			st.Active, st.Opening, st.Waiting, st.SessionsWarm, r.b.Live())
	}
	for i, s := range r.b.opened() {
		if n := s.closeCalls.Load(); n != 1 {
			r.fatalf("after Close: session %d closed %d times, want once", i, n)
		}
	}
	for _, l := range r.leases {
		select {
		case <-l.Done():
		default:
			r.fatalf("after Close: lease %s not reclaimed", l.ID())
		}
	}
	t.Logf("%d events, %d granted, reclaimed %v, %d duplicate triggers, %d acquire failures: %s",
		len(r.trace), st.GrantedTotal, st.Reclaimed, st.DuplicateTriggers, st.AcquireFailures, strings.Join(r.trace, ", "))
}

func (r *eventRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("%s\nevents: %s", fmt.Sprintf(format, args...), strings.Join(r.trace, ", "))
}

// check asserts the books after an event, with the bubble idle.
func (r *eventRun) check(when string) {
	r.t.Helper()
	r.mu.Lock()
	errs := r.errs
	r.mu.Unlock()
	if len(errs) > 0 {
		r.fatalf("%s: %s", when, strings.Join(errs, "; "))
	}
	st := r.m.Stats()
	if st.InvariantErr != nil {
		r.fatalf("%s: %v", when, st.InvariantErr)
	}
	if st.GrantedTotal != uint64(st.Active)+st.ReclaimedTotal {
		r.fatalf("%s: granted %d != active %d + reclaimed %d", when, st.GrantedTotal, st.Active, st.ReclaimedTotal)
	}
	r.b.mu.Lock()
	maxLive := r.b.maxLive
	r.b.mu.Unlock()
	if maxLive > fuzzCapacity || st.Active+st.Opening+st.SessionsWarm > fuzzCapacity {
		r.fatalf("%s: capacity %d exceeded: at most %d sessions live at once; now active %d, opening %d, warm %d",
			when, fuzzCapacity, maxLive, st.Active, st.Opening, st.SessionsWarm)
	}
	for i, s := range r.b.opened() {
		if n := s.closeCalls.Load(); n > 1 {
			r.fatalf("%s: session %d closed %d times", when, i, n)
		}
		if n := s.saveAfter.Load(); n > 0 {
			r.fatalf("%s: session %d saved %d times after its close", when, i, n)
		}
	}
}

// step reads and applies one event.
func (r *eventRun) step() {
	ev := int(r.next()) % numEvents
	name := eventNames[ev]
	switch ev {
	case evAcquire:
		wait, ttl := ms(int(r.next())), ms(int(r.next())%200)
		r.acquire(context.Background(), AcquireRequest{Wait: wait, TTL: ttl}, "Acquire")
		name += fmt.Sprintf("(wait %v, ttl %v)", wait, ttl)
	case evAcquireKey:
		key, wait := fuzzKeys[int(r.next())%len(fuzzKeys)], ms(int(r.next()))
		r.acquire(context.Background(), AcquireRequest{SessionKey: key, Wait: wait}, "Acquire("+key+")")
		name += fmt.Sprintf("(%s, wait %v)", key, wait)
	case evAcquireAsync:
		k, wait, p := int(r.next())%(len(fuzzKeys)+1), ms(int(r.next())), int(r.next())%3
		req := AcquireRequest{Wait: wait}
		if k > 0 {
			req.SessionKey = fuzzKeys[k-1]
		}
		if p > 0 {
			req.Principal = fmt.Sprintf("p%d", p)
		}
		ctx, cancel := context.WithCancel(context.Background())
		withdraw := make(chan struct{})
		req.Withdraw = withdraw
		r.mu.Lock()
		r.cancels = append(r.cancels, cancel)
		r.withdraws = append(r.withdraws, sync.OnceFunc(func() { close(withdraw) }))
		r.mu.Unlock()
		r.bg.Go(func() { r.acquire(ctx, req, fmt.Sprintf("background Acquire(%+v)", req)) })
		name += fmt.Sprintf("(key %q, wait %v, principal %q)", req.SessionKey, wait, req.Principal)
	case evCancelAcquire:
		i := int(r.next())
		r.mu.Lock()
		if len(r.cancels) > 0 && i%2 == 1 {
			r.withdraws[(i/2)%len(r.withdraws)]()
			name = "withdraw-acquire"
		} else if len(r.cancels) > 0 {
			r.cancels[(i/2)%len(r.cancels)]()
		}
		r.mu.Unlock()
	case evRelease, evStreamClosed:
		reason := Released
		if ev == evStreamClosed {
			reason = StreamClosed
		}
		l, async := r.lease(), r.next()%2 == 1
		if l == nil {
			break
		}
		trigger := func() {
			got := l.Reclaim(reason, "fuzz")
			select {
			case <-l.Done():
			default:
				r.failf("Reclaim(%s, %v) returned before Done", l.ID(), reason)
			}
			if got == ReasonUnspecified {
				r.failf("Reclaim(%s, %v) = UNSPECIFIED", l.ID(), reason)
			}
		}
		if async {
			r.bg.Go(trigger)
		} else {
			trigger()
		}
		name += fmt.Sprintf("(%s, async %v)", l.ID(), async)
	case evRenew:
		l := r.lease()
		if l == nil {
			break
		}
		select {
		case <-l.Done():
			if _, err := r.m.Renew(l.ID()); err == nil {
				r.failf("Renew(%s) after its reclaim = ok, want an error", l.ID())
			}
		default:
			r.m.Renew(l.ID()) // may race with a reclaim under way: either way is fine
		}
		name += "(" + l.ID() + ")"
	case evRevoke:
		l := r.lease()
		if l == nil {
			break
		}
		if _, err := r.m.Reclaim(l.ID(), Revoked, "fuzz"); err != nil {
			var re *ReclaimedError
			if !errors.As(err, &re) && !errors.Is(err, ErrNotFound) {
				r.failf("Reclaim(%s, REVOKED) = %v, want nil, reclaimed or not found", l.ID(), err)
			}
		}
		name += "(" + l.ID() + ")"
	case evCrash:
		l, page := r.lease(), r.next()%2 == 1
		if l == nil {
			break
		}
		reason := BrowserCrashed
		if page {
			reason = PageCrashed
		}
		l.Session().(*fakeSession).crash(reason, "fuzz crash")
		name += fmt.Sprintf("(%s, %v)", l.ID(), reason)
	case evAdvance:
		d := ms(int(r.next()))
		time.Sleep(d)
		name += fmt.Sprintf("(%v)", d)
	case evCommand:
		l, d := r.lease(), ms(int(r.next())%64)
		if l == nil {
			break
		}
		r.bg.Go(func() {
			err := r.m.Do(context.Background(), l.ID(), func(ctx context.Context, s Session) error {
				select {
				case <-l.Done():
					r.failf("command on %s ran after the lease was reclaimed", l.ID())
				default:
				}
				if s != l.Session() {
					r.failf("command on %s got another lease's session", l.ID())
				}
				t := time.NewTimer(d)
				defer t.Stop()
				select {
				case <-t.C:
					return nil
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			})
			var re *ReclaimedError
			if err != nil && !errors.As(err, &re) && !errors.Is(err, ErrNotFound) {
				r.failf("Do(%s) = %v, want nil, reclaimed or not found", l.ID(), err)
			}
		})
		name += fmt.Sprintf("(%s, %v)", l.ID(), d)
	case evDeleteSession:
		key := fuzzKeys[int(r.next())%len(fuzzKeys)]
		r.bg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := r.m.DeleteSession(ctx, key)
			if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, context.DeadlineExceeded) {
				r.failf("DeleteSession(%s) = %v, want nil, not found or the deadline", key, err)
			}
		})
		name += "(" + key + ")"
	case evDrain:
		on := r.next()%2 == 1
		r.m.Drain(on)
		name += fmt.Sprintf("(%v)", on)
	case evClose:
		if err := r.m.Close(context.Background()); err != nil {
			r.failf("Close() = %v, want nil", err)
		}
		r.closed.Store(true)
		r.mu.Lock()
		leases := r.leases
		r.mu.Unlock()
		for _, l := range leases {
			select {
			case <-l.Done():
			default:
				r.failf("Close returned with lease %s not reclaimed", l.ID())
			}
		}
	case evOpenFails, evCloseHangs, evSaveFails, evMemoryLow:
		on := r.next()%2 == 1
		switch ev {
		case evOpenFails:
			var err error
			if on {
				err = errors.New("fake: open failed")
			}
			r.b.mu.Lock()
			r.b.openErr = err
			r.b.mu.Unlock()
		case evCloseHangs:
			r.b.closeHang.Store(on)
		case evSaveFails:
			if on {
				err := errors.New("fake: save failed")
				r.b.saveErr.Store(&err)
			} else {
				r.b.saveErr.Store(nil)
			}
		case evMemoryLow:
			r.memLow.Store(on)
		}
		name += fmt.Sprintf("(%v)", on)
	}
	r.trace = append(r.trace, name)
}
