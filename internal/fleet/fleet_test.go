package fleet

import (
	"context"
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
	if m, ok, err := a.PickFree(ctx); err != nil || !ok || m.ID != "b" {
		t.Errorf("PickFree() = %v, %v, %v; want b", m.ID, ok, err)
	}
	// The load is renewed by the heartbeat.
	lb.Store(&Load{Capacity: 4, Free: 0, Active: 4})
	waitUntil(t, "b's new load seen", 2*time.Second, func() bool {
		m, err := a.Lookup(ctx, "b")
		return err == nil && m.Load.Free == 0
	})
	if m, ok, err := a.PickFree(ctx); err != nil || ok {
		t.Errorf("PickFree() with b full and c draining = %v, %v, %v; want none", m.ID, ok, err)
	}

	// b dies without a word: its key expires within the TTL.
	close(b.stop)
	<-b.done
	died := time.Now()
	waitUntil(t, "b gone", 3*time.Second, func() bool {
		_, err := a.Lookup(ctx, "b")
		return errors.Is(err, ErrUnknownBroker)
	})
	if d := time.Since(died); d > 900*time.Millisecond+500*time.Millisecond {
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

	r.Restart() // empty: every registration is gone
	waitUntil(t, "both re-registered", 3*time.Second, func() bool {
		ms, err := a.Members(ctx)
		return err == nil && len(ms) == 2
	})
	if ok, err := a.Healthy(); !ok {
		t.Errorf("Healthy() after the restart = false, %v", err)
	}
}
