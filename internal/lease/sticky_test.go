package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// failingStore is a SessionStore whose NextGeneration fails.
type failingStore struct{ memStore }

func (*failingStore) NextGeneration(string) (uint64, error) { return 0, errors.New("disk full") }

func acquireKey(t *testing.T, m *Manager, key string) *Lease {
	t.Helper()
	return mustAcquire(t, m, AcquireRequest{SessionKey: key})
}

func TestStickyReuseKeepsTheSessionWarm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 2, SessionIdleTTL: time.Minute})
		first := acquireKey(t, m, "shop")
		if first.Generation() != 1 || first.WarmSession() {
			t.Fatalf("first grant: generation %d warm %v, want 1 and cold", first.Generation(), first.WarmSession())
		}
		first.Reclaim(Released, "")
		s := b.opened()[0]
		if s.saves.Load() != 1 || s.closeCalls.Load() != 0 {
			t.Fatalf("after release: %d saves, %d closes; want saved once and kept open", s.saves.Load(), s.closeCalls.Load())
		}
		if st := m.Stats(); st.SessionsWarm != 1 || st.Active != 0 {
			t.Fatalf("stats after release: warm %d active %d, want 1 and 0", st.SessionsWarm, st.Active)
		}
		second := acquireKey(t, m, "shop")
		if second.Session() != first.Session() || !second.WarmSession() || second.Generation() != 2 {
			t.Fatalf("second grant: same session %v, warm %v, generation %d; want the same warm session, generation 2",
				second.Session() == first.Session(), second.WarmSession(), second.Generation())
		}
		if n := len(b.opened()); n != 1 {
			t.Fatalf("backend opened %d sessions, want 1", n)
		}
		other := acquireKey(t, m, "bank")
		if other.Session() == first.Session() || other.Generation() != 1 {
			t.Fatalf("another key got session %v generation %d, want its own, generation 1", other.Session(), other.Generation())
		}
		if got := m.List(Filter{SessionKey: "bank"}); len(got) != 1 || got[0].ID != other.ID() || got[0].Generation != 1 {
			t.Fatalf("List(session bank) = %+v, want the bank lease", got)
		}
	})
}

func TestStickyOneHolderAtATime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{Capacity: 4})
		holder := acquireKey(t, m, "k")
		var positions []int
		var mu sync.Mutex
		got := make(chan *Lease, 1)
		go func() {
			l, err := m.Acquire(context.Background(), AcquireRequest{SessionKey: "k", Wait: time.Minute}, func(p int) {
				mu.Lock()
				positions = append(positions, p)
				mu.Unlock()
			})
			if err != nil {
				t.Errorf("waiting Acquire = %v", err)
			}
			got <- l
		}()
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("a second acquire got the session while a lease held it")
		default:
		}
		// A third acquire that cannot wait long enough leaves on time.
		start := time.Now()
		_, err := m.Acquire(context.Background(), AcquireRequest{SessionKey: "k", Wait: time.Second}, nil)
		if !errors.Is(err, ErrNoCapacity) || time.Since(start) != time.Second {
			t.Fatalf("impatient Acquire = %v after %v, want ErrNoCapacity after 1s", err, time.Since(start))
		}
		holder.Reclaim(Released, "")
		next := <-got
		if next.Session() != holder.Session() || next.Generation() != 2 {
			t.Fatalf("next holder: same session %v generation %d, want the same, 2", next.Session() == holder.Session(), next.Generation())
		}
		mu.Lock()
		defer mu.Unlock()
		if len(positions) == 0 || positions[0] != 1 {
			t.Fatalf("queue positions %v, want [1]", positions)
		}
	})
}

// Several acquires waiting for one session key get it in the order they
// came, each told its place in the key's line as it moves up, and each
// grant's generation is one more than the last.
func TestStickyWaitersGrantedFIFO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 4, SessionIdleTTL: time.Minute})
		holder := acquireKey(t, m, "k")

		const n = 3
		var mu sync.Mutex
		positions := make([][]int, n)
		got := make([]chan *Lease, n)
		for i := range n {
			got[i] = make(chan *Lease, 1)
			go func() {
				l, err := m.Acquire(context.Background(), AcquireRequest{SessionKey: "k", Wait: time.Minute}, func(p int) {
					mu.Lock()
					positions[i] = append(positions[i], p)
					mu.Unlock()
				})
				if err != nil {
					t.Errorf("waiter %d: Acquire(k) = %v, want the session", i, err)
				}
				got[i] <- l
			}()
			synctest.Wait() // in line before the next one comes
		}
		granted := func(i int) *Lease {
			t.Helper()
			synctest.Wait()
			for j := range n {
				if j == i {
					continue
				}
				select {
				case l := <-got[j]:
					t.Fatalf("waiter %d got the session (lease %v) when waiter %d's turn came", j, l, i)
				default:
				}
			}
			select {
			case l := <-got[i]:
				return l
			default:
				t.Fatalf("waiter %d has no grant after the previous holder released", i)
				return nil
			}
		}

		prev := holder
		for i := range n {
			prev.Reclaim(Released, "")
			l := granted(i)
			if l.Session() != holder.Session() || !l.WarmSession() || l.Generation() != uint64(i+2) {
				t.Fatalf("waiter %d's grant: same session %v, warm %v, generation %d; want the warm session, generation %d",
					i, l.Session() == holder.Session(), l.WarmSession(), l.Generation(), i+2)
			}
			prev = l
		}
		prev.Reclaim(Released, "")
		if got := len(b.opened()); got != 1 {
			t.Fatalf("backend opened %d sessions, want 1 (every waiter takes the warm one)", got)
		}
		mu.Lock()
		defer mu.Unlock()
		want := [][]int{{1}, {2, 1}, {3, 2, 1}}
		for i := range n {
			if !slicesEqual(positions[i], want[i]) {
				t.Errorf("waiter %d positions = %v, want %v", i, positions[i], want[i])
			}
		}
	})
}

