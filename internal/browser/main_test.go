package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/browserbroker/broker/internal/proctree"
)

// The package's tests share one pool (started in TestMain) and one local
// HTTP server. Tests that crash or stop processes make their own pool.

var (
	testDriverDir string
	testChromium  string
	setupProblem  string // why browser tests cannot run; empty when they can
	shared        *Pool
	site          *testSite
)

type testMain struct{ m *testing.M }

func (tm testMain) Run() int {
	testDriverDir, testChromium, setupProblem = findBrowser()
	site = newTestSite()
	if setupProblem == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		var err error
		shared, err = NewPool(ctx, testConfig(zap.NewNop()))
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "shared pool:", err)
			site.Close()
			return 1
		}
	}
	code := tm.m.Run()
	if shared != nil {
		before := descendants(os.Getpid())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := shared.Close(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "closing the shared pool:", err)
			code = 1
		}
		cancel()
		if left := stillRunning(before, 5*time.Second); len(left) > 0 {
			fmt.Fprintln(os.Stderr, "processes left after closing the shared pool:", left)
			code = 1
		}
	}
	site.Close()
	return code
}

func TestMain(m *testing.M) {
	// No ignores: once every pool is closed, playwright-go leaves no
	// goroutine behind.
	goleak.VerifyTestMain(testMain{m})
}

// findBrowser locates the driver (PLAYWRIGHT_DRIVER_PATH, else
// .cache/playwright/<version> beside go.mod) and Chromium (BROKER_CHROMIUM,
// else /usr/bin/chromium).
func findBrowser() (driverDir, chromium, problem string) {
	driverDir = os.Getenv("PLAYWRIGHT_DRIVER_PATH")
	if driverDir == "" {
		if dir, err := os.Getwd(); err == nil {
			for {
				if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
					driverDir = filepath.Join(dir, ".cache", "playwright", DriverVersion)
					break
				}
				parent := filepath.Dir(dir)
				if parent == dir {
					break
				}
				dir = parent
			}
		}
	}
	chromium = os.Getenv("BROKER_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if err := Check(Config{DriverDir: driverDir, ExecutablePath: chromium}); err != nil {
		return driverDir, chromium, err.Error()
	}
	return driverDir, chromium, ""
}

// requireBrowser skips the test when no browser is installed, unless
// BROKER_REQUIRE_BROWSER is set.
func requireBrowser(tb testing.TB) {
	tb.Helper()
	if setupProblem == "" {
		return
	}
	if os.Getenv("BROKER_REQUIRE_BROWSER") != "" {
		tb.Fatalf("browser required (BROKER_REQUIRE_BROWSER is set): %s", setupProblem)
	}
	tb.Skipf("no browser: %s", setupProblem)
}

func testConfig(log *zap.Logger) Config {
	return Config{
		DriverDir:      testDriverDir,
		ExecutablePath: testChromium,
		Logger:         log,
	}
}

