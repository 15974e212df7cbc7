package browser

import (
	"testing"
	"time"
)

// advanceClock moves the pool's clock of browser ages d ahead of real time.
func advanceClock(p *Pool, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.now = func() time.Time { return time.Now().Add(d) }
}

// waitStats polls p.Stats until ok accepts it, for up to d.
func waitStats(t *testing.T, p *Pool, d time.Duration, what string, ok func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		s := p.Stats()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stats() = %+v after %s, want %s", s, d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// onlyBrowser returns the pool's one local browser process.
func onlyBrowser(t *testing.T, p *Pool) proc {
	t.Helper()
	pids := p.Processes().Browsers
	if len(pids) != 1 || pids[0] == 0 {
		t.Fatalf("Processes().Browsers = %v, want one pid", pids)
	}
	return procOf(t, pids[0])
}

func TestRetireAfterMaxContexts(t *testing.T) {
	p := newPool(t, func(c *Config) { c.BrowserMaxContexts = 2 })
	old := onlyBrowser(t, p)
	a := openContext(t, p, ContextOptions{})
	b := openContext(t, p, ContextOptions{})
	if a.Browser() != "local-1" || b.Browser() != "local-1" {
		t.Fatalf("first two contexts on %q and %q, want both on local-1", a.Browser(), b.Browser())
	}
	if s := p.Stats(); s.Retired != 1 || s.Retiring != 1 || s.Browsers != 1 {
		t.Fatalf("after 2 contexts with BrowserMaxContexts=2, Stats() = %+v, want 1 retired, 1 retiring, 1 browser", s)
	}

	c := openContext(t, p, ContextOptions{})
	if c.Browser() != "local-2" {
		t.Fatalf("third context on %q, want local-2", c.Browser())
	}
	if s := p.Stats(); s.Browsers != 2 || s.Launches != 2 {
		t.Fatalf("after the third context, Stats() = %+v, want 2 browsers from 2 launches", s)
	}
	// The retired browser serves its contexts undisturbed.
	for name, ctx := range map[string]*Context{"a": a, "b": b, "c": c} {
		if res := navigate(t, ctx, site.URL("/")); res.Title != "Test page" {
			t.Errorf("%s: Navigate = %+v, want the test page", name, res)
		}
	}

	closeContext(t, a)
	if !old.alive() {
		t.Fatalf("retired browser %d exited with a context still on it", old.pid)
	}
	if got := evaluate(t, b, "1 + 1"); got != "2" {
		t.Fatalf("b on the retired browser after a closed: Evaluate = %s", got)
	}
	closeContext(t, b)
	if !waitExit(5*time.Second, old) {
		t.Fatalf("retired browser %d still running 5s after its last context closed", old.pid)
	}
	s := waitStats(t, p, 10*time.Second, "1 browser, none retiring", func(s Stats) bool { return s.Browsers == 1 && s.Retiring == 0 })
	if s.Retired != 1 || s.BrowserCrashes != 0 || s.Contexts != 1 {
		t.Errorf("after the retired browser closed, Stats() = %+v, want 1 retired, no crash, 1 context", s)
	}
	for name, ctx := range map[string]*Context{"a": a, "b": b} {
		if err := ctx.LostErr(); err != nil {
			t.Errorf("%s.LostErr() = %v, want nil: the retirement closed it cleanly", name, err)
		}
	}
	if got := evaluate(t, c, "1 + 1"); got != "2" {
		t.Errorf("c after the retired browser closed: Evaluate = %s", got)
	}
}

func TestRetireAfterMaxAge(t *testing.T) {
	p := newPool(t, func(c *Config) { c.BrowserMaxAge = time.Minute })

	// An idle browser past its age is closed when a context is next placed.
	first := onlyBrowser(t, p)
	advanceClock(p, 2*time.Minute)
	a := openContext(t, p, ContextOptions{})
	if a.Browser() != "local-2" {
		t.Fatalf("context after the max age on %q, want a new browser, local-2", a.Browser())
	}
	if !waitExit(5*time.Second, first) {
		t.Fatalf("idle browser %d past its age still running", first.pid)
	}
	navigate(t, a, site.URL("/"))

	// A busy one keeps serving its context, and closes after it.
	second := onlyBrowser(t, p)
	advanceClock(p, 4*time.Minute)
	b := openContext(t, p, ContextOptions{})
	if b.Browser() != "local-3" {
		t.Fatalf("context after the second max age on %q, want local-3", b.Browser())
	}
	s := waitStats(t, p, 10*time.Second, "1 retiring (local-2, busy) beside local-3", func(s Stats) bool { return s.Retiring == 1 && s.Browsers == 2 })
	if s.Retired != 2 {
		t.Fatalf("Stats() = %+v, want 2 retired", s)
	}
	if res := navigate(t, a, site.URL("/")); res.Title != "Test page" {
		t.Errorf("Navigate on the retiring browser = %+v", res)
	}
	closeContext(t, a)
	if !waitExit(5*time.Second, second) {
		t.Fatalf("retired browser %d still running after its last context closed", second.pid)
	}
	s = waitStats(t, p, 10*time.Second, "none retiring", func(s Stats) bool { return s.Retiring == 0 && s.Browsers == 1 })
	if s.BrowserCrashes != 0 || s.Contexts != 1 {
		t.Errorf("Stats() = %+v, want no crash and 1 context", s)
	}
	navigate(t, b, site.URL("/"))
}

func TestMaxAgeDropsWarmContexts(t *testing.T) {
	p := newPool(t, func(c *Config) { c.BrowserMaxAge = time.Minute; c.Warm = 2 })
	waitWarm(t, p, 2)
	old := onlyBrowser(t, p)
	advanceClock(p, 2*time.Minute)
	// The refill's tick notices the age: the warm contexts go with their
	// browser and are made again on a new one.
	if !waitExit(10*time.Second, old) {
		t.Fatalf("browser %d past its age, with only warm contexts, still running", old.pid)
	}
	waitWarm(t, p, 2)
	c := openContext(t, p, ContextOptions{})
	if c.Browser() != "local-2" {
		t.Errorf("warm context handed out from %q, want local-2", c.Browser())
	}
	if s := p.Stats(); s.Retired != 1 || s.WarmHits != 1 {
		t.Errorf("Stats() = %+v, want 1 retired and 1 warm hit", s)
	}
}
