package lease

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newManager starts a manager over a fake backend and closes it at the end
// of the test, checking the books balance.
func newManager(t *testing.T, cfg Config) (*Manager, *fakeBackend) {
	t.Helper()
	b := &fakeBackend{}
	if cfg.Jitter == 0 {
		cfg.Jitter = -1 // exact expiries unless a test wants jitter
	}
	m := New(b, cfg)
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
		checkBooks(t, m, b)
	})
	return m, b
}

// checkBooks asserts the invariant and that every session was closed at
// most once (and exactly once when no lease is active).
func checkBooks(t *testing.T, m *Manager, b *fakeBackend) {
	t.Helper()
	st := m.Stats()
	if st.InvariantErr != nil {
		t.Errorf("invariant: %v", st.InvariantErr)
	}
	for i, s := range b.opened() {
		n := s.closeCalls.Load()
		if n > 1 || (st.Active == 0 && n != 1) {
			t.Errorf("session %d closed %d times, want once", i, n)
		}
	}
}

func mustAcquire(t *testing.T, m *Manager, req AcquireRequest) *Lease {
	t.Helper()
	l, err := m.Acquire(context.Background(), req, nil)
	if err != nil {
		t.Fatalf("Acquire(%+v) = %v, want a lease", req, err)
	}
	return l
}

func reasonOf(t *testing.T, l *Lease) Reason {
	t.Helper()
	select {
	case <-l.Done():
	default:
		t.Fatalf("lease %s not reclaimed yet", l.ID())
	}
	r, _ := l.Reason()
	return r
}

func TestReleaseFreesCapacityOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 1})
		l := mustAcquire(t, m, AcquireRequest{})
		if got := b.Live(); got != 1 {
			t.Fatalf("backend live = %d after grant, want 1", got)
		}
		if r := l.Reclaim(Released, ""); r != Released {
			t.Fatalf("Reclaim(Released) = %v, want RELEASED", r)
		}
		if r := l.Reclaim(Revoked, ""); r != Released {
			t.Fatalf("second Reclaim(Revoked) = %v, want the first reason RELEASED", r)
		}
		st := m.Stats()
		if st.Active != 0 || st.Reclaimed[Released] != 1 || st.GrantedTotal != 1 || st.DuplicateTriggers != 1 {
			t.Fatalf("stats = %+v, want active 0, released 1, granted 1, duplicates 1", st)
		}
		if n := b.opened()[0].closeCalls.Load(); n != 1 {
			t.Fatalf("session closed %d times, want 1", n)
		}
		mustAcquire(t, m, AcquireRequest{}) // capacity is back
	})
}

func TestQueueFIFOAndPositions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{Capacity: 1})
		first := mustAcquire(t, m, AcquireRequest{})

		type result struct {
			l   *Lease
			err error
		}
		var mu sync.Mutex
		positions := map[int][]int{}
		results := make([]chan result, 3)
		for i := range results {
			results[i] = make(chan result, 1)
			go func() {
				l, err := m.Acquire(context.Background(), AcquireRequest{}, func(p int) {
					mu.Lock()
					positions[i] = append(positions[i], p)
					mu.Unlock()
				})
				results[i] <- result{l, err}
			}()
			synctest.Wait() // enqueue in order
		}
		if st := m.Stats(); st.Waiting != 3 {
			t.Fatalf("waiting = %d, want 3", st.Waiting)
		}
		first.Reclaim(Released, "")
		synctest.Wait()
		r0 := <-results[0]
		if r0.err != nil {
			t.Fatalf("head waiter: %v, want the lease", r0.err)
		}
		select {
		case r := <-results[1]:
			t.Fatalf("second waiter got %v before the first released", r)
		default:
		}
		mu.Lock()
		want := map[int][]int{0: {1}, 1: {2, 1}, 2: {3, 2}}
		for i, w := range want {
			if !slicesEqual(positions[i], w) {
				t.Errorf("waiter %d positions = %v, want %v", i, positions[i], w)
			}
		}
		mu.Unlock()
		r0.l.Reclaim(Released, "")
		r1 := <-results[1]
		r1.l.Reclaim(Released, "")
		r2 := <-results[2]
		if r2.err != nil {
			t.Fatalf("last waiter: %v", r2.err)
		}
	})
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestWaitTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{Capacity: 1})
		mustAcquire(t, m, AcquireRequest{})
		start := time.Now()
		_, err := m.Acquire(context.Background(), AcquireRequest{Wait: 5 * time.Second}, nil)
		if !errors.Is(err, ErrNoCapacity) {
			t.Fatalf("Acquire(wait=5s) on a full manager = %v, want ErrNoCapacity", err)
		}
		if waited := time.Since(start); waited != 5*time.Second {
			t.Fatalf("waited %v, want 5s", waited)
		}
		st := m.Stats()
		if st.Waiting != 0 || st.AcquireFailures != 1 {
			t.Fatalf("stats = %+v, want waiting 0 and one failure", st)
		}
	})
}

