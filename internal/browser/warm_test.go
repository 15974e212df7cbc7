package browser

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
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

// waitYielding waits up to 20s for Stats.WarmRefillYielding to be on.
func waitYielding(t *testing.T, p *Pool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !p.Stats().WarmRefillYielding {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v after 20s: want WarmRefillYielding", p.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hangCommand starts a command on c that runs until the returned cancel is
// called (a script that never finishes, stopped by its ctx), and returns
// once the page runs it; done receives the command's error.
func hangCommand(t *testing.T, c *Context) (cancel func(), done <-chan error) {
	t.Helper()
	script, started := hangingScript(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Evaluate(ctx, script, "")
		errc <- err
	}()
	select {
	case <-started:
	case err := <-errc:
		t.Fatalf("Evaluate(hanging script) = %v before it ran, want it to hang", err)
	case <-time.After(15 * time.Second):
		t.Fatal("hanging script not running after 15s")
	}
	return cancel, errc
}

func yielding(p *Pool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.warmYielding
}

func warmCreating(p *Pool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.warmCreating
}

// The refill yields to live work: a warm context just handed out holds it
// until its first command has finished, a command in flight holds it, and
// once live work pauses it goes ahead without waiting for the max delay.
func TestWarmRefillYieldsToLiveCommands(t *testing.T) {
	// Two warm: the refill waits only while one is left to hand out.
	p := newPool(t, func(c *Config) { c.Warm = 2; c.WarmRefillMaxDelay = time.Minute })
	waitWarm(t, p, 2)
	launches := p.Stats().Launches
	c := openContext(t, p, ContextOptions{}) // a warm one
	waitYielding(t, p)                       // held by the hand-out alone: no command has run
	if st := p.Stats(); st.WarmHits != 1 || st.Warm != 1 || warmCreating(p) != 0 {
		t.Fatalf("stats after a warm hit, before any command %+v (%d being made): want 1 hit, 1 warm, none being made", st, warmCreating(p))
	}

	cancel, done := hangCommand(t, c)
	// No event says a refill has not begun: watch for a while, past a tick
	// of the refill loop (each second).
	time.Sleep(1500 * time.Millisecond)
	if st := p.Stats(); st.Warm != 1 || warmCreating(p) != 0 || !st.WarmRefillYielding {
		t.Fatalf("stats with a command in flight %+v (%d being made): want 1 warm, none being made, WarmRefillYielding", st, warmCreating(p))
	}

	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Evaluate(hanging script), cancelled = %v, want context.Canceled", err)
	}
	waitWarm(t, p, 2)
	if st := p.Stats(); st.WarmRefillsForced != 0 || st.WarmRefillYielding || st.Launches != launches {
		t.Fatalf("stats once refilled %+v: want no forced refill, not yielding, no launch (was %d)", st, launches)
	}
	if got := evaluate(t, c, "1 + 1"); got != "2" {
		t.Fatalf("Evaluate(1 + 1) after the cancelled command = %s, want 2", got)
	}
}

// Live work that never pauses does not starve the refill: it goes ahead
// after WarmRefillMaxDelay, beside the command.
func TestWarmRefillGoesAheadAfterMaxDelay(t *testing.T) {
	const maxDelay = time.Second
	p := newPool(t, func(c *Config) { c.Warm = 2; c.WarmRefillMaxDelay = maxDelay })
	waitWarm(t, p, 2)
	taken := time.Now()
	c := openContext(t, p, ContextOptions{})
	cancel, done := hangCommand(t, c)
	waitWarm(t, p, 2)
	select {
	case err := <-done:
		t.Fatalf("the command ended (%v) before the refill, want it in flight throughout", err)
	default:
	}
	if waited := time.Since(taken); waited < maxDelay {
		t.Fatalf("refilled %s after the hand-out, want at least the max delay %s", waited, maxDelay)
	}
	if st := p.Stats(); st.WarmRefillsForced != 1 || st.WarmHits != 1 {
		t.Fatalf("stats once refilled %+v: want 1 forced refill, 1 hit", st)
	}
	cancel()
	<-done
}

// An empty warm pool refills at once, live work or not: the next default
// acquire would otherwise make its own context.
func TestWarmRefillDoesNotWaitWhenEmpty(t *testing.T) {
	p := newPool(t, func(c *Config) { c.Warm = 1; c.WarmRefillMaxDelay = time.Minute })
	waitWarm(t, p, 1)
	c := openContext(t, p, ContextOptions{})
	cancel, done := hangCommand(t, c)
	waitWarm(t, p, 1) // within 20s, the max delay a minute
	if st := p.Stats(); st.WarmRefillsForced != 0 || st.WarmHits != 1 {
		t.Fatalf("stats once refilled %+v: want no forced refill, 1 hit", st)
	}
	cancel()
	<-done
}

// yieldToLive's timing, on a bare pool in a synctest bubble.
func TestYieldToLive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxDelay = time.Second
		p := &Pool{
			cfg:      Config{Warm: 1, WarmRefillMaxDelay: maxDelay},
			closing:  make(chan struct{}),
			liveIdle: make(chan struct{}, 1),
			warmKick: make(chan struct{}, 1),
			warm:     []*Context{{}}, // one left to hand out: the refill may wait
			epoch:    time.Now(),
		}
		p.liveLast.Store(-int64(warmRefillQuiet)) // as NewPool does
		yield := func(name string, wantWait time.Duration, wantForced, wantOpen bool) {
			t.Helper()
			start := time.Now()
			forced, open := p.yieldToLive()
			if waited := time.Since(start); waited != wantWait || forced != wantForced || open != wantOpen {
				t.Fatalf("%s: yieldToLive() = forced %v, open %v after %s; want %v, %v after %s",
					name, forced, open, waited, wantForced, wantOpen, wantWait)
			}
		}

		yield("no live work yet", 0, false, true)

		p.liveBegin()
		p.liveEnd()
		yield("a command just ended", warmRefillQuiet, false, true)

		p.liveBegin()
		go func() {
			time.Sleep(300 * time.Millisecond)
			p.liveEnd()
		}()
		yield("a command in flight for 300ms", 300*time.Millisecond+warmRefillQuiet, false, true)

		// Commands of 20 ms, 10 ms apart: never a quiet period.
		stop, stopped := make(chan struct{}), make(chan struct{})
		p.liveBegin()
		go func() {
			defer close(stopped)
			for {
				time.Sleep(20 * time.Millisecond)
				p.liveEnd()
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				p.liveBegin()
			}
		}()
		yield("commands that never pause", maxDelay, true, true)
		close(stop)
		<-stopped

		p.liveBegin()
		go func() {
			time.Sleep(150 * time.Millisecond)
			p.mu.Lock()
			p.warm = nil // taken
			p.kickWarmLocked()
			p.mu.Unlock()
		}()
		yield("the warm pool runs empty", 150*time.Millisecond, false, true)
		yield("an empty warm pool", 0, false, true)
		p.warm = []*Context{{}}

		go func() {
			time.Sleep(200 * time.Millisecond)
			if !yielding(p) {
				t.Errorf("Stats().warm pool yielding = false while yieldToLive waits, want true")
			}
			close(p.closing)
		}()
		yield("the pool closes", 200*time.Millisecond, false, false)
		if yielding(p) {
			t.Errorf("Stats().warm pool yielding = true once yieldToLive returned, want false")
		}
	})
}

