package browser

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/browserbroker/broker/internal/proctree"
)

// browserServer is Playwright's browser server (chromium.launchServer with
// the test Chromium), run by the driver's node on loopback: a remote
// source as `playwright launch-server` would give.
type browserServer struct {
	endpoint string
	port     int
	cmd      *exec.Cmd
	stderr   *lockedBuffer
	waitOnce sync.Once
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startBrowserServer starts a browser server on port (0: any) serving
// wsPath, killed at cleanup.
func startBrowserServer(tb testing.TB, port int, wsPath string) *browserServer {
	tb.Helper()
	requireBrowser(tb)
	script, err := filepath.Abs(filepath.Join("testdata", "browser_server.js"))
	if err != nil {
		tb.Fatal(err)
	}
	// The driver's launcher runs node in its own session (so the server
	// can be killed as a group) and kills it if we die.
	cmd := exec.Command(filepath.Join(testDriverDir, "node"), script,
		filepath.Join(testDriverDir, "package"), testChromium, strconv.Itoa(port), wsPath)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	s := &browserServer{cmd: cmd, stderr: &lockedBuffer{}}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start browser server: %v", err)
	}
	tb.Cleanup(func() { s.kill(tb) })

	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(l)
	}()
	select {
	case s.endpoint = <-line:
	case <-time.After(30 * time.Second):
		s.kill(tb)
		tb.Fatalf("browser server printed no endpoint within 30s; stderr: %s", s.stderr)
	}
	u, err := url.Parse(s.endpoint)
	if err != nil || u.Scheme != "ws" {
		s.kill(tb)
		tb.Fatalf("browser server printed %q, want a ws:// endpoint; stderr: %s", s.endpoint, s.stderr)
	}
	if s.port, err = strconv.Atoi(u.Port()); err != nil {
		tb.Fatalf("endpoint %q has no port", s.endpoint)
	}
	return s
}