// newPool starts a pool of the test's own, closed (and checked for leftover
// processes) at cleanup.
func newPool(tb testing.TB, edit func(*Config)) *Pool {
	tb.Helper()
	requireBrowser(tb)
	cfg := testConfig(zaptest.NewLogger(tb, zaptest.Level(zap.InfoLevel)))
	if edit != nil {
		edit(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := NewPool(ctx, cfg)
	if err != nil {
		tb.Fatalf("NewPool() = %v, want a pool", err)
	}
	tb.Cleanup(func() {
		before := poolProcesses(p)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			tb.Errorf("Pool.Close() = %v, want nil", err)
		}
		if left := stillRunning(before, 5*time.Second); len(left) > 0 {
			tb.Errorf("after Pool.Close, still running: %v", left)
		}
	})
	return p
}

// sharedPool returns the package's shared pool.
func sharedPool(tb testing.TB) *Pool {
	tb.Helper()
	requireBrowser(tb)
	return shared
}

// openContext opens a context closed at cleanup.
func openContext(tb testing.TB, p *Pool, opts ContextOptions) *Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := p.NewContext(ctx, opts)
	if err != nil {
		tb.Fatalf("NewContext() = %v, want a context", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// timeout returns a context ending after d, cancelled at cleanup.
func timeout(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

func navigate(tb testing.TB, c *Context, url string) NavigateResult {
	tb.Helper()
	res, err := c.Navigate(timeout(tb, 15*time.Second), url, NavigateOptions{})
	if err != nil {
		tb.Fatalf("Navigate(%s) = %v, want success", url, err)
	}
	return res
}

func evaluate(tb testing.TB, c *Context, expr string) string {
	tb.Helper()
	got, err := c.Evaluate(timeout(tb, 10*time.Second), expr, "")
	if err != nil {
		tb.Fatalf("Evaluate(%q) = %v, want success", expr, err)
	}
	return got
}

// waitLost waits up to d for c to be lost and returns LostErr.
func waitLost(tb testing.TB, c *Context, d time.Duration) error {
	tb.Helper()
	select {
	case <-c.Lost():
		return c.LostErr()
	case <-time.After(d):
		tb.Fatalf("Lost() not closed within %s", d)
		return nil
	}
}

// testSite is the local web server every page comes from.
type testSite struct {
	*httptest.Server
	stop chan struct{} // ends hanging responses

	mu      sync.Mutex
	started map[string]chan struct{}
}

const formPage = `<!doctype html>
<html><head><title>Test page</title></head><body>
<form id="f" onsubmit="event.preventDefault(); document.getElementById('out').textContent = 'hello ' + document.getElementById('name').value">
  <input id="name" name="name"><button type="submit">Send</button>
</form>
<p id="out"></p>
<ul><li class="item">one</li><li class="item">two</li><li class="item">three</li></ul>
<button id="toggle" onclick="this.textContent = 'clicked'">click me</button>
<button id="reveal" onclick="setTimeout(() => { const s = document.createElement('span'); s.id = 'late'; s.textContent = 'late'; document.body.appendChild(s) }, 200)">reveal</button>
<div style="height: 3000px">tall</div>
</body></html>`

func newTestSite() *testSite {
	s := &testSite{stop: make(chan struct{}), started: map[string]chan struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, formPage)
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		// Promise a body that never completes.
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Length", "100000")
		fmt.Fprint(w, "<!doctype html><html><head><title>hang</title></head><body>loading")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-s.stop:
		}
	})
	mux.HandleFunc("/started", func(w http.ResponseWriter, r *http.Request) {
		s.signal(r.URL.Query().Get("id"))
		w.Header().Set("Access-Control-Allow-Origin", "*")
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		b, _ := json.Marshal(r.Header)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<pre id=h>%s</pre>", strings.ReplaceAll(string(b), "<", "&lt;"))
	})
	mux.HandleFunc("/setcookie", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "server", Value: "yes", Path: "/"})
		fmt.Fprint(w, "<p>cookie set</p>")
	})
	s.Server = httptest.NewServer(mux)
	return s
}

func (s *testSite) URL(path string) string { return s.Server.URL + path }

func (s *testSite) Close() {
	close(s.stop)
	s.Server.Close()
}

// startedChan returns a channel closed when the page fetches
// /started?id=<id>: the test's signal that a script is running.
func (s *testSite) startedChan(id string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.started[id]
	if !ok {
		ch = make(chan struct{})
		s.started[id] = ch
	}
	return ch
}

func (s *testSite) signal(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.started[id]
	if !ok {
		ch = make(chan struct{})
		s.started[id] = ch
	}
	select {
	case <-ch:
	default:
		close(ch)
	}
}

var startedSeq struct {
	sync.Mutex
	n int
}

// hangingScript returns a script that tells the site it runs, then never
// finishes, and the channel closed once it runs.
func hangingScript(tb testing.TB) (string, <-chan struct{}) {
	startedSeq.Lock()
	startedSeq.n++
	id := tb.Name() + "-" + strconv.Itoa(startedSeq.n)
	startedSeq.Unlock()
	script := fmt.Sprintf("fetch(%q).then(() => new Promise(() => {}))", site.URL("/started?id="+id))
	return script, site.startedChan(id)
}

// descendants lists the live processes below pid.
func descendants(pid int) []proc {
	var out []proc
	for _, p := range proctree.Tree(pid) {
		out = append(out, proc{pid: p.PID, start: p.Start})
	}
	return out
}

// poolProcesses lists p's driver and everything below it (the browsers and
// their helpers). Other pools' processes are not included.
func poolProcesses(p *Pool) []proc {
	driver := p.Processes().Driver
	if driver == 0 {
		return nil
	}
	d, ok := proctree.Find(driver)
	if !ok {
		return nil
	}
	return append(descendants(driver), proc{pid: driver, start: d.Start})
}

// stillRunning waits up to d for procs to exit and returns those that did
// not, with their command names.
func stillRunning(procs []proc, d time.Duration) []string {
	waitExit(d, procs...)
	var left []string
	for _, p := range procs {
		if p.alive() {
			cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/comm")
			left = append(left, fmt.Sprintf("%d(%s)", p.pid, strings.TrimSpace(string(cmd))))
		}
	}
	return left
}

// procOf returns the proc of a pid known to be alive.
func procOf(tb testing.TB, pid int) proc {
	tb.Helper()
	p, ok := proctree.Find(pid)
	if pid <= 0 || !ok {
		tb.Fatalf("process %d not found", pid)
	}
	return proc{pid: pid, start: p.Start}
}