// A dashboard thumbnail (an Untouched screenshot) is no live work: the
// warm refill does not wait for it, and the warm context it looks at is
// still waiting for its holder's first command, which then ends that.
func TestObserverScreenshotIsNoLiveWork(t *testing.T) {
	p := newPool(t, func(c *Config) { c.Warm = 1 })
	waitWarm(t, p, 1)
	c := openContext(t, p, ContextOptions{})
	if !c.fresh.Load() || p.live.Load() != 1 {
		t.Fatalf("a warm context just handed out: fresh %v, live work %d; want true and 1", c.fresh.Load(), p.live.Load())
	}
	ctx := timeout(t, 10*time.Second)
	if _, err := c.Screenshot(ctx, ScreenshotOptions{Format: "jpeg", Quality: 50, Untouched: true}); err != nil {
		t.Fatalf("Screenshot(Untouched) = %v", err)
	}
	if !c.fresh.Load() || p.live.Load() != 1 {
		t.Errorf("after an observer's screenshot: fresh %v, live work %d; want true and 1 (untouched)", c.fresh.Load(), p.live.Load())
	}
	if _, err := c.Screenshot(ctx, ScreenshotOptions{}); err != nil {
		t.Fatalf("Screenshot() = %v", err)
	}
	if c.fresh.Load() || p.live.Load() != 0 {
		t.Errorf("after the holder's screenshot: fresh %v, live work %d; want false and 0", c.fresh.Load(), p.live.Load())
	}
	closeContext(t, c)
}