func TestCancelledWaiterLeavesAtOnceAndIsNeverGranted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 1})
		first := mustAcquire(t, m, AcquireRequest{})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := m.Acquire(ctx, AcquireRequest{}, nil)
			errc <- err
		}()
		synctest.Wait()
		var lastPos int
		third := make(chan *Lease, 1)
		go func() {
			l, _ := m.Acquire(context.Background(), AcquireRequest{}, func(p int) { lastPos = p })
			third <- l
		}()
		synctest.Wait()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Acquire = %v, want context.Canceled", err)
		}
		synctest.Wait()
		if st := m.Stats(); st.Waiting != 1 || lastPos != 1 {
			t.Fatalf("after cancel: waiting %d, third's position %d; want 1 and 1", st.Waiting, lastPos)
		}
		first.Reclaim(Released, "")
		l := <-third
		if l == nil {
			t.Fatal("third waiter got no lease")
		}
		if got := len(b.opened()); got != 2 {
			t.Fatalf("sessions opened = %d, want 2 (the cancelled waiter must not get one)", got)
		}
	})
}

// Withdraw takes a waiter out of the queue (it moves to another broker of
// a fleet) without counting a failure or opening a session; once the
// waiter has its capacity, Withdraw is no longer heard.
func TestWithdrawLeavesTheQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 1})
		first := mustAcquire(t, m, AcquireRequest{})
		withdraw := make(chan struct{})
		errc := make(chan error, 1)
		go func() {
			_, err := m.Acquire(context.Background(), AcquireRequest{Withdraw: withdraw}, nil)
			errc <- err
		}()
		synctest.Wait()
		if st := m.Stats(); st.Waiting != 1 {
			t.Fatalf("waiting %d, want 1", st.Waiting)
		}
		close(withdraw)
		if err := <-errc; !errors.Is(err, ErrWithdrawn) {
			t.Fatalf("withdrawn Acquire = %v, want ErrWithdrawn", err)
		}
		if st := m.Stats(); st.Waiting != 0 || st.AcquireFailures != 0 {
			t.Fatalf("after the withdrawal: waiting %d, failures %d; want none", st.Waiting, st.AcquireFailures)
		}

		// Granted, then withdrawn: the lease stands.
		late := make(chan struct{})
		got := make(chan *Lease, 1)
		go func() {
			l, _ := m.Acquire(context.Background(), AcquireRequest{Withdraw: late}, nil)
			got <- l
		}()
		synctest.Wait()
		first.Reclaim(Released, "")
		l := <-got
		close(late)
		synctest.Wait()
		if l == nil {
			t.Fatal("the waiter granted before its withdrawal got no lease")
		}
		select {
		case <-l.Done():
			t.Fatalf("the lease granted before the withdrawal was reclaimed: %v", reasonOf(t, l))
		default:
		}
		if n := len(b.opened()); n != 2 {
			t.Fatalf("sessions opened = %d, want 2 (none for the withdrawn waiter)", n)
		}
	})
}

func TestQueueFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// MaxQueue 3, not 1: the message must count the waiters, not
		// repeat a constant.
		m, _ := newManager(t, Config{Capacity: 1, MaxQueue: 3})
		mustAcquire(t, m, AcquireRequest{})
		for range 3 {
			go m.Acquire(context.Background(), AcquireRequest{Wait: time.Second}, nil)
			synctest.Wait()
		}
		_, err := m.Acquire(context.Background(), AcquireRequest{}, nil)
		if !errors.Is(err, ErrQueueFull) {
			t.Fatalf("Acquire past MaxQueue = %v, want ErrQueueFull", err)
		}
		if want := "3 acquires waiting (limit 3)"; !strings.Contains(err.Error(), want) {
			t.Fatalf("Acquire past MaxQueue = %q, want the queue length and limit: %q", err, want)
		}
		if st := m.Stats(); st.Waiting != 3 || st.AcquireFailures != 1 {
			t.Fatalf("stats after the refusal: waiting %d, failures %d; want 3 and 1 (the refused acquire never queued)",
				st.Waiting, st.AcquireFailures)
		}
		time.Sleep(time.Second) // let the waiters time out inside the bubble
		synctest.Wait()
	})
}

