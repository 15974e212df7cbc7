package browser

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestPlacementAndPoolClose(t *testing.T) {
	requireBrowser(t)
	cfg := testConfig(nil)
	cfg.ContextsPerBrowser = 2
	p, err := NewPool(timeout(t, 60*time.Second), cfg)
	if err != nil {
		t.Fatalf("NewPool() = %v", err)
	}
	defer p.Close(context.Background())
	if s := p.Stats(); s.Browsers != 1 || s.Contexts != 0 {
		t.Fatalf("after NewPool, Stats() = %+v, want 1 idle browser", s)
	}

	// Five at once: launches are serialized, and each browser takes two.
	cs := make([]*Context, 5)
	errs := make([]error, 5)
	var wg sync.WaitGroup
	for i := range cs {
		wg.Go(func() { cs[i], errs[i] = p.NewContext(timeout(t, 30*time.Second), ContextOptions{}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent NewContext #%d = %v", i, err)
		}
	}
	if s := p.Stats(); s.Browsers != 3 || s.Contexts != 5 {
		t.Fatalf("with 5 contexts at 2 per browser, Stats() = %+v, want 3 browsers", s)
	}
	for i, c := range cs {
		if got := evaluate(t, c, "21*2"); got != "42" {
			t.Errorf("context #%d: Evaluate(21*2) = %s", i, got)
		}
	}

	// Closing them all leaves one idle browser.
	for _, c := range cs {
		if err := c.Close(timeout(t, 5*time.Second)); err != nil {
			t.Fatalf("Close() = %v", err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Browsers != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s := p.Stats(); s.Browsers != 1 || s.Contexts != 0 {
		t.Fatalf("after closing every context, Stats() = %+v, want 1 idle browser", s)
	}

	held, err := p.NewContext(timeout(t, 30*time.Second), ContextOptions{})
	if err != nil {
		t.Fatalf("NewContext() = %v", err)
	}
	navigate(t, held, site.URL("/"))

	procs := poolProcesses(p)
	if len(procs) < 3 {
		t.Fatal("no child processes found before Pool.Close")
	}
	if err := p.Close(timeout(t, 30*time.Second)); err != nil {
		t.Fatalf("Pool.Close() = %v", err)
	}
	if left := stillRunning(procs, 5*time.Second); len(left) > 0 {
		t.Errorf("after Pool.Close, still running: %v", left)
	}
	if err := p.Close(timeout(t, time.Second)); err != nil {
		t.Errorf("second Pool.Close() = %v, want nil", err)
	}
	if s := p.Stats(); s.Contexts != 0 || s.Browsers != 0 {
		t.Errorf("after Pool.Close, Stats() = %+v, want no contexts or browsers", s)
	}
	if _, err := p.NewContext(timeout(t, time.Second), ContextOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("NewContext after Pool.Close = %v, want ErrClosed", err)
	}
	if _, err := held.Evaluate(timeout(t, time.Second), "1", ""); !errors.Is(err, ErrClosed) {
		t.Errorf("Evaluate on a context of a closed pool = %v, want ErrClosed", err)
	}
	if err := held.Close(timeout(t, time.Second)); err != nil {
		t.Errorf("Close of a context of a closed pool = %v, want nil", err)
	}
}

func TestNewContextHonoursContext(t *testing.T) {
	p := sharedPool(t)
	before := p.Stats().Contexts
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.NewContext(ctx, ContextOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("NewContext with a cancelled context = %v, want context.Canceled", err)
	}
	if got := p.Stats().Contexts; got != before {
		t.Errorf("Stats().Contexts = %d after a cancelled NewContext, want %d", got, before)
	}
}
