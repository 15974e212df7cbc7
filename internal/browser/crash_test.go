package browser

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/playwright-community/playwright-go"
)

func TestBrowserCrash(t *testing.T) {
	p := newPool(t, nil)
	a := openContext(t, p, ContextOptions{})
	b := openContext(t, p, ContextOptions{})
	navigate(t, a, site.URL("/"))
	pids := p.Processes().Browsers
	if len(pids) != 1 || pids[0] == 0 {
		t.Fatalf("Processes().Browsers = %v, want one pid", pids)
	}
	browserProc := procOf(t, pids[0])

	if err := syscall.Kill(browserProc.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*Context{"a": a, "b": b} {
		if err := waitLost(t, c, 2*time.Second); !errors.Is(err, ErrBrowserCrashed) {
			t.Errorf("%s.LostErr() = %v, want ErrBrowserCrashed", name, err)
		}
	}
	if _, err := a.Navigate(timeout(t, 5*time.Second), site.URL("/"), NavigateOptions{}); !errors.Is(err, ErrBrowserCrashed) {
		t.Errorf("Navigate on a lost context = %v, want ErrBrowserCrashed", err)
	}
	if s := p.Stats(); s.BrowserCrashes != 1 || s.Contexts != 2 {
		t.Errorf("Stats() = %+v, want 1 browser crash and 2 contexts (lost, not yet closed)", s)
	}

	c := openContext(t, p, ContextOptions{})
	if res := navigate(t, c, site.URL("/")); res.Title != "Test page" {
		t.Errorf("Navigate on a new context after the crash = %+v", res)
	}
	if pids := p.Processes().Browsers; len(pids) != 1 || pids[0] == browserProc.pid {
		t.Errorf("Processes().Browsers = %v after relaunch, want one new pid", pids)
	}
	for _, c := range []*Context{a, b} {
		if err := c.Close(timeout(t, 5*time.Second)); err != nil {
			t.Errorf("Close of a lost context = %v, want nil", err)
		}
	}
	if got := p.Stats().Contexts; got != 1 {
		t.Errorf("Stats().Contexts = %d, want 1", got)
	}
}

func TestPageCrash(t *testing.T) {
	p := sharedPool(t)
	a := openContext(t, p, ContextOptions{})
	b := openContext(t, p, ContextOptions{})
	navigate(t, a, site.URL("/"))
	navigate(t, b, site.URL("/"))

	// A command pending on the page when it crashes must end too.
	script, started := hangingScript(t)
	errc := make(chan error, 1)
	go func() {
		_, err := a.Evaluate(context.Background(), script, "")
		errc <- err
	}()
	<-started

	// Navigate refuses chrome:// URLs, so crash the renderer through the
	// page itself.
	a.mu.Lock()
	pg := a.page
	a.mu.Unlock()
	_, _ = pg.Goto("chrome://crash", playwright.PageGotoOptions{Timeout: playwright.Float(5000)})

	if err := waitLost(t, a, 2*time.Second); !errors.Is(err, ErrPageCrashed) {
		t.Fatalf("a.LostErr() = %v, want ErrPageCrashed", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrPageCrashed) {
			t.Errorf("Evaluate pending at the crash = %v, want ErrPageCrashed", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Evaluate pending at the crash still running after 3s")
	}
	if _, err := a.Evaluate(timeout(t, 5*time.Second), "1", ""); !errors.Is(err, ErrPageCrashed) {
		t.Errorf("Evaluate on the crashed context = %v, want ErrPageCrashed", err)
	}
	select {
	case <-b.Lost():
		t.Fatalf("b lost too: %v", b.LostErr())
	default:
	}
	if got := evaluate(t, b, "document.title"); got != `"Test page"` {
		t.Errorf("b's Evaluate(document.title) = %s", got)
	}
	if err := a.Close(timeout(t, 5*time.Second)); err != nil {
		t.Errorf("Close of the crashed context = %v, want nil", err)
	}
}

func TestDriverCrash(t *testing.T) {
	p := newPool(t, nil)
	a := openContext(t, p, ContextOptions{})
	b := openContext(t, p, ContextOptions{})
	navigate(t, a, site.URL("/"))
	procs := p.Processes()
	if procs.Driver == 0 || len(procs.Browsers) != 1 || procs.Browsers[0] == 0 {
		t.Fatalf("Processes() = %+v, want a driver and one browser", procs)
	}
	driver, browserProc := procOf(t, procs.Driver), procOf(t, procs.Browsers[0])

	script, started := hangingScript(t)
	errc := make(chan error, 1)
	go func() {
		_, err := a.Evaluate(context.Background(), script, "")
		errc <- err
	}()
	<-started
	if err := syscall.Kill(driver.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrDriverCrashed) {
			t.Errorf("pending Evaluate = %v, want ErrDriverCrashed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("pending Evaluate still running 2s after the driver died")
	}
	for name, c := range map[string]*Context{"a": a, "b": b} {
		if err := waitLost(t, c, 2*time.Second); !errors.Is(err, ErrDriverCrashed) {
			t.Errorf("%s.LostErr() = %v, want ErrDriverCrashed", name, err)
		}
	}
	if !waitExit(5*time.Second, driver, browserProc) {
		t.Errorf("old driver or browser still running 5s after the driver was killed")
	}

	c := openContext(t, p, ContextOptions{})
	if res := navigate(t, c, site.URL("/")); res.Title != "Test page" {
		t.Errorf("Navigate after the driver restart = %+v", res)
	}
	s := p.Stats()
	if s.DriverRestarts != 1 || s.DriverCrashes != 1 || s.Contexts != 3 {
		t.Errorf("Stats() = %+v, want 1 driver restart, 1 driver crash, 3 contexts", s)
	}
	if d := p.Processes().Driver; d == 0 || d == driver.pid {
		t.Errorf("Processes().Driver = %d, want a new driver", d)
	}
	for _, c := range []*Context{a, b} {
		if err := c.Close(timeout(t, 5*time.Second)); err != nil {
			t.Errorf("Close of a lost context = %v, want nil", err)
		}
	}
	if got := p.Stats().Contexts; got != 1 {
		t.Errorf("Stats().Contexts = %d, want 1", got)
	}

	// With no call pending, the watch on the driver's pid notices.
	if err := syscall.Kill(p.Processes().Driver, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := waitLost(t, c, 2*time.Second); !errors.Is(err, ErrDriverCrashed) {
		t.Errorf("with no call pending, LostErr() = %v, want ErrDriverCrashed", err)
	}
	c2 := openContext(t, p, ContextOptions{})
	navigate(t, c2, site.URL("/"))
	if s := p.Stats(); s.DriverRestarts != 2 || s.DriverCrashes != 2 {
		t.Errorf("Stats() = %+v, want 2 driver restarts and crashes", s)
	}
}

func TestHungCloseRetiresBrowser(t *testing.T) {
	p := newPool(t, func(cfg *Config) { cfg.CloseTimeout = time.Second })
	a := openContext(t, p, ContextOptions{})
	b := openContext(t, p, ContextOptions{})
	navigate(t, a, site.URL("/"))
	pids := p.Processes().Browsers
	if len(pids) != 1 || pids[0] == 0 {
		t.Fatalf("Processes().Browsers = %v, want one pid", pids)
	}
	browserProc := procOf(t, pids[0])
	// A stopped browser answers nothing: its context close hangs.
	if err := syscall.Kill(browserProc.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(browserProc.pid, syscall.SIGCONT) })

	start := time.Now()
	err := a.Close(timeout(t, 10*time.Second))
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("Close with a hung browser = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("Close with a hung browser took %s, want about CloseTimeout (1s)", d)
	}
	if err := waitLost(t, b, time.Second); !errors.Is(err, ErrBrowserCrashed) || !strings.Contains(err.Error(), "retired") {
		t.Errorf("b.LostErr() = %v, want ErrBrowserCrashed saying retired", err)
	}
	if !waitExit(5*time.Second, browserProc) {
		t.Errorf("retired browser %d still running", browserProc.pid)
	}
	if s := p.Stats(); s.Retired != 1 || s.BrowserCrashes != 0 || s.Contexts != 1 {
		t.Errorf("Stats() = %+v, want 1 retired, no crash, 1 context (b)", s)
	}

	c := openContext(t, p, ContextOptions{})
	navigate(t, c, site.URL("/"))
	if err := b.Close(timeout(t, 5*time.Second)); err != nil {
		t.Errorf("b.Close() = %v, want nil", err)
	}
}
