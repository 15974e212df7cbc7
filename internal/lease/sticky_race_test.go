package lease

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// The sticky race model: workers hammer a few session keys with random,
// concurrent events (release, stream break, idle expiry, max lifetime,
// revoke, crash, delete, waiters leaving, plain acquires that evict warm
// sessions, shutdown) and check what sticky.go promises: one lease at a
// time per key (no two commands ever run on one session at once); each
// session closed exactly once, never saved after its close, never saved
// once lost; a key's generations rise by one per grant; a warm session
// goes only to its own key; capacity is never exceeded; the books balance.

type stickyModel struct {
	m  *Manager
	b  *fakeBackend
	mu sync.Mutex
	// keyOf maps each session to the key it was opened for.
	keyOf map[Session]string
	// lastGen is the last generation granted per key.
	lastGen    map[string]uint64
	violations []string
	grants     atomic.Int64
	warmGrants atomic.Int64
	deletes    atomic.Int64
}

func (sm *stickyModel) fail(format string, args ...any) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if len(sm.violations) < 20 {
		sm.violations = append(sm.violations, fmt.Sprintf(format, args...))
	}
}

// stickySession notes commands running on it, to catch two holders at once.
type stickySession struct {
	*fakeSession
	busy atomic.Int32
}

type stickyBackend struct{ *fakeBackend }

func (b stickyBackend) Open(ctx context.Context, spec any) (Session, error) {
	if chance(3) {
		return nil, errModelOpen
	}
	s, err := b.fakeBackend.Open(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &stickySession{fakeSession: s.(*fakeSession)}, nil
}

func TestStickyRaceModel(t *testing.T) {
	for round := range 4 {
		synctest.Test(t, func(t *testing.T) {
			sm := runStickyRound(round)
			for _, v := range sm.violations {
				t.Error(v)
			}
			t.Logf("round %d: %d grants (%d warm), %d deletes; reclaimed %v", round, sm.grants.Load(), sm.warmGrants.Load(),
				sm.deletes.Load(), sm.m.Stats().Reclaimed)
		})
	}
}

func runStickyRound(round int) *stickyModel {
	fb := &fakeBackend{}
	sm := &stickyModel{b: fb, keyOf: map[Session]string{}, lastGen: map[string]uint64{}}
	sm.m = New(stickyBackend{fb}, Config{
		Capacity: 4, MaxQueue: 64, DefaultTTL: ms(10), MaxTTL: ms(50), DefaultWait: ms(30), MaxWait: ms(100),
		MaxLifetime: ms(40), Jitter: 0.2, OpenTimeout: ms(5), CloseTimeout: ms(10), CheckInterval: ms(3),
		SessionIdleTTL: ms(5 + 5*round),
	})
	keys := []string{"a", "b", "c", "d", "e", "f"}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 12 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := keys[mrand.IntN(len(keys))]
				if w%4 == 0 && chance(50) {
					key = "" // plain leases compete for the capacity warm sessions hold
				}
				sm.cycle(key)
			}
		})
	}
	wg.Go(func() { // an operator deleting sessions now and then
		for {
			select {
			case <-stop:
				return
			case <-time.After(ms(7)):
			}
			if _, err := sm.m.DeleteSession(context.Background(), keys[mrand.IntN(len(keys))]); err == nil {
				sm.deletes.Add(1)
			} else if !errors.Is(err, ErrNotFound) {
				sm.fail("DeleteSession = %v", err)
			}
		}
	})
	wg.Go(func() { // the books, at every millisecond
		for {
			select {
			case <-stop:
				return
			case <-time.After(ms(1)):
			}
			sm.check("tick")
		}
	})
	time.Sleep(ms(400))
	closed := make(chan error, 1)
	go func() { closed <- sm.m.Close(context.Background()) }()
	time.Sleep(ms(1))
	close(stop)
	if err := <-closed; err != nil {
		sm.fail("Close = %v", err)
	}
	wg.Wait()
	sm.check("end")
	st := sm.m.Stats()
	if st.Active != 0 || st.SessionsWarm != 0 || st.SessionsHeld != 0 || fb.Live() != 0 {
		sm.fail("after Close: active %d, warm %d, held %d, backend live %d; want 0", st.Active, st.SessionsWarm, st.SessionsHeld, fb.Live())
	}
	for i, s := range fb.opened() {
		if n := s.closeCalls.Load(); n != 1 {
			sm.fail("session %d closed %d times, want once", i, n)
		}
		if n := s.saveAfter.Load(); n != 0 {
			sm.fail("session %d saved %d times after its close", i, n)
		}
	}
	return sm
}

