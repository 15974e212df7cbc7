package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/browserbroker/broker/internal/testredis"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestOwnerOf(t *testing.T) {
	for id, want := range map[string]string{
		LeaseIDPrefix("b-1") + "ABC":   "b-1",
		"l_ABCDEF":                     "", // a broker outside any fleet
		"l_B-1.ABC":                    "", // not a broker id
		"x_b1.ABC":                     "", // not a lease id
		"l_.ABC":                       "", // empty owner
		LeaseIDPrefix("pod-7f9c") + "": "pod-7f9c",
	} {
		if got := OwnerOf(id); got != want {
			t.Errorf("OwnerOf(%q) = %q, want %q", id, got, want)
		}
	}
	for _, bad := range []string{"", "A", "-a", "a.b", "a_b", string(make([]byte, 41))} {
		if ValidID(bad) == nil {
			t.Errorf("ValidID(%q) = nil, want an error", bad)
		}
	}
}

func client(t *testing.T, r *testredis.Server) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries = -1 // fail at once while the server is down
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

func join(t *testing.T, r *testredis.Server, id string, load *atomic.Pointer[Load], ttl time.Duration) *Fleet {
	t.Helper()
	f, err := New(Config{Redis: client(t, r), ID: id, Address: id + ":7070", TTL: ttl,
		Load: func() Load { return *load.Load() }, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	return f
}

func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// foundGone waits until f.Lookup says broker id is gone, and returns
// when it did.
func foundGone(t *testing.T, f *Fleet, id string, within time.Duration) time.Time {
	t.Helper()
	waitUntil(t, id+" found gone", within, func() bool {
		_, err := f.Lookup(context.Background(), id)
		return errors.Is(err, ErrUnknownBroker)
	})
	return time.Now()
}

func ids(ms []Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

// Brokers see each other with their load; one that stops heartbeating
// drops out when its key expires; one that closes leaves at once.
func TestMembership(t *testing.T) {
	r := testredis.Start(t)
	ctx := context.Background()
	var la, lb, lc atomic.Pointer[Load]
	la.Store(&Load{Capacity: 4, Free: 0, Active: 4})
	lb.Store(&Load{Capacity: 4, Free: 3, Active: 1})
	lc.Store(&Load{Capacity: 8, Free: 5, Draining: true})
	a := join(t, r, "a", &la, 900*time.Millisecond)
	defer a.Close()
	b := join(t, r, "b", &lb, 900*time.Millisecond)
	c := join(t, r, "c", &lc, 900*time.Millisecond)

	ms, err := a.Members(ctx)
	if err != nil || len(ms) != 3 || ms[0].ID != "a" || ms[1].Address != "b:7070" || ms[2].Load.Capacity != 8 {
		t.Fatalf("Members() = %+v, %v; want a, b and c with their addresses and loads", ms, err)
	}
	// c has more room but drains: b is picked.
	if m, ok, err := a.PickFree(ctx, 0); err != nil || !ok || m.ID != "b" {
		t.Errorf("PickFree() = %v, %v, %v; want b", m.ID, ok, err)
	}
	// The load is renewed by the heartbeat.
	lb.Store(&Load{Capacity: 4, Free: 0, Active: 4})
	waitUntil(t, "b's new load seen", 2*time.Second, func() bool {
		m, err := a.Lookup(ctx, "b")
		return err == nil && m.Load.Free == 0
	})
	if m, ok, err := a.PickFree(ctx, 0); err != nil || ok {
		t.Errorf("PickFree() with b full and c draining = %v, %v, %v; want none", m.ID, ok, err)
	}

	// b dies without a word: its key expires within the TTL.
	close(b.stop)
	<-b.done
	died := time.Now()
	if d := foundGone(t, a, "b", 3*time.Second).Sub(died); d > 900*time.Millisecond+500*time.Millisecond {
		t.Errorf("b dropped out %v after its last heartbeat, want within the TTL", d)
	}
	// c leaves: gone at once, without waiting for its TTL.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if ms, err := a.Members(ctx); err != nil || len(ms) != 1 || ms[0].ID != "a" {
		t.Errorf("Members() after c left = %v, %v; want a alone", ids(ms), err)
	}
}

// While Redis is down, fleet calls fail with ErrUnavailable, Lookup
// answers from what it saw, and the brokers re-register when it is back.
func TestRedisRestart(t *testing.T) {
	r := testredis.Start(t)
	ctx := context.Background()
	var la, lb atomic.Pointer[Load]
	la.Store(&Load{Capacity: 2, Free: 2})
	lb.Store(&Load{Capacity: 2, Free: 1})
	a := join(t, r, "a", &la, 900*time.Millisecond)
	defer a.Close()
	b := join(t, r, "b", &lb, 900*time.Millisecond)
	defer b.Close()
	if _, err := a.Lookup(ctx, "b"); err != nil {
		t.Fatal(err)
	}

	r.Stop()
	if _, err := a.Members(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Members() with Redis down = %v, want ErrUnavailable", err)
	}
	if m, err := a.Lookup(ctx, "b"); err != nil || m.Address != "b:7070" {
		t.Errorf("Lookup(b) with Redis down = %+v, %v; want b from the last registration", m, err)
	}
	if _, err := a.Lookup(ctx, "zz"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Lookup(unknown) with Redis down = %v, want ErrUnavailable", err)
	}
	waitUntil(t, "a sees Redis down", 3*time.Second, func() bool { ok, _ := a.Healthy(); return !ok })
	// Known down: PickFree does not wait for Redis again.
	if _, ok, err := a.PickFree(ctx, 0); ok || !errors.Is(err, ErrUnavailable) {
		t.Errorf("PickFree() with Redis known down = %v, %v; want ErrUnavailable", ok, err)
	}

	r.Restart() // empty: every registration is gone
	waitUntil(t, "both re-registered", 3*time.Second, func() bool {
		ms, err := a.Members(ctx)
		return err == nil && len(ms) == 2
	})
	if ok, err := a.Healthy(); !ok {
		t.Errorf("Healthy() after the restart = false, %v", err)
	}
}

// One owner per session key: the first claim wins, the owner's heartbeat
// keeps it while the session lives there, and it expires once the owner
// stops renewing; generations only rise; state survives Forget's
// generation.
func TestSessions(t *testing.T) {
	r := testredis.Start(t)
	ctx := context.Background()
	var load atomic.Pointer[Load]
	load.Store(&Load{Capacity: 1})
	var held atomic.Pointer[[]string]
	held.Store(&[]string{"k1"})
	mk := func(id string, sessions func() []string) *Fleet {
		f, err := New(Config{Redis: client(t, r), ID: id, Address: id + ":1", TTL: 900 * time.Millisecond,
			Load: func() Load { return *load.Load() }, Sessions: sessions, Logger: zaptest.NewLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Start(); err != nil {
			t.Fatal(err)
		}
		return f
	}
	a := mk("a", func() []string { return *held.Load() })
	defer a.Close()
	b := mk("b", nil)
	defer b.Close()

	if o, err := a.ClaimSession(ctx, "k1"); err != nil || o != "a" {
		t.Fatalf("a.ClaimSession(k1) = %q, %v; want a", o, err)
	}
	if o, err := b.ClaimSession(ctx, "k1"); err != nil || o != "a" {
		t.Fatalf("b.ClaimSession(k1) = %q, %v; want a, the owner", o, err)
	}
	// a's heartbeat renews k1 well past the TTL.
	time.Sleep(2 * time.Second)
	if o, err := b.SessionOwner(ctx, "k1"); err != nil || o != "a" {
		t.Fatalf("SessionOwner(k1) after 2 TTLs = %q, %v; want a, renewed", o, err)
	}
	// The session left a: its ownership expires, and b can claim it.
	held.Store(&[]string{})
	waitUntil(t, "k1 free", 3*time.Second, func() bool { o, _ := b.SessionOwner(ctx, "k1"); return o == "" })
	if o, err := b.ClaimSession(ctx, "k1"); err != nil || o != "b" {
		t.Fatalf("b.ClaimSession(k1) after a let go = %q, %v; want b", o, err)
	}

	s := a.SessionStore()
	for want := uint64(1); want <= 3; want++ {
		if g, err := b.SessionStore().NextGeneration("k1"); err != nil || g != want {
			t.Fatalf("NextGeneration(k1) = %d, %v; want %d", g, err, want)
		}
	}
	if err := s.SaveStorage("k1", []byte(`{"cookies":[]}`)); err != nil {
		t.Fatal(err)
	}
	rec, ok, err := b.SessionStore().Get("k1")
	if err != nil || !ok || rec.Generation != 3 || string(rec.Storage) != `{"cookies":[]}` || rec.SavedAt.IsZero() {
		t.Fatalf("Get(k1) = %+v, %v, %v; want generation 3 and the saved state", rec, ok, err)
	}
	if gone, err := s.Forget("k1"); err != nil || !gone {
		t.Fatalf("Forget(k1) = %v, %v; want true", gone, err)
	}
	rec, _, _ = s.Get("k1")
	if rec.Storage != nil || rec.Generation != 3 {
		t.Errorf("Get(k1) after Forget = %+v; want no state, generation kept", rec)
	}
	if g, _ := s.NextGeneration("k1"); g != 4 {
		t.Errorf("NextGeneration(k1) after Forget = %d, want 4 (never reused)", g)
	}
	if recs, err := s.List(); err != nil || len(recs) != 1 || recs[0].Key != "k1" {
		t.Errorf("List() = %+v, %v; want k1", recs, err)
	}
	if _, ok, err := s.Get("nothing"); err != nil || ok {
		t.Errorf("Get(unknown) = %v, %v; want nothing, no error", ok, err)
	}
	if err := s.SaveStorage("k2", []byte(`{"cookies":`)); err == nil {
		t.Errorf("SaveStorage(k2, truncated JSON) = nil, want an error")
	}
	if err := client(t, r).Set(ctx, a.stateKey("k2"), `{"cookies":`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if rec, _, err := s.Get("k2"); err == nil {
		t.Errorf("Get(k2) with a corrupt saved state = %+v, nil; want an error, not the state to restore", rec)
	}
}

// New registers nothing: a broker joins when Start reports the load of its
// lease manager, so the others never see it before it can serve. Close
// without Start is fine, and Start after Close does not register again.
func TestStartRegisters(t *testing.T) {
	r := testredis.Start(t)
	ctx := context.Background()
	rdb := client(t, r)
	loads := 0
	f, err := New(Config{Redis: rdb, ID: "a", Address: "a:1", TTL: time.Second,
		Load: func() Load { loads++; return Load{Capacity: 2, Free: 2} }, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if ms, err := f.Members(ctx); err != nil || len(ms) != 0 || loads != 0 {
		t.Fatalf("after New: members %v (%v), Load asked %d times; want none, and not asked", ms, err, loads)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	if ms, err := f.Members(ctx); err != nil || len(ms) != 1 || ms[0].Load.Free != 2 {
		t.Fatalf("after Start: members %v (%v); want a with its load", ms, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	if ms, err := f.Members(ctx); err != nil || len(ms) != 0 {
		t.Fatalf("after Close and Start: members %v (%v); want none", ms, err)
	}

	g, err := New(Config{Redis: rdb, ID: "b", Address: "b:1", TTL: time.Second,
		Load: func() Load { return Load{} }, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("Close without Start = %v", err)
	}
}

// PrincipalLeases counts a principal's leases on the other brokers, as
// they registered, not this broker's own; it reads them again once its
// view is a heartbeat old.
func TestPrincipalLeases(t *testing.T) {
	r := testredis.Start(t)
	var la, lb atomic.Pointer[Load]
	la.Store(&Load{Principals: map[string]int{"alice": 5}})
	lb.Store(&Load{Principals: map[string]int{"alice": 2, "bob": 1}})
	a := join(t, r, "a", &la, 900*time.Millisecond)
	defer a.Close()
	b := join(t, r, "b", &lb, 900*time.Millisecond)
	defer b.Close()
	if got := a.PrincipalLeases("alice"); got != 2 {
		t.Errorf("a.PrincipalLeases(alice) = %d, want b's 2 (not a's own 5)", got)
	}
	if got := b.PrincipalLeases("alice"); got != 5 {
		t.Errorf("b.PrincipalLeases(alice) = %d, want a's 5", got)
	}
	if got := a.PrincipalLeases("carol"); got != 0 {
		t.Errorf("a.PrincipalLeases(carol) = %d, want 0", got)
	}
	lb.Store(&Load{Principals: map[string]int{"alice": 3}})
	b.Nudge()
	waitUntil(t, "a to see b's third lease of alice", 5*time.Second, func() bool { return a.PrincipalLeases("alice") == 3 })
}

// Two live brokers with one id would take each other's lease ids and
// sessions: the second one's Start fails, once it sees the first renew its
// registration, and its Close leaves the first's registration alone. The
// registration of a process that died (not renewed) is waited out.
func TestDuplicateID(t *testing.T) {
	r := testredis.Start(t)
	ctx := context.Background()
	var load atomic.Pointer[Load]
	load.Store(&Load{Capacity: 1, Free: 1})
	ttl := 600 * time.Millisecond
	a := join(t, r, "a", &load, ttl)
	defer a.Close()

	dup, err := New(Config{Redis: client(t, r), ID: "a", Address: "elsewhere:7070", TTL: ttl,
		Load: func() Load { return *load.Load() }, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := dup.Start(); !errors.Is(err, ErrDuplicateID) {
		t.Fatalf("Start of a second broker a = %v, want ErrDuplicateID", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the duplicate was found after %v; want it seen renewed within a few heartbeats (%v)", took, ttl/3)
	}
	if err := dup.Close(); err != nil {
		t.Fatal(err)
	}
	if m, err := a.Lookup(ctx, "a"); err != nil || m.Address != "a:7070" {
		t.Fatalf("after the duplicate's Close: Lookup(a) = %+v, %v; want the first broker's registration", m, err)
	}
	time.Sleep(ttl) // past the first broker's TTL: renewed, not dropped
	if ms, err := a.Members(ctx); err != nil || len(ms) != 1 || ms[0].Address != "a:7070" {
		t.Fatalf("members %+v, %v; want the first broker a only", ms, err)
	}

	// A registration of "b" by a process that died, with a longer TTL than
	// this b's (--fleet-ttl changed across the restart): not renewed, so
	// the next b waits for it to expire, however long, and then joins.
	dead, _ := json.Marshal(Member{ID: "b", Address: "b:7070", At: time.Now(), Instance: "killed"})
	deadTTL := 3 * ttl
	if err := client(t, r).Set(ctx, a.memberKey("b"), dead, deadTTL).Err(); err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Redis: client(t, r), ID: "b", Address: "b:7070", TTL: ttl,
		Load: func() Load { return *load.Load() }, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := b.Start(); err != nil {
		t.Fatalf("Start after a dead process's registration = %v, want it waited out", err)
	}
	defer b.Close()
	if took := time.Since(start); took < deadTTL-100*time.Millisecond || took > deadTTL+5*time.Second {
		t.Errorf("b joined after %v; want once the dead registration expired (%v), not before", took, deadTTL)
	}
	waitUntil(t, "b registered", 2*time.Second, func() bool {
		m, err := a.Lookup(ctx, "b")
		return err == nil && m.Instance == b.inst
	})
}

// Close gives up the sticky sessions the broker owns, so another broker
// claims them at once, not a TTL later; one another broker owns stays
// its own.
func TestCloseReleasesSessions(t *testing.T) {
	r := testredis.Start(t)
	ctx := context.Background()
	var load atomic.Pointer[Load]
	load.Store(&Load{Capacity: 1})
	mk := func(id string, sessions []string) *Fleet {
		f, err := New(Config{Redis: client(t, r), ID: id, Address: id + ":1", TTL: time.Minute,
			Load: func() Load { return *load.Load() }, Sessions: func() []string { return sessions },
			Logger: zaptest.NewLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Start(); err != nil {
			t.Fatal(err)
		}
		return f
	}
	a := mk("a", []string{"renewed"})
	b := mk("b", nil)
	defer b.Close()
	if o, err := a.ClaimSession(ctx, "claimed"); err != nil || o != "a" {
		t.Fatalf("a.ClaimSession = %q, %v", o, err)
	}
	if o, err := b.ClaimSession(ctx, "theirs"); err != nil || o != "b" {
		t.Fatalf("b.ClaimSession = %q, %v", o, err)
	}
	if o, err := a.ClaimSession(ctx, "renewed"); err != nil || o != "a" {
		t.Fatalf("a.ClaimSession = %q, %v", o, err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"claimed": "b", "renewed": "b", "theirs": "b"} {
		if o, err := b.ClaimSession(ctx, key); err != nil || o != want {
			t.Errorf("after a.Close, b.ClaimSession(%s) = %q, %v; want %s (with a TTL of a minute)", key, o, err, want)
		}
	}
}