func TestIdleTTLAndRenew(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{})
		l := mustAcquire(t, m, AcquireRequest{TTL: 10 * time.Second})
		granted := time.Now()
		time.Sleep(9 * time.Second)
		exp, err := l.Renew()
		if err != nil {
			t.Fatalf("Renew at 9s: %v", err)
		}
		if want := granted.Add(19 * time.Second); !exp.Equal(want) {
			t.Fatalf("Renew expiry = %v, want %v", exp, want)
		}
		<-l.Done()
		if got := time.Since(granted); got != 19*time.Second {
			t.Fatalf("expired after %v, want 19s", got)
		}
		if r := reasonOf(t, l); r != TTLExpired {
			t.Fatalf("reason = %v, want TTL_EXPIRED", r)
		}
		if _, err := l.Renew(); !isReclaimed(err, TTLExpired) {
			t.Fatalf("Renew after expiry = %v, want ReclaimedError(TTL_EXPIRED)", err)
		}
		if b.Live() != 0 {
			t.Fatalf("backend live = %d after expiry, want 0", b.Live())
		}
	})
}

func isReclaimed(err error, r Reason) bool {
	var re *ReclaimedError
	return errors.As(err, &re) && re.Reason == r
}

func TestCommandsKeepLeaseAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{})
		l := mustAcquire(t, m, AcquireRequest{TTL: 10 * time.Second})
		// A command running longer than the TTL must not let it expire.
		err := m.Do(context.Background(), l.ID(), func(ctx context.Context, s Session) error {
			time.Sleep(25 * time.Second)
			return nil
		})
		if err != nil {
			t.Fatalf("Do(25s command) = %v, want nil", err)
		}
		ended := time.Now()
		<-l.Done()
		if got := time.Since(ended); got != 10*time.Second {
			t.Fatalf("expired %v after the command ended, want 10s", got)
		}
	})
}

func TestMaxLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{MaxLifetime: time.Minute})
		l := mustAcquire(t, m, AcquireRequest{TTL: 20 * time.Second})
		start := time.Now()
		ended := make(chan time.Time, 1)
		go func() { <-l.Done(); ended <- time.Now() }()
		for range 10 {
			time.Sleep(10 * time.Second)
			l.Renew() // keeps it from idling out; fails once it is gone
		}
		if got := (<-ended).Sub(start); got != time.Minute {
			t.Fatalf("lease lived %v, want the max lifetime 1m", got)
		}
		if r := reasonOf(t, l); r != MaxLifetime {
			t.Fatalf("reason = %v, want MAX_LIFETIME", r)
		}
	})
}

func TestJitterSpreadsExpiries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{Jitter: 0.5, Capacity: 20})
		seen := map[time.Time]bool{}
		start := time.Now()
		for range 20 {
			l := mustAcquire(t, m, AcquireRequest{TTL: 10 * time.Second})
			exp := l.ExpiresAt()
			if d := exp.Sub(start); d < 10*time.Second || d >= 15*time.Second {
				t.Fatalf("expiry %v after grant, want within [10s, 15s)", d)
			}
			seen[exp] = true
		}
		if len(seen) < 10 {
			t.Fatalf("20 leases granted together share %d expiries, want them spread", len(seen))
		}
	})
}

func TestReclaimCancelsInFlightCommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{})
		l := mustAcquire(t, m, AcquireRequest{})
		errc := make(chan error, 1)
		go func() {
			errc <- m.Do(context.Background(), l.ID(), func(ctx context.Context, s Session) error {
				<-ctx.Done() // a command that only stops when cancelled
				return ctx.Err()
			})
		}()
		synctest.Wait()
		if r, err := m.Reclaim(l.ID(), Revoked, "by test"); err != nil || r != Revoked {
			t.Fatalf("Reclaim = %v, %v; want REVOKED", r, err)
		}
		err := <-errc
		var re *ReclaimedError
		if !errors.As(err, &re) || re.Reason != Revoked || !re.InFlight {
			t.Fatalf("in-flight command = %v, want in-flight ReclaimedError(REVOKED)", err)
		}
		if n := b.opened()[0].closeCalls.Load(); n != 1 {
			t.Fatalf("close calls = %d, want 1", n)
		}
		err = m.Do(context.Background(), l.ID(), func(context.Context, Session) error { return nil })
		if !errors.As(err, &re) || re.Reason != Revoked || re.InFlight {
			t.Fatalf("command after reclaim = %v, want ReclaimedError(REVOKED), not in flight", err)
		}
	})
}

func TestCommandsRunInArrivalOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{})
		l := mustAcquire(t, m, AcquireRequest{})
		var order []int
		var running, maxRunning int
		var wg sync.WaitGroup
		for i := range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.Do(context.Background(), l.ID(), func(ctx context.Context, s Session) error {
					running++
					maxRunning = max(maxRunning, running)
					order = append(order, i)
					time.Sleep(time.Second)
					running--
					return nil
				})
			}()
			synctest.Wait()
		}
		wg.Wait()
		if !slicesEqual(order, []int{0, 1, 2, 3, 4}) || maxRunning != 1 {
			t.Fatalf("order %v, most at once %d; want 0..4 one at a time", order, maxRunning)
		}
	})
}

func TestCommandDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{})
		l := mustAcquire(t, m, AcquireRequest{})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := m.Do(ctx, l.ID(), func(ctx context.Context, s Session) error {
			<-ctx.Done()
			return ctx.Err()
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Do past its deadline = %v, want DeadlineExceeded", err)
		}
		if _, err := l.Renew(); err != nil {
			t.Fatalf("lease after a timed-out command: %v, want it usable", err)
		}
	})
}

func TestSimultaneousTriggersReclaimOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 50})
		triggers := []Reason{Released, StreamClosed, Revoked, BrowserCrashed}
		for range 50 {
			l := mustAcquire(t, m, AcquireRequest{TTL: time.Second})
			var wg sync.WaitGroup
			got := make([]Reason, len(triggers))
			for i, r := range triggers {
				wg.Add(1)
				go func() { defer wg.Done(); got[i] = l.Reclaim(r, "") }()
			}
			wg.Wait()
			for _, r := range got {
				if r != got[0] {
					t.Fatalf("triggers saw reasons %v, want one", got)
				}
			}
		}
		st := m.Stats()
		if st.ReclaimedTotal != 50 || st.DuplicateTriggers != 150 {
			t.Fatalf("reclaimed %d, duplicates %d; want 50 and 150", st.ReclaimedTotal, st.DuplicateTriggers)
		}
		for i, s := range b.opened() {
			if n := s.closeCalls.Load(); n != 1 {
				t.Fatalf("session %d closed %d times", i, n)
			}
		}
	})
}

func TestLostSessionReclaims(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 2})
		a := mustAcquire(t, m, AcquireRequest{})
		other := mustAcquire(t, m, AcquireRequest{})
		b.opened()[0].crash(PageCrashed, "renderer died")
		<-a.Done()
		r, msg := a.Reason()
		if r != PageCrashed || msg != "renderer died" {
			t.Fatalf("lost lease reason = %v %q, want PAGE_CRASHED \"renderer died\"", r, msg)
		}
		if _, err := other.Renew(); err != nil {
			t.Fatalf("other lease: %v, want untouched", err)
		}
	})
}

func TestCloseReclaimsEverythingWithShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &fakeBackend{}
		m := New(b, Config{Capacity: 2})
		l1 := mustAcquire(t, m, AcquireRequest{})
		l2 := mustAcquire(t, m, AcquireRequest{})
		errc := make(chan error, 1)
		go func() { _, err := m.Acquire(context.Background(), AcquireRequest{}, nil); errc <- err }()
		synctest.Wait()
		if err := m.Close(context.Background()); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for _, l := range []*Lease{l1, l2} {
			if r := reasonOf(t, l); r != Shutdown {
				t.Fatalf("lease reason = %v, want SHUTDOWN", r)
			}
		}
		if err := <-errc; !errors.Is(err, ErrShuttingDown) {
			t.Fatalf("waiter = %v, want ErrShuttingDown", err)
		}
		if _, err := m.Acquire(context.Background(), AcquireRequest{}, nil); !errors.Is(err, ErrShuttingDown) {
			t.Fatalf("Acquire after Close = %v, want ErrShuttingDown", err)
		}
		checkBooks(t, m, b)
	})
}

