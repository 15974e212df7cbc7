package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/browserbroker/broker/internal/state"
	"github.com/browserbroker/broker/internal/testredis"
)

// What the fleet asks of Redis scales with the fleet: these tests count
// the round trips of each operation, in a keyspace full of other keys.

// roundTrips records what a client sends to Redis: per round trip, the
// names of its commands. Connection setup is left out.
type roundTrips struct {
	mu    sync.Mutex
	trips [][]string
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.add(cmd)
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.add(cmds...)
		return next(ctx, cmds)
	}
}

func (r *roundTrips) add(cmds ...redis.Cmder) {
	var names []string
	for _, c := range cmds {
		switch n := c.Name(); n {
		case "hello", "client", "auth", "select", "ping":
		default:
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return
	}
	r.mu.Lock()
	r.trips = append(r.trips, names)
	r.mu.Unlock()
}

// during returns the round trips made while fn ran.
func (r *roundTrips) during(fn func()) [][]string {
	r.mu.Lock()
	n := len(r.trips)
	r.mu.Unlock()
	fn()
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.trips[n:])
}

// counted returns a client of r whose round trips are recorded.
func counted(t *testing.T, r *testredis.Server) (*redis.Client, *roundTrips) {
	t.Helper()
	c := client(t, r)
	trips := &roundTrips{}
	c.AddHook(trips)
	return c, trips
}

