package browser

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestNavigateHangTimesOut(t *testing.T) {
	p := sharedPool(t)
	c := openContext(t, p, ContextOptions{})
	start := time.Now()
	_, err := c.Navigate(timeout(t, time.Second), site.URL("/hang"), NavigateOptions{})
	took := time.Since(start)
	t.Logf("Navigate(/hang) with 1s returned after %s: %v", took, err)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Navigate(/hang) with 1s = %v, want ErrTimeout and DeadlineExceeded", err)
	}
	if took < 900*time.Millisecond || took > 2*time.Second {
		t.Errorf("Navigate(/hang) with 1s took %s, want about 1s", took)
	}
	if res := navigate(t, c, site.URL("/")); res.Title != "Test page" {
		t.Errorf("Navigate(/) after the timeout = %+v, want the test page", res)
	}
	if err := c.Click(timeout(t, 5*time.Second), "#toggle"); err != nil {
		t.Errorf("Click after the timeout = %v", err)
	}
}

func TestEvaluateHangReplacesPage(t *testing.T) {
	p := sharedPool(t)
	for _, tc := range []struct{ name, expr string }{
		{"promise", "new Promise(() => {})"},
		{"busy loop", "while (true) {}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := openContext(t, p, ContextOptions{})
			navigate(t, c, site.URL("/"))
			evaluate(t, c, "localStorage.setItem('kept', 'yes')")
			if err := c.SetCookies(timeout(t, 5*time.Second), []Cookie{{Name: "kept", Value: "yes", URL: site.URL("/")}}); err != nil {
				t.Fatalf("SetCookies() = %v", err)
			}

			start := time.Now()
			_, err := c.Evaluate(timeout(t, time.Second), tc.expr, "")
			took := time.Since(start)
			t.Logf("Evaluate(%q) with 1s returned after %s: %v", tc.expr, took, err)
			if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrTimeout) {
				t.Fatalf("Evaluate(%q) with 1s = %v, want DeadlineExceeded and ErrTimeout", tc.expr, err)
			}
			// 1s, the 250ms grace, then Chromium's 500ms unload timeout for
			// a busy renderer: about 1.8s. Leave room for a loaded machine.
			if took > 2500*time.Millisecond {
				t.Errorf("Evaluate(%q) with 1s took %s, want about 2s at most", tc.expr, took)
			}
			if c.LostErr() != nil {
				t.Fatalf("context lost after a cancelled Evaluate: %v", c.LostErr())
			}

			if got := evaluate(t, c, "1+1"); got != "2" {
				t.Errorf("Evaluate(1+1) after the hang = %s, want 2", got)
			}
			cookies, err := c.Cookies(timeout(t, 5*time.Second), site.URL("/"))
			if err != nil || len(cookies) != 1 || cookies[0].Value != "yes" {
				t.Errorf("Cookies() after the hang = %+v, %v; want kept=yes", cookies, err)
			}
			navigate(t, c, site.URL("/"))
			if got := evaluate(t, c, "localStorage.getItem('kept')"); got != `"yes"` {
				t.Errorf("localStorage after the hang = %s, want \"yes\"", got)
			}
		})
	}
}

func TestCancelHangingCommand(t *testing.T) {
	p := sharedPool(t)
	c := openContext(t, p, ContextOptions{})
	navigate(t, c, site.URL("/"))
	script, started := hangingScript(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-started
		cancel()
	}()
	start := time.Now()
	_, err := c.Evaluate(ctx, script, "")
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Fatalf("Evaluate(hanging) cancelled = %v, want context.Canceled (not ErrTimeout)", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("cancelled Evaluate took %s", d)
	}
	if got := evaluate(t, c, "1+1"); got != "2" {
		t.Errorf("Evaluate(1+1) after the cancel = %s, want 2", got)
	}
}

func TestCloseDuringHangingCommand(t *testing.T) {
	p := sharedPool(t)
	c := openContext(t, p, ContextOptions{})
	navigate(t, c, site.URL("/"))
	before := p.Stats().Contexts

	script, started := hangingScript(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Evaluate(context.Background(), script, "")
		errc <- err
	}()
	<-started
	start := time.Now()
	if err := c.Close(timeout(t, 10*time.Second)); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("hanging Evaluate after Close = %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("hanging Evaluate still running 2s after Close")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close with a hanging command took %s", d)
	}
	if got := p.Stats().Contexts; got != before-1 {
		t.Errorf("Stats().Contexts = %d after Close, want %d", got, before-1)
	}
	if c.LostErr() != nil {
		t.Errorf("LostErr() = %v after Close, want nil", c.LostErr())
	}
}

func TestCloseIdempotent(t *testing.T) {
	p := sharedPool(t)
	before := p.Stats().Contexts
	c := openContext(t, p, ContextOptions{})
	if got := p.Stats().Contexts; got != before+1 {
		t.Fatalf("Stats().Contexts = %d after NewContext, want %d", got, before+1)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = c.Close(timeout(t, 10*time.Second)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Close #%d = %v, want nil", i, err)
		}
	}
	if err := c.Close(timeout(t, time.Second)); err != nil {
		t.Errorf("Close again = %v, want nil", err)
	}
	if got := p.Stats().Contexts; got != before {
		t.Errorf("Stats().Contexts = %d after closing, want %d", got, before)
	}
	if err := c.Click(timeout(t, time.Second), "p"); !errors.Is(err, ErrClosed) {
		t.Errorf("Click after Close = %v, want ErrClosed", err)
	}
	select {
	case <-c.Lost():
		t.Error("Lost() closed by Close")
	default:
	}
}