func TestGrantDuringShutdownIsReclaimed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &fakeBackend{openGate: make(chan struct{})}
		m := New(b, Config{})
		errc := make(chan error, 1)
		go func() { _, err := m.Acquire(context.Background(), AcquireRequest{}, nil); errc <- err }()
		synctest.Wait() // the open is in progress
		closed := make(chan error, 1)
		go func() { closed <- m.Close(context.Background()) }()
		synctest.Wait()
		close(b.openGate)
		if err := <-errc; !errors.Is(err, ErrShuttingDown) {
			t.Fatalf("Acquire granted during Close = %v, want ErrShuttingDown", err)
		}
		if err := <-closed; err != nil {
			t.Fatalf("Close: %v", err)
		}
		if st := m.Stats(); st.Reclaimed[Shutdown] != 1 || b.Live() != 0 {
			t.Fatalf("stats %+v, live %d; want one SHUTDOWN reclaim and nothing live", st, b.Live())
		}
	})
}

func TestAcquirerGoneDuringOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 1})
		b.openGate = make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { _, err := m.Acquire(ctx, AcquireRequest{}, nil); errc <- err }()
		synctest.Wait()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire cancelled during open = %v, want Canceled", err)
		}
		if st := m.Stats(); st.Opening != 0 || st.Active != 0 {
			t.Fatalf("stats = %+v, want the capacity back", st)
		}
	})
}

func TestOpenFailureReturnsCapacity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 1})
		b.openErr = errors.New("chromium exploded")
		if _, err := m.Acquire(context.Background(), AcquireRequest{}, nil); !errors.Is(err, ErrBackend) {
			t.Fatalf("Acquire with a failing backend = %v, want ErrBackend", err)
		}
		b.openErr = nil
		mustAcquire(t, m, AcquireRequest{})
		if st := m.Stats(); st.AcquireFailures != 1 || st.GrantedTotal != 1 {
			t.Fatalf("stats = %+v, want one failure and one grant", st)
		}
	})
}

func TestHungCloseStillFreesCapacity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 1, CloseTimeout: 3 * time.Second})
		b.closeHang.Store(true)
		l := mustAcquire(t, m, AcquireRequest{})
		start := time.Now()
		l.Reclaim(Released, "")
		if got := time.Since(start); got != 3*time.Second {
			t.Fatalf("reclaim with a hung close took %v, want the close timeout 3s", got)
		}
		b.closeHang.Store(false)
		mustAcquire(t, m, AcquireRequest{})
	})
}

func TestBadArgumentsAndUnknownIDs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{MaxTTL: time.Hour})
		for _, req := range []AcquireRequest{
			{TTL: -time.Second},
			{Wait: -time.Second},
			{MaxLifetime: -time.Second},
			{TTL: 2 * time.Hour},
		} {
			if _, err := m.Acquire(context.Background(), req, nil); !errors.Is(err, ErrInvalid) {
				t.Errorf("Acquire(%+v) = %v, want ErrInvalid", req, err)
			}
		}
		if _, err := m.Renew("l_nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Renew(unknown) = %v, want ErrNotFound", err)
		}
		if _, err := m.Reclaim("l_nope", Revoked, ""); !errors.Is(err, ErrNotFound) {
			t.Errorf("Reclaim(unknown) = %v, want ErrNotFound", err)
		}
		if err := m.Do(context.Background(), "l_nope", nil); !errors.Is(err, ErrNotFound) {
			t.Errorf("Do(unknown) = %v, want ErrNotFound", err)
		}
		if st := m.Stats(); st.GrantedTotal != 0 {
			t.Errorf("bad requests granted %d leases", st.GrantedTotal)
		}
	})
}

func TestInvariantCheckCatchesDrift(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{CheckInterval: time.Second})
		mustAcquire(t, m, AcquireRequest{})
		time.Sleep(1500 * time.Millisecond)
		if st := m.Stats(); st.InvariantViolations != 0 || st.InvariantErr != nil {
			t.Fatalf("healthy manager: %+v", st)
		}
		// A session that leaks outside the manager's books.
		b.mu.Lock()
		b.live++
		b.mu.Unlock()
		time.Sleep(time.Second)
		if st := m.Stats(); st.InvariantViolations == 0 || st.InvariantErr == nil {
			t.Fatalf("drifted backend not noticed: %+v", st)
		}
		b.mu.Lock()
		b.live--
		b.mu.Unlock()
	})
}

func TestListAndGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{Capacity: 3})
		a := mustAcquire(t, m, AcquireRequest{Labels: map[string]string{"team": "a"}})
		time.Sleep(time.Second)
		mustAcquire(t, m, AcquireRequest{Labels: map[string]string{"team": "b"}})
		if got := m.List(Filter{}); len(got) != 2 || got[0].ID != a.ID() {
			t.Fatalf("List(nil) = %+v, want 2 leases oldest first", got)
		}
		got := m.List(Filter{Labels: map[string]string{"team": "a"}})
		if len(got) != 1 || got[0].ID != a.ID() {
			t.Fatalf("List(team=a) = %+v, want lease %s", got, a.ID())
		}
		m.Do(context.Background(), a.ID(), func(context.Context, Session) error { return nil })
		info, err := m.Get(a.ID())
		if err != nil || info.Commands != 1 || info.State != StateActive {
			t.Fatalf("Get = %+v, %v; want 1 command, ACTIVE", info, err)
		}
	})
}

// sessionLister adds Sessions to the fake backend.
type listingBackend struct{ *fakeBackend }

func (b listingBackend) Sessions() []Session {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Session
	for _, s := range b.sessions {
		if s.closeCalls.Load() == 0 {
			out = append(out, s)
		}
	}
	return out
}

func TestAuditorClosesOrphanSessionsAndLogsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb := &fakeBackend{}
		m := New(listingBackend{fb}, Config{CheckInterval: time.Second, Jitter: -1})
		defer m.Close(context.Background())
		l := mustAcquire(t, m, AcquireRequest{})
		// A session opened behind the manager's back: nobody owns it.
		orphan, _ := fb.Open(context.Background(), nil)
		time.Sleep(1500 * time.Millisecond) // first audit: a suspect, and the books are off
		if st := m.Stats(); st.OrphansClosed != 0 || st.InvariantViolations != 1 {
			t.Fatalf("after one audit: %+v; want the violation counted once and no orphan closed yet", st)
		}
		time.Sleep(time.Second) // second audit: closed
		if n := orphan.(*fakeSession).closeCalls.Load(); n != 1 {
			t.Fatalf("orphan closed %d times, want 1", n)
		}
		time.Sleep(time.Second)
		st := m.Stats()
		if st.OrphansClosed != 1 || st.InvariantViolations != 1 || st.InvariantErr != nil {
			t.Fatalf("after the sweep: %+v; want 1 orphan closed, the violation counted once, invariant ok", st)
		}
		if n := fb.opened()[0].closeCalls.Load(); n != 0 {
			t.Fatalf("the leased session was closed %d times by the auditor", n)
		}
		l.Reclaim(Released, "")
	})
}

func TestDrainRefusesNewLeasesAndKeepsLiveOnes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{Capacity: 1})
		live := mustAcquire(t, m, AcquireRequest{})
		errc := make(chan error, 1)
		go func() { _, err := m.Acquire(context.Background(), AcquireRequest{}, nil); errc <- err }()
		synctest.Wait()
		m.Drain(true)
		if err := <-errc; !errors.Is(err, ErrDraining) {
			t.Fatalf("queued acquire when draining began = %v, want ErrDraining", err)
		}
		if _, err := m.Acquire(context.Background(), AcquireRequest{}, nil); !errors.Is(err, ErrDraining) {
			t.Fatalf("Acquire while draining = %v, want ErrDraining", err)
		}
		if _, err := live.Renew(); err != nil {
			t.Fatalf("live lease while draining: %v, want it untouched", err)
		}
		if st := m.Stats(); !st.Draining || st.Active != 1 {
			t.Fatalf("stats while draining = %+v", st)
		}
		live.Reclaim(Released, "")
		m.Drain(false)
		mustAcquire(t, m, AcquireRequest{})
	})
}