func (sm *stickyModel) check(when string) {
	st := sm.m.Stats()
	if st.InvariantErr != nil {
		sm.fail("%s: %v", when, st.InvariantErr)
	}
	sm.b.mu.Lock()
	most := sm.b.maxLive
	sm.b.mu.Unlock()
	if most > st.Capacity {
		sm.fail("%s: %d sessions live at once, capacity %d", when, most, st.Capacity)
	}
}

// cycle acquires one lease (sticky when key is set) and ends it one way.
func (sm *stickyModel) cycle(key string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if chance(15) {
		t := time.AfterFunc(ms(mrand.IntN(8)), cancel) // leaves while waiting or opening
		defer t.Stop()
	}
	req := AcquireRequest{SessionKey: key, TTL: ms(2 + mrand.IntN(10)), Wait: ms(1 + mrand.IntN(20))}
	l, err := sm.m.Acquire(ctx, req, nil)
	switch {
	case err == nil:
	case errors.Is(err, context.Canceled), errors.Is(err, ErrNoCapacity), errors.Is(err, ErrBackend),
		errors.Is(err, ErrShuttingDown), errors.Is(err, ErrNotFound):
		time.Sleep(ms(1))
		return
	default:
		sm.fail("Acquire(%q) = %v", key, err)
		time.Sleep(ms(1))
		return
	}
	sm.grants.Add(1)
	s := l.Session().(*stickySession)
	sm.mu.Lock()
	if k, ok := sm.keyOf[s]; ok && k != key {
		sm.violations = append(sm.violations, fmt.Sprintf("session of key %q granted for key %q", k, key))
	}
	sm.keyOf[s] = key
	if key != "" {
		if last := sm.lastGen[key]; l.Generation() <= last {
			sm.violations = append(sm.violations, fmt.Sprintf("key %q: generation %d after %d", key, l.Generation(), last))
		}
		sm.lastGen[key] = l.Generation()
	}
	sm.mu.Unlock()
	if l.WarmSession() {
		sm.warmGrants.Add(1)
	}

	for range mrand.IntN(4) {
		err := sm.m.Do(ctx, l.ID(), func(ctx context.Context, _ Session) error {
			if s.busy.Add(1) != 1 {
				sm.fail("two commands at once on the session of key %q", key)
			}
			defer s.busy.Add(-1)
			select {
			case <-time.After(ms(mrand.IntN(3))):
			case <-ctx.Done():
			}
			return nil
		})
		var re *ReclaimedError
		if err != nil && !errors.As(err, &re) && !errors.Is(err, context.Canceled) {
			sm.fail("Do = %v", err)
		}
	}
	switch n := mrand.IntN(10); {
	case n < 4:
		l.Reclaim(Released, "")
	case n < 5:
		l.Reclaim(StreamClosed, "")
	case n < 6:
		l.Reclaim(Revoked, "")
	case n < 7:
		s.crash(BrowserCrashed, "model crash")
		<-l.Done()
	case n < 8:
		go l.Reclaim(Released, "") // two triggers at once
		l.Reclaim(StreamClosed, "")
	default:
		<-l.Done() // idle TTL or max lifetime
	}
	if r, _ := l.Reason(); (r == BrowserCrashed || r == PageCrashed) && s.saves.Load() > 0 {
		// A crashed session may have been saved by earlier leases, never
		// after the crash: Save after a crash would count in saveAfter only
		// once closed, so check it is not warm any more.
		for _, si := range sm.m.Sessions() {
			if si.Key == key && si.State == SessionWarm && l.Session() == s && s.closeCalls.Load() == 0 {
				sm.fail("key %q: a crashed session was kept warm", key)
			}
		}
	}
}