func TestStickyWarmSessionClosesAfterIdleTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 1, SessionIdleTTL: time.Minute})
		acquireKey(t, m, "k").Reclaim(TTLExpired, "")
		time.Sleep(time.Minute - time.Millisecond)
		synctest.Wait()
		s := b.opened()[0]
		if s.closeCalls.Load() != 0 {
			t.Fatal("warm session closed before its idle TTL")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if s.closeCalls.Load() != 1 || s.saves.Load() != 2 {
			t.Fatalf("after the idle TTL: %d closes, %d saves; want closed once, saved at release and before close", s.closeCalls.Load(), s.saves.Load())
		}
		if st := m.Stats(); st.SessionsWarm != 0 || b.Live() != 0 || len(m.Sessions()) != 0 {
			t.Fatalf("after close: %d warm, %d live, sessions %+v; want none", st.SessionsWarm, b.Live(), m.Sessions())
		}
		l := acquireKey(t, m, "k")
		if l.WarmSession() || l.Generation() != 2 {
			t.Fatalf("after the warm session closed: warm %v generation %d; want a new session, generation 2", l.WarmSession(), l.Generation())
		}
	})
}

func TestStickyCrashedSessionIsNotKeptOrSaved(t *testing.T) {
	for _, r := range []Reason{BrowserCrashed, PageCrashed} {
		t.Run(r.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m, b := newManager(t, Config{Capacity: 1})
				l := acquireKey(t, m, "k")
				s := b.opened()[0]
				s.crash(r, "boom")
				<-l.Done()
				if s.saves.Load() != 0 || s.closeCalls.Load() != 1 {
					t.Fatalf("crashed session: %d saves, %d closes; want closed once, never saved", s.saves.Load(), s.closeCalls.Load())
				}
				if n := acquireKey(t, m, "k"); n.WarmSession() {
					t.Fatal("a crashed session was handed out warm")
				}
			})
		})
	}
}

func TestStickyWarmSessionLostWhileWarmIsClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 1})
		acquireKey(t, m, "k").Reclaim(Released, "")
		s := b.opened()[0]
		s.crash(BrowserCrashed, "browser gone")
		synctest.Wait()
		if s.closeCalls.Load() != 1 || s.saves.Load() != 1 || m.Stats().SessionsWarm != 0 {
			t.Fatalf("lost warm session: %d closes, %d saves, %d warm; want closed, not saved again, none warm",
				s.closeCalls.Load(), s.saves.Load(), m.Stats().SessionsWarm)
		}
	})
}

func TestStickyWarmSessionYieldsCapacity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 1, SessionIdleTTL: time.Hour})
		acquireKey(t, m, "k").Reclaim(Released, "")
		l := mustAcquire(t, m, AcquireRequest{Wait: time.Second})
		s := b.opened()[0]
		if s.closeCalls.Load() != 1 || s.saves.Load() != 2 {
			t.Fatalf("evicted warm session: %d closes, %d saves; want saved then closed", s.closeCalls.Load(), s.saves.Load())
		}
		if l.Session() == s || m.Stats().SessionsWarm != 0 {
			t.Fatal("the plain acquire did not get a new session in the evicted one's place")
		}
	})
}

func TestStickyDelete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 2})
		held := acquireKey(t, m, "held")
		acquireKey(t, m, "warm").Reclaim(Released, "")
		r, err := m.DeleteSession(context.Background(), "held")
		if err != nil || r != Revoked || reasonOf(t, held) != Revoked {
			t.Fatalf("DeleteSession(held) = %v, %v; lease reason %v; want REVOKED", r, err, reasonOf(t, held))
		}
		if _, err := m.DeleteSession(context.Background(), "warm"); err != nil {
			t.Fatalf("DeleteSession(warm) = %v", err)
		}
		for i, s := range b.opened() {
			if s.closeCalls.Load() != 1 {
				t.Errorf("session %d closed %d times, want once", i, s.closeCalls.Load())
			}
		}
		if held := b.opened()[0]; held.saves.Load() != 0 {
			t.Errorf("a deleted session was saved %d times", held.saves.Load())
		}
		if warm := b.opened()[1]; warm.saves.Load() != 1 {
			t.Errorf("the warm session was saved %d times, want only at its release", warm.saves.Load())
		}
		if _, err := m.DeleteSession(context.Background(), "nobody"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("DeleteSession(unknown) = %v, want ErrNotFound", err)
		}
		if l := acquireKey(t, m, "held"); l.Generation() != 2 {
			t.Fatalf("after delete the generation is %d, want 2: fencing numbers never repeat", l.Generation())
		}
	})
}

func TestStickyDeleteWhileAcquiresWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 2})
		holder := acquireKey(t, m, "k")
		waiter := make(chan *Lease, 1)
		werr := make(chan error, 1)
		go func() {
			l, err := m.Acquire(context.Background(), AcquireRequest{SessionKey: "k", Wait: time.Minute}, nil)
			werr <- err
			waiter <- l
		}()
		synctest.Wait()
		if _, err := m.DeleteSession(context.Background(), "k"); err != nil {
			t.Fatalf("DeleteSession = %v", err)
		}
		if err := <-werr; err != nil {
			t.Fatalf("waiting Acquire = %v", err)
		}
		l := <-waiter
		if l.Session() == holder.Session() || l.WarmSession() {
			t.Fatal("the waiter got the deleted session")
		}
		if b.opened()[0].saves.Load() != 0 {
			t.Fatal("the deleted session was saved")
		}
	})
}

func TestStickyShutdownSavesAndClosesWarmSessions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &fakeBackend{}
		m := New(b, Config{Capacity: 2, Jitter: -1})
		acquireKey(t, m, "warm").Reclaim(Released, "")
		held := acquireKey(t, m, "held")
		if err := m.Close(context.Background()); err != nil {
			t.Fatalf("Close = %v", err)
		}
		if reasonOf(t, held) != Shutdown {
			t.Fatalf("held lease reason %v, want SHUTDOWN", reasonOf(t, held))
		}
		for i, s := range b.opened() {
			if s.closeCalls.Load() != 1 || s.saves.Load() == 0 || s.saveAfter.Load() != 0 {
				t.Errorf("session %d: %d closes, %d saves (%d after close); want saved, then closed once",
					i, s.closeCalls.Load(), s.saves.Load(), s.saveAfter.Load())
			}
		}
		checkBooks(t, m, b)
	})
}

func TestStickyGenerationFailureKeepsTheSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, b := newManager(t, Config{Capacity: 1, Sessions: &failingStore{}})
		_, err := m.Acquire(context.Background(), AcquireRequest{SessionKey: "k"}, nil)
		if !errors.Is(err, ErrBackend) {
			t.Fatalf("Acquire with a failing store = %v, want ErrBackend", err)
		}
		if st := m.Stats(); st.Active != 0 || st.SessionsWarm != 1 || b.Live() != 1 {
			t.Fatalf("after the failure: active %d warm %d live %d; want the session kept warm", st.Active, st.SessionsWarm, b.Live())
		}
	})
}

func TestStickyBadKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{Capacity: 1})
		for _, k := range []string{string(make([]byte, MaxSessionKey+1)), "a\x00b", "\xff", "tab\there"} {
			if _, err := m.Acquire(context.Background(), AcquireRequest{SessionKey: k}, nil); !errors.Is(err, ErrInvalid) {
				t.Errorf("Acquire(session key %q) = %v, want ErrInvalid", k, err)
			}
		}
	})
}

func TestMemoryAdmission(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		low := false
		admit := func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			return !low, fmt.Sprintf("low=%v", low)
		}
		setLow := func(v bool) {
			mu.Lock()
			low = v
			mu.Unlock()
		}
		m, _ := newManager(t, Config{Capacity: 4, Admit: admit, AdmitInterval: time.Second})
		acquireKey(t, m, "k").Reclaim(Released, "")
		setLow(true)
		time.Sleep(time.Second)
		synctest.Wait()
		if !m.Stats().MemoryLow {
			t.Fatal("stats do not report low memory")
		}
		// A warm session needs no new memory: granted at once.
		acquireKey(t, m, "k").Reclaim(Released, "")
		got := make(chan error, 1)
		go func() {
			_, err := m.Acquire(context.Background(), AcquireRequest{Wait: time.Minute}, nil)
			got <- err
		}()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if st := m.Stats(); st.Waiting != 1 || st.OldestWait != 10*time.Second {
			t.Fatalf("with low memory: %d waiting for %v, want 1 for 10s", st.Waiting, st.OldestWait)
		}
		setLow(false)
		if err := <-got; err != nil {
			t.Fatalf("Acquire once memory is back = %v", err)
		}
		setLow(true)
		time.Sleep(time.Second)
		synctest.Wait()
		_, err := m.Acquire(context.Background(), AcquireRequest{Wait: 5 * time.Second}, nil)
		if !errors.Is(err, ErrNoCapacity) || !strings.Contains(err.Error(), "memory is low") {
			t.Fatalf("Acquire under low memory = %v, want ErrNoCapacity saying memory is low", err)
		}
	})
}