func TestPrincipalsOwnTheirLeasesAndHaveLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{Capacity: 4, PrincipalLimit: func(p string) int {
			if p == "alice" {
				return 1
			}
			return 0
		}})
		a := mustAcquire(t, m, AcquireRequest{Principal: "alice"})
		_, err := m.Acquire(context.Background(), AcquireRequest{Principal: "alice"}, nil)
		if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), `"alice"`) {
			t.Fatalf("second acquire of alice = %v, want ErrLimit naming her", err)
		}
		mustAcquire(t, m, AcquireRequest{Principal: "bob"})
		mustAcquire(t, m, AcquireRequest{Principal: "bob"})
		noop := func(context.Context, Session) error { return nil }
		if err := m.DoCommand(context.Background(), "bob", a.ID(), "", noop); !errors.Is(err, ErrNotFound) {
			t.Fatalf("bob using alice's lease = %v, want ErrNotFound", err)
		}
		if err := m.DoCommand(context.Background(), "alice", a.ID(), "", noop); err != nil {
			t.Fatalf("alice using her lease = %v", err)
		}
		if got := m.List(Filter{Principal: "bob"}); len(got) != 2 || got[0].Principal != "bob" {
			t.Fatalf("List(principal bob) = %+v, want bob's two", got)
		}
		a.Reclaim(Released, "")
		if err := m.DoCommand(context.Background(), "bob", a.ID(), "", noop); !errors.Is(err, ErrNotFound) {
			t.Fatalf("bob using alice's reclaimed lease = %v, want ErrNotFound, not its reason", err)
		}
		var re *ReclaimedError
		if err := m.DoCommand(context.Background(), "alice", a.ID(), "", noop); !errors.As(err, &re) {
			t.Fatalf("alice using her reclaimed lease = %v, want its reason", err)
		}
		// The limit counts live leases: after the release alice may again.
		mustAcquire(t, m, AcquireRequest{Principal: "alice"})
	})
}

// In a fleet, a principal's leases on the other brokers count toward its
// limit here; Principals reports its leases here for the others to count.
func TestPrincipalLimitCountsLeasesElsewhere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var elsewhere atomic.Int32
		m, _ := newManager(t, Config{Capacity: 4,
			PrincipalLimit:     func(string) int { return 3 },
			PrincipalElsewhere: func(p string) int { return int(elsewhere.Load()) }})
		mustAcquire(t, m, AcquireRequest{Principal: "alice"})
		mustAcquire(t, m, AcquireRequest{Principal: "bob"})
		if got := m.Load().Principals; got["alice"] != 1 || got["bob"] != 1 || len(got) != 2 {
			t.Fatalf("Load().Principals = %v, want alice 1, bob 1", got)
		}
		elsewhere.Store(2) // 1 here + 2 elsewhere = the limit of 3
		_, err := m.Acquire(context.Background(), AcquireRequest{Principal: "alice"}, nil)
		if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "1 leases here and 2 on other brokers") {
			t.Fatalf("acquire of alice with 2 leases elsewhere = %v, want ErrLimit counting both", err)
		}
		elsewhere.Store(1)
		mustAcquire(t, m, AcquireRequest{Principal: "alice"})
		if got := m.Load().Principals; got["alice"] != 2 {
			t.Fatalf("Load().Principals = %v, want alice 2", got)
		}
	})
}

// OnChange hears every change of the load, after the manager's lock is
// released (it reads Free, which would deadlock otherwise), with the new
// load already in place.
func TestOnChangeFollowsTheLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var m *Manager
		var mu sync.Mutex
		var seen []int // Free as each call saw it
		m, _ = newManager(t, Config{Capacity: 2, SessionIdleTTL: time.Minute, OnChange: func() {
			free := m.Free()
			mu.Lock()
			seen = append(seen, free)
			mu.Unlock()
		}})
		want := func(what string, free ...int) {
			t.Helper()
			synctest.Wait()
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(seen, free) {
				t.Fatalf("after %s: OnChange saw Free %v, want %v", what, seen, free)
			}
			seen = nil
		}
		plain := mustAcquire(t, m, AcquireRequest{})
		want("a grant", 1)
		sticky := mustAcquire(t, m, AcquireRequest{SessionKey: "k"})
		want("a second grant", 0)
		plain.Reclaim(Released, "")
		want("a reclaim", 1)
		sticky.Reclaim(Released, "")
		want("a sticky lease's end (its session stays warm, with its capacity)", 1)
		time.Sleep(time.Minute)
		want("the warm session's close", 2)
		m.Drain(true)
		want("drain", 0)
		m.Drain(true)
		want("drain again")
		m.Drain(false)
		want("undrain", 2)
	})
}