// kill kills the server's process group and everything below it (its
// Chromium runs in a group of its own), and waits until they are gone.
func (s *browserServer) kill(tb testing.TB) {
	tb.Helper()
	pid := s.cmd.Process.Pid
	procs := descendants(pid)
	if p, ok := proctree.Find(pid); ok {
		procs = append(procs, proc{pid: pid, start: p.Start})
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for _, p := range procs {
		p.kill()
	}
	s.waitOnce.Do(func() { _ = s.cmd.Wait() })
	if left := stillRunning(procs, 5*time.Second); len(left) > 0 {
		tb.Errorf("browser server processes still running after SIGKILL: %v", left)
	}
}

func TestRemoteSource(t *testing.T) {
	const wsPath = "/remote-source"
	srv := startBrowserServer(t, 0, wsPath)
	p := newPool(t, func(c *Config) {
		c.NoLocal = true
		c.Connect = []string{srv.endpoint}
	})
	s := p.Stats()
	if len(s.Sources) != 1 || s.Sources[0].Name != srv.endpoint || !s.Sources[0].Connected || s.Sources[0].Browsers != 1 {
		t.Fatalf("Stats().Sources = %+v, want %s connected with 1 browser", s.Sources, srv.endpoint)
	}
	if procs := p.Processes(); len(procs.Browsers) != 0 || procs.Driver == 0 {
		t.Errorf("Processes() = %+v, want the driver and no local browser", procs)
	}

	a := openContext(t, p, ContextOptions{})
	b := openContext(t, p, ContextOptions{})
	if want := srv.endpoint + "#1"; a.Browser() != want || b.Browser() != want {
		t.Errorf("Browser() = %q and %q, want %q", a.Browser(), b.Browser(), want)
	}
	for name, c := range map[string]*Context{"a": a, "b": b} {
		if res := navigate(t, c, site.URL("/")); res.Title != "Test page" {
			t.Errorf("%s: Navigate through the remote browser = %+v", name, res)
		}
	}
	if s := p.Stats(); s.Sources[0].Contexts != 2 || s.Contexts != 2 {
		t.Errorf("Stats() = %+v, want 2 contexts, on the remote source", s)
	}

	srv.kill(t)
	for name, c := range map[string]*Context{"a": a, "b": b} {
		err := waitLost(t, c, 2*time.Second)
		if !errors.Is(err, ErrBrowserCrashed) || !strings.Contains(err.Error(), srv.endpoint) {
			t.Errorf("%s.LostErr() = %v, want ErrBrowserCrashed naming %s", name, err, srv.endpoint)
		}
	}
	s = p.Stats()
	if src := s.Sources[0]; src.Connected || src.Disconnects != 1 || src.LastError == "" || s.BrowserCrashes != 1 {
		t.Errorf("Stats() after the server died = %+v, want the source down with 1 disconnect and an error", s)
	}
	_, err := p.NewContext(timeout(t, 10*time.Second), ContextOptions{})
	if !errors.Is(err, ErrLaunch) || !strings.Contains(err.Error(), srv.endpoint) {
		t.Errorf("NewContext with the only source down = %v, want ErrLaunch naming %s", err, srv.endpoint)
	}
	closeContext(t, a)
	closeContext(t, b)

	again := startBrowserServer(t, srv.port, wsPath)
	if again.endpoint != srv.endpoint {
		t.Fatalf("restarted server at %s, want %s", again.endpoint, srv.endpoint)
	}
	s = waitStats(t, p, 20*time.Second, "the source reconnected", func(s Stats) bool { return s.Sources[0].Connected })
	if src := s.Sources[0]; src.LastError != "" || src.Browsers != 1 {
		t.Errorf("Sources[0] after reconnecting = %+v, want 1 browser and no error", src)
	}
	c := openContext(t, p, ContextOptions{})
	if want := srv.endpoint + "#2"; c.Browser() != want {
		t.Errorf("Browser() after reconnecting = %q, want %q", c.Browser(), want)
	}
	if res := navigate(t, c, site.URL("/")); res.Title != "Test page" {
		t.Errorf("Navigate after reconnecting = %+v", res)
	}
}

func TestRemoteSourceRetirement(t *testing.T) {
	srv := startBrowserServer(t, 0, "/retire")
	server := procOf(t, srv.cmd.Process.Pid)
	p := newPool(t, func(c *Config) {
		c.NoLocal = true
		c.Connect = []string{srv.endpoint}
		c.BrowserMaxContexts = 1
	})
	a := openContext(t, p, ContextOptions{})
	navigate(t, a, site.URL("/"))
	b := openContext(t, p, ContextOptions{})
	if a.Browser() == b.Browser() {
		t.Fatalf("both contexts on %s, want the second on a fresh connection", a.Browser())
	}
	navigate(t, a, site.URL("/"))
	navigate(t, b, site.URL("/"))

	// Closing the retired connection's last context disconnects it, and
	// leaves the server (and the other connection) alone.
	closeContext(t, a)
	// Left: b's connection, retired too, and a fresh one.
	s := waitStats(t, p, 10*time.Second, "a's connection gone, b's retiring beside a fresh one",
		func(s Stats) bool { return s.Sources[0].Browsers == 2 && s.Retiring == 1 })
	if s.Retired != 2 {
		t.Errorf("Stats() = %+v, want 2 retired", s)
	}
	if !server.alive() {
		t.Fatal("browser server died when the pool retired a connection to it")
	}
	if got := evaluate(t, b, "1 + 1"); got != "2" {
		t.Errorf("b after a's connection retired: Evaluate = %s", got)
	}
	if s := p.Stats(); s.BrowserCrashes != 0 || s.Sources[0].Disconnects != 0 {
		t.Errorf("Stats() = %+v, want no crash and no disconnect: retirement is no loss", s)
	}
	c := openContext(t, p, ContextOptions{})
	if c.Browser() == a.Browser() || c.Browser() == b.Browser() {
		t.Errorf("third context on %s, want the fresh connection", c.Browser())
	}
	navigate(t, c, site.URL("/"))
}

func TestLocalAndRemoteSources(t *testing.T) {
	srv := startBrowserServer(t, 0, "/shared")
	p := newPool(t, func(c *Config) {
		c.Connect = []string{srv.endpoint}
		c.MaxContexts = 4
		c.Warm = 2
	})
	s := p.Stats()
	if len(s.Sources) != 2 || s.Sources[0].Name != "local" || s.Sources[1].Name != srv.endpoint ||
		!s.Sources[0].Connected || !s.Sources[1].Connected {
		t.Fatalf("Stats().Sources = %+v, want local then %s, both up", s.Sources, srv.endpoint)
	}
	waitWarm(t, p, 2)

	// Four contexts that need room: the warm ones yield, whichever source
	// they are on, and the contexts spread over both sources.
	var cs []*Context
	for range 4 {
		c := openContext(t, p, ContextOptions{Locale: "fr-FR"})
		navigate(t, c, site.URL("/"))
		cs = append(cs, c)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		p.mu.Lock()
		creating, warm, total := p.warmCreating, len(p.warm), p.totalLocked()
		p.mu.Unlock()
		if creating == 0 {
			if warm != 0 || total != 4 {
				t.Fatalf("settled with %d warm and %d contexts in all, want 0 warm and the 4 handed out", warm, total)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a warm context is still being made after 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	s = p.Stats()
	local, remote := s.Sources[0], s.Sources[1]
	if local.Contexts+remote.Contexts != 4 || local.Contexts == 0 || remote.Contexts == 0 {
		t.Errorf("Sources = %+v, want the 4 contexts spread over both", s.Sources)
	}
	if s.Launches != 1 || local.Browsers != 1 || remote.Browsers != 1 {
		t.Errorf("Stats() = %+v, want the one local browser and the one connection", s)
	}
	for _, c := range cs {
		closeContext(t, c)
	}
	waitWarm(t, p, 2)
}

func TestRemoteSourceDriverCrash(t *testing.T) {
	srv := startBrowserServer(t, 0, "/driver-crash")
	p := newPool(t, func(c *Config) {
		c.NoLocal = true
		c.Connect = []string{srv.endpoint}
	})
	a := openContext(t, p, ContextOptions{})
	navigate(t, a, site.URL("/"))
	driver := procOf(t, p.Processes().Driver)

	// A call pending on the remote connection must end with the driver.
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
	case <-time.After(3 * time.Second):
		t.Fatal("pending Evaluate on a remote browser still running 3s after the driver died")
	}
	if err := waitLost(t, a, 2*time.Second); !errors.Is(err, ErrDriverCrashed) {
		t.Errorf("LostErr() = %v, want ErrDriverCrashed", err)
	}
	closeContext(t, a)

	// The source reconnects through a new driver.
	s := waitStats(t, p, 20*time.Second, "the source reconnected", func(s Stats) bool { return s.Sources[0].Connected })
	if s.DriverCrashes != 1 || s.Sources[0].Disconnects != 1 {
		t.Errorf("Stats() = %+v, want 1 driver crash and 1 disconnect", s)
	}
	if d := p.Processes().Driver; d == 0 || d == driver.pid {
		t.Errorf("Processes().Driver = %d, want a new driver", d)
	}
	c := openContext(t, p, ContextOptions{})
	if res := navigate(t, c, site.URL("/")); res.Title != "Test page" {
		t.Errorf("Navigate after the driver restart = %+v", res)
	}
}

func TestNewPoolBadEndpointNoLocal(t *testing.T) {
	requireBrowser(t)
	const endpoint = "ws://127.0.0.1:1/nobody-home"
	before := descendants(os.Getpid())
	cfg := testConfig(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	cfg.NoLocal = true
	cfg.Connect = []string{endpoint}
	p, err := NewPool(timeout(t, 60*time.Second), cfg)
	if err == nil {
		_ = p.Close(context.Background())
		t.Fatal("NewPool with only an unreachable endpoint = a pool, want an error")
	}
	if !errors.Is(err, ErrLaunch) || !strings.Contains(err.Error(), endpoint) {
		t.Errorf("NewPool with only an unreachable endpoint = %v, want ErrLaunch naming %s", err, endpoint)
	}
	var started []proc
	known := map[proc]bool{}
	for _, pr := range before {
		known[pr] = true
	}
	for _, pr := range descendants(os.Getpid()) {
		if !known[pr] {
			started = append(started, pr)
		}
	}
	if left := stillRunning(started, 5*time.Second); len(left) > 0 {
		t.Errorf("after the failed NewPool, still running: %v", left)
	}
}

func TestCheckSources(t *testing.T) {
	base := Config{DriverDir: testDriverDir, ExecutablePath: testChromium}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // empty: no error
	}{
		{"defaults", func(*Config) {}, ""},
		{"chromium", func(c *Config) { c.BrowserType = "chromium" }, ""},
		{"remote only", func(c *Config) { c.NoLocal = true; c.Connect = []string{"ws://127.0.0.1:9/x"} }, ""},
		{"bad browser type", func(c *Config) { c.BrowserType = "opera" }, `browser type "opera"`},
		{"not a websocket", func(c *Config) { c.Connect = []string{"http://127.0.0.1:9/x"} }, `"http://127.0.0.1:9/x"`},
		{"no host", func(c *Config) { c.Connect = []string{"ws:///x"} }, `"ws:///x"`},
		{"twice", func(c *Config) { c.Connect = []string{"ws://a:1/", "ws://a:1/"} }, "given twice"},
		{"no source", func(c *Config) { c.NoLocal = true }, "no browser source"},
		{"negative age", func(c *Config) { c.BrowserMaxAge = -time.Second }, "negative"},
		{"negative warm refill delay", func(c *Config) { c.WarmRefillMaxDelay = -time.Second }, "warm refill max delay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.edit(&cfg)
			err := checkSources(cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("checkSources() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("checkSources() = %v, want ErrInvalidArgument mentioning %q", err, tc.want)
			}
		})
	}
	t.Run("remote only needs no chromium", func(t *testing.T) {
		requireBrowser(t)
		cfg := Config{DriverDir: testDriverDir, NoLocal: true, Connect: []string{"wss://example.com/pw"}}
		if err := Check(cfg); err != nil {
			t.Fatalf("Check(%+v) = %v, want nil", cfg, err)
		}
	})
}

func TestReconnectDelay(t *testing.T) {
	for _, tc := range []struct {
		failures int
		want     time.Duration
	}{
		{0, 250 * time.Millisecond}, // spacing after a success
		{1, 250 * time.Millisecond},
		{2, 500 * time.Millisecond},
		{3, time.Second},
		{8, 30 * time.Second}, // 32s, capped
		{1000, 30 * time.Second},
	} {
		if got := reconnectDelay(tc.failures); got != tc.want {
			t.Errorf("reconnectDelay(%d) = %s, want %s", tc.failures, got, tc.want)
		}
	}
}