func joinWith(t *testing.T, rdb *redis.Client, id string, ttl time.Duration) *Fleet {
	t.Helper()
	f, err := New(Config{Redis: rdb, ID: id, Address: id + ":7070", TTL: ttl,
		Load: func() Load { return Load{Capacity: 1, Free: 1} }, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	return f
}

// fill writes n keys beside the fleet's: other applications' and sticky
// sessions' generations and states, which never expire.
func fill(t *testing.T, rdb *redis.Client, n int) {
	t.Helper()
	ctx := context.Background()
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			switch i % 3 {
			case 0:
				p.Set(ctx, fmt.Sprintf("other-app:%d", i), "x", 0)
			case 1:
				p.Set(ctx, fmt.Sprintf("browserbroker:session-gen:filler-%d", i), 1, 0)
			default:
				p.Set(ctx, fmt.Sprintf("browserbroker:session-state:filler-%d", i), "{}", 0)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func hasCommand(trips [][]string, name string) bool {
	for _, tr := range trips {
		if slices.Contains(tr, name) {
			return true
		}
	}
	return false
}

// Members reads the index and the registrations, two round trips however
// many other keys there are; the index is pruned of brokers whose key
// expired, and a broker missing from it adds itself back at its next
// heartbeat.
func TestMembersIndex(t *testing.T) {
	r := testredis.Start(t)
	ctx := context.Background()
	raw := client(t, r)
	fill(t, raw, 10_000)
	rdb, trips := counted(t, r)
	// a lives through the test, its heartbeat (every 10s) out of the way of
	// the round trips counted; b's key expires soon after it stops.
	a := joinWith(t, rdb, "a", 30*time.Second)
	defer a.Close()
	b := joinWith(t, client(t, r), "b", 900*time.Millisecond)

	var ms []Member
	var err error
	got := trips.during(func() { ms, err = a.Members(ctx) })
	if err != nil || !slices.Equal(ids(ms), []string{"a", "b"}) {
		t.Fatalf("Members() = %v, %v; want a and b", ids(ms), err)
	}
	if want := [][]string{{"smembers"}, {"mget"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("Members() made round trips %v, want %v (and no SCAN)", got, want)
	}
	if idx, _ := raw.SMembers(ctx, "browserbroker:members").Result(); !sameSet(idx, "a", "b") {
		t.Errorf("index = %v, want a and b", idx)
	}

	// b dies: once its key expires, Members leaves it out and prunes it.
	close(b.stop)
	<-b.done
	waitUntil(t, "b's key expired", 3*time.Second, func() bool {
		return raw.Exists(ctx, "browserbroker:member:b").Val() == 0
	})
	got = trips.during(func() { ms, err = a.Members(ctx) })
	if err != nil || !slices.Equal(ids(ms), []string{"a"}) {
		t.Fatalf("Members() after b died = %v, %v; want a alone", ids(ms), err)
	}
	if !hasCommand(got, "evalsha") && !hasCommand(got, "eval") {
		t.Errorf("Members() after b died made round trips %v, want the prune script", got)
	}
	if hasCommand(got, "scan") {
		t.Errorf("Members() made round trips %v, want no SCAN", got)
	}
	if idx, _ := raw.SMembers(ctx, "browserbroker:members").Result(); !sameSet(idx, "a") {
		t.Errorf("index after b expired = %v, want a alone", idx)
	}

	// A live broker lost from the index (say, by a prune that raced with
	// its registration) is back at its next registration: the next
	// heartbeat, or a nudge as here.
	raw.SRem(ctx, "browserbroker:members", "a")
	a.Nudge()
	waitUntil(t, "a back in the index", 4*time.Second, func() bool {
		ms, err := a.Members(ctx)
		return err == nil && slices.Equal(ids(ms), []string{"a"})
	})

	// Close leaves the index at once.
	c := joinWith(t, client(t, r), "c", 900*time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if idx, _ := raw.SMembers(ctx, "browserbroker:members").Result(); !sameSet(idx, "a") {
		t.Errorf("index after c closed = %v, want a alone", idx)
	}
}

func sameSet(got []string, want ...string) bool {
	got = slices.Clone(got)
	slices.Sort(got)
	slices.Sort(want)
	return slices.Equal(got, want)
}

// Lookup reads a registration once per heartbeat interval: within it,
// calls are answered without Redis; a broker that closed is found gone
// within it, and is not served from memory afterwards, even while Redis
// is unreachable.
func TestLookupCache(t *testing.T) {
	r := testredis.Start(t)
	ctx := context.Background()
	const ttl, window = 3 * time.Second, time.Second // the heartbeat: TTL/3
	rdb, trips := counted(t, r)
	a := joinWith(t, rdb, "a", ttl)
	defer a.Close()
	b := joinWith(t, client(t, r), "b", ttl)

	var m Member
	var err error
	read := time.Now()
	// Only reads count: a's own heartbeat (every second) may write meanwhile.
	reads := func(trips [][]string) [][]string {
		return slices.DeleteFunc(trips, func(tr []string) bool { return !slices.Contains(tr, "get") && !slices.Contains(tr, "pttl") })
	}
	got := reads(trips.during(func() { m, err = a.Lookup(ctx, "b") }))
	if err != nil || m.Address != "b:7070" {
		t.Fatalf("Lookup(b) = %+v, %v; want b", m, err)
	}
	if want := [][]string{{"get", "pttl"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("Lookup(b) made round trips %v, want %v", got, want)
	}
	got = trips.during(func() {
		for range 100 {
			if m, err = a.Lookup(ctx, "b"); err != nil {
				break
			}
		}
	})
	if err != nil || m.ID != "b" || hasCommand(got, "get") {
		t.Errorf("100 Lookup(b) within the window = %+v, %v, round trips %v; want b, from memory", m, err, got)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	m, err = a.Lookup(ctx, "b")
	if time.Since(read) < window/2 && (err != nil || m.ID != "b") {
		t.Errorf("Lookup(b) just after b closed, within the window = %+v, %v; want b, from memory", m, err)
	}
	// Slack for a loaded machine; a Lookup that never drops b fails in
	// foundGone.
	if d := foundGone(t, a, "b", window+2*time.Second).Sub(closed); d > window+700*time.Millisecond {
		t.Errorf("b found gone %v after it closed, want within the window (%v)", d, window)
	}

	// Gone is gone: not answered from memory once Redis is away.
	r.Stop()
	if m, err := a.Lookup(ctx, "b"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Lookup(b) after b left, Redis down = %+v, %v; want ErrUnavailable", m, err)
	}
}

// Lookup's answers from memory end when the registration it read
// expires, even within the window: a broker that dies is found gone when
// its key expires, as without the memory.
func TestLookupExpiry(t *testing.T) {
	r := testredis.Start(t)
	ctx := context.Background()
	a := joinWith(t, client(t, r), "a", 6*time.Second) // a window of 2s
	defer a.Close()
	raw := client(t, r)
	raw.Set(ctx, "browserbroker:member:b", `{"id":"b","address":"b:7070"}`, 300*time.Millisecond)
	set := time.Now()
	if m, err := a.Lookup(ctx, "b"); err != nil || m.ID != "b" {
		t.Fatalf("Lookup(b) = %+v, %v; want b", m, err)
	}
	// Found gone when the key expires (300ms, plus slack for a loaded
	// machine), not when the 2s window ends.
	if d := foundGone(t, a, "b", 4*time.Second).Sub(set); d > 300*time.Millisecond+700*time.Millisecond {
		t.Errorf("b found gone %v after its last registration of 300ms, want when it expired, well before the 2s window", d)
	}
}

// ClaimSession is one round trip whatever the key's owner, and renews
// the claim only for its owner.
func TestClaimSessionRoundTrips(t *testing.T) {
	r := testredis.Start(t)
	ctx := context.Background()
	const ttl = 30 * time.Second // no heartbeat meanwhile
	rdb, trips := counted(t, r)
	a := joinWith(t, rdb, "a", ttl)
	defer a.Close()
	b := joinWith(t, client(t, r), "b", ttl)
	defer b.Close()
	raw := client(t, r)
	if _, err := a.ClaimSession(ctx, "warm-up"); err != nil { // loads the script
		t.Fatal(err)
	}

	claim := func(f *Fleet, key, want string) {
		t.Helper()
		var owner string
		var err error
		got := trips.during(func() { owner, err = f.ClaimSession(ctx, key) })
		if err != nil || owner != want {
			t.Fatalf("%s.ClaimSession(%s) = %q, %v; want %q", f.ID(), key, owner, err, want)
		}
		if f == a && len(got) != 1 {
			t.Errorf("%s.ClaimSession(%s) made round trips %v, want one", f.ID(), key, got)
		}
	}
	pttl := func() time.Duration { return raw.PTTL(ctx, "browserbroker:session-owner:k").Val() }

	claim(a, "k", "a") // nobody's: a's, with the TTL
	if d := pttl(); d <= ttl-time.Second || d > ttl {
		t.Errorf("owner key's TTL after the claim = %v, want %v", d, ttl)
	}
	time.Sleep(300 * time.Millisecond)
	claim(b, "k", "a") // a's: left alone
	if d := pttl(); d > ttl-250*time.Millisecond {
		t.Errorf("owner key's TTL after another broker's claim = %v, want not renewed", d)
	}
	claim(a, "k", "a") // a's own: renewed
	if d := pttl(); d <= ttl-200*time.Millisecond {
		t.Errorf("owner key's TTL after its owner's claim = %v, want renewed to %v", d, ttl)
	}
	raw.Del(ctx, "browserbroker:session-owner:k")
	claim(b, "k", "b")
}

// List reads the index and then the records a batch at a time, whatever
// else the keyspace holds.
func TestSessionsList(t *testing.T) {
	r := testredis.Start(t)
	raw := client(t, r)
	ctx := context.Background()
	fill(t, raw, 3000) // other keys, and 1000 generations outside the index
	rdb, trips := counted(t, r)
	a := joinWith(t, rdb, "a", 30*time.Second)
	defer a.Close()
	s := a.SessionStore()

	const n = 1000
	for i := range n {
		k := fmt.Sprintf("k%04d", i)
		if _, err := s.NextGeneration(k); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := s.NextGeneration(k); err != nil {
				t.Fatal(err)
			}
		}
		if i%3 == 0 {
			if err := s.SaveStorage(k, []byte(`{"cookies":[]}`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if gone, err := s.Forget("k0003"); err != nil || !gone {
		t.Fatalf("Forget(k0003) = %v, %v; want true", gone, err)
	}
	// Saved state without a generation is not listed.
	if err := s.SaveStorage("state-only", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}

	check := func(recs []state.Record) {
		t.Helper()
		if want := n; len(recs) != want {
			t.Fatalf("List() = %d records, want %d", len(recs), want)
		}
		if !slices.IsSortedFunc(recs, func(x, y state.Record) int { return strings.Compare(x.Key, y.Key) }) {
			t.Errorf("List() not sorted by key")
		}
		byKey := map[string]state.Record{}
		for _, rec := range recs {
			byKey[rec.Key] = rec
			if rec.Storage != nil {
				t.Errorf("List() record %s has its storage state, want it left out", rec.Key)
			}
		}
		for i := range n {
			k := fmt.Sprintf("k%04d", i)
			rec := byKey[k]
			wantGen := uint64(1 + (1 - i%2)) // two for even keys
			wantSaved := i%3 == 0 && k != "k0003"
			if rec.Generation != wantGen || rec.SavedAt.IsZero() == wantSaved {
				t.Fatalf("List() record %s = %+v; want generation %d, saved %v", k, rec, wantGen, wantSaved)
			}
		}
		if _, ok := byKey["state-only"]; ok {
			t.Errorf("List() has state-only, a key without a generation")
		}
	}
	recs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	check(recs)

	got := trips.during(func() { recs, err = s.List() })
	if err != nil {
		t.Fatal(err)
	}
	check(recs)
	if want := 1 + (n+listBatch-1)/listBatch; len(got) != want || hasCommand(got, "scan") {
		t.Errorf("List() of %d sessions made %d round trips %v, want %d, no SCAN", len(recs), len(got), got, want)
	}

	// List reads no saved state (only when each was saved): a state it
	// could not parse does not disturb it.
	raw.Set(ctx, "browserbroker:session-state:k0000", "not json", 0)
	if recs, err := s.List(); err != nil || len(recs) != n {
		t.Errorf("List() with k0000's state unreadable = %d records, %v; want all, no error (states are not read)", len(recs), err)
	}

	// A corrupt record is reported; the others are still listed.
	raw.Set(ctx, "browserbroker:session-gen:k0001", "not a number", 0)
	if recs, err := s.List(); err == nil || len(recs) != n-1 {
		t.Errorf("List() with k0001 corrupt = %d records, %v; want the %d others and an error", len(recs), err, n-1)
	}
}

// PrincipalLeases reads the members at most once per heartbeat interval,
// however many acquires ask, and while Redis is away answers from what it
// last saw, without waiting on Redis for each call.
func TestPrincipalLeasesRoundTrips(t *testing.T) {
	r := testredis.Start(t)
	rdb, trips := counted(t, r)
	const ttl = 30 * time.Second // a 10s interval: no heartbeat meanwhile
	a, err := New(Config{Redis: rdb, ID: "a", Address: "a:1", TTL: ttl,
		Load: func() Load { return Load{} }, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	defer a.Close()
	b, err := New(Config{Redis: client(t, r), ID: "b", Address: "b:1", TTL: ttl,
		Load: func() Load { return Load{Principals: map[string]int{"alice": 2}} }, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	defer b.Close()

	var n int
	got := trips.during(func() {
		for range 50 {
			n = a.PrincipalLeases("alice")
		}
	})
	if want := [][]string{{"smembers"}, {"mget"}}; n != 2 || !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("50 PrincipalLeases(alice) = %d with round trips %v; want 2, read once: %v", n, got, want)
	}
	r.Stop()
	a.mu.Lock()
	a.membersRead = time.Time{} // stale: the next call tries Redis
	a.mu.Unlock()
	got = trips.during(func() {
		for range 50 {
			n = a.PrincipalLeases("alice")
		}
	})
	if n != 2 || len(got) != 1 {
		t.Errorf("50 PrincipalLeases(alice) with Redis down = %d with round trips %v; want the last seen 2, and Redis tried once", n, got)
	}
}

// A burst of nudges (every grant and reclaim under churn) writes the
// registration a few times, not once per nudge, and the last load is
// written all the same.
func TestNudgesAreThrottled(t *testing.T) {
	r := testredis.Start(t)
	rdb, trips := counted(t, r)
	var active atomic.Int64
	f, err := New(Config{Redis: rdb, ID: "a", Address: "a:7070", TTL: 30 * time.Second, // heartbeat 10s: only nudges write
		Load: func() Load { return Load{Capacity: 1 << 20, Active: int(active.Load())} }, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const burst = 500 * time.Millisecond
	start := time.Now()
	got := trips.during(func() {
		for time.Since(start) < burst {
			active.Add(1)
			f.Nudge()
			time.Sleep(50 * time.Microsecond)
		}
	})
	if max := int(burst/nudgeGap) + 2; len(got) > max {
		t.Errorf("%d nudges in %v made %d round trips; want at most %d (one per %v)", active.Load(), burst, len(got), max, nudgeGap)
	}
	want := int(active.Load())
	waitUntil(t, "the last load registered", 2*nudgeGap+time.Second, func() bool {
		m, err := f.Lookup(context.Background(), "a")
		f.mu.Lock()
		delete(f.known, "a") // read Redis each time
		f.mu.Unlock()
		return err == nil && m.Load.Active == want
	})
}

// PickFree with a maxAge answers from the members read within it, so the
// acquires waiting in a queue can ask every few hundred milliseconds for
// room elsewhere without a round trip each; with 0 it always reads.
func TestPickFreeMaxAge(t *testing.T) {
	r := testredis.Start(t)
	ctx := context.Background()
	rdb, trips := counted(t, r)
	a := joinWith(t, rdb, "a", 30*time.Second)
	defer a.Close()
	b := joinWith(t, client(t, r), "b", 30*time.Second) // Free 1
	defer b.Close()
	if m, ok, err := a.PickFree(ctx, 0); err != nil || !ok || m.ID != "b" {
		t.Fatalf("PickFree(0) = %v, %v, %v; want b", m.ID, ok, err)
	}
	got := trips.during(func() {
		for range 100 {
			if m, ok, err := a.PickFree(ctx, time.Minute); err != nil || !ok || m.ID != "b" {
				t.Fatalf("PickFree(1m) = %v, %v, %v; want b", m.ID, ok, err)
			}
		}
	})
	if len(got) != 0 {
		t.Errorf("100 PickFree(1m) right after a read made round trips %v, want none", got)
	}
	got = trips.during(func() { a.PickFree(ctx, 0) })
	if want := [][]string{{"smembers"}, {"mget"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("PickFree(0) made round trips %v, want %v", got, want)
	}
}
