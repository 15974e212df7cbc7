package browser

import (
	"sync/atomic"
	"testing"
	"time"
)

func waitWarm(t *testing.T, p *Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for p.Stats().Warm != n {
		if time.Now().After(deadline) {
			t.Fatalf("warm pool has %d contexts after 20s, want %d", p.Stats().Warm, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWarmPoolHandsOutEachContextOnce(t *testing.T) {
	p := newPool(t, func(c *Config) { c.Warm = 2 })
	waitWarm(t, p, 2)
	seen := map[*Context]bool{}
	for i := range 4 {
		c := openContext(t, p, ContextOptions{})
		if seen[c] {
			t.Fatalf("context %p handed out twice", c)
		}
		seen[c] = true
		if got := evaluate(t, c, "1 + 1"); got != "2" {
			t.Fatalf("warm context %d: Evaluate = %s", i, got)
		}
		closeContext(t, c)
		waitWarm(t, p, 2)
	}
	st := p.Stats()
	if st.WarmHits != 4 || st.WarmMisses != 0 || st.Contexts != 0 {
		t.Fatalf("stats %+v: want 4 hits, no miss, nothing handed out", st)
	}
	// Options other than the defaults never take a warm context.
	c := openContext(t, p, ContextOptions{UserAgent: "custom/1.0"})
	if ua := evaluate(t, c, "navigator.userAgent"); ua != `"custom/1.0"` {
		t.Fatalf("custom context user agent %s", ua)
	}
	if st := p.Stats(); st.WarmHits != 4 || st.Warm != 2 {
		t.Fatalf("stats after a custom context %+v: want the warm pool untouched", st)
	}
	closeContext(t, c)
}

func TestWarmPoolYieldsToMaxContexts(t *testing.T) {
	p := newPool(t, func(c *Config) { c.Warm = 2; c.MaxContexts = 2 })
	waitWarm(t, p, 2)
	a := openContext(t, p, ContextOptions{Locale: "fr-FR"}) // needs room: a warm one goes
	b := openContext(t, p, ContextOptions{Locale: "fr-FR"}) // and the other
	// A refill may be under way when a lease takes the room; it is thrown
	// away when it finds no room. Once settled, the leases hold it all.
	deadline := time.Now().Add(20 * time.Second)
	for {
		p.mu.Lock()
		creating, warm, total := p.warmCreating, len(p.warm), p.totalLocked()
		p.mu.Unlock()
		if creating == 0 {
			if warm != 0 || total != 2 {
				t.Fatalf("settled with %d warm and %d contexts in all, want 0 warm and the 2 leased", warm, total)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a warm context is still being made after 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	closeContext(t, a)
	closeContext(t, b)
	waitWarm(t, p, 2) // refilled once there is room
}

func closeContext(t *testing.T, c *Context) {
	t.Helper()
	if err := c.Close(timeout(t, 10*time.Second)); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// The warm pool holds its refill while the memory signal says low, keeps
// the contexts it has, and refills once memory is back.
func TestWarmPoolHoldsRefillWhileMemoryIsLow(t *testing.T) {
	var low atomic.Bool
	low.Store(true)
	p := newPool(t, func(c *Config) { c.Warm = 2; c.MemoryLow = low.Load })
	// Two ticks of the refill loop, under low memory: nothing is made.
	time.Sleep(2500 * time.Millisecond)
	if st := p.Stats(); st.Warm != 0 || !st.WarmHeld {
		t.Fatalf("stats under low memory from the start %+v: want no warm context and WarmHeld", st)
	}
	low.Store(false)
	waitWarm(t, p, 2)
	if st := p.Stats(); st.WarmHeld {
		t.Fatalf("stats once memory is back %+v: want WarmHeld false", st)
	}

	// Memory runs low with a full pool: a default context still takes a
	// warm one (already made), and the hole is not refilled.
	low.Store(true)
	c := openContext(t, p, ContextOptions{})
	time.Sleep(2500 * time.Millisecond)
	if st := p.Stats(); st.Warm != 1 || st.WarmHits != 1 || !st.WarmHeld {
		t.Fatalf("stats after a hit under low memory %+v: want 1 warm left, 1 hit, WarmHeld", st)
	}
	closeContext(t, c)
	low.Store(false)
	waitWarm(t, p, 2)
}
