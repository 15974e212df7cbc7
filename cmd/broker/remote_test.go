package main

import (
	"bufio"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// browserServer is Playwright's browser server (chromium.launchServer from
// the driver's playwright-core, with the test Chromium) on loopback: what
// `--connect` attaches to.
type browserServer struct {
	endpoint string
	port     int
	cmd      *exec.Cmd
	exited   chan struct{}
	killed   bool
}

// startBrowserServer starts a browser server on port (0: any) serving
// wsPath, with internal/browser's script, and kills it at cleanup.
func startBrowserServer(t *testing.T, port int, wsPath string) *browserServer {
	t.Helper()
	needDeps(t)
	chromium := os.Getenv("BROKER_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "internal", "browser", "testdata", "browser_server.js"))
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := filepath.Abs(filepath.Join(driverDir(), "package"))
	if err != nil {
		t.Fatal(err)
	}
	// The driver's node wrapper runs node in a session of its own (so the
	// server can be killed as a group) that dies with us.
	cmd := exec.Command(filepath.Join(driverDir(), "node"), script, pkg, chromium, strconv.Itoa(port), wsPath)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = writerFunc(func(b []byte) (int, error) { stderr.WriteString(string(b)); return len(b), nil })
	if err := cmd.Start(); err != nil {
		t.Fatalf("start browser server: %v", err)
	}
	s := &browserServer{cmd: cmd, exited: make(chan struct{})}
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(l)
		cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() { s.kill(t) })
	select {
	case s.endpoint = <-line:
	case <-time.After(30 * time.Second):
		t.Fatalf("browser server printed no endpoint within 30s; stderr: %s", stderr.String())
	}
	u, err := url.Parse(s.endpoint)
	if err != nil || u.Scheme != "ws" {
		t.Fatalf("browser server printed %q, want a ws:// endpoint; stderr: %s", s.endpoint, stderr.String())
	}
	if s.port, err = strconv.Atoi(u.Port()); err != nil {
		t.Fatalf("endpoint %q has no port", s.endpoint)
	}
	return s
}

// kill SIGKILLs the server and its Chromium (in a process group of its
// own), and waits until they are gone. It returns when it sent the kill.
// Only the first call kills: the pids may be reused afterwards.
func (s *browserServer) kill(t *testing.T) time.Time {
	t.Helper()
	if s.killed {
		return time.Time{}
	}
	s.killed = true
	pid := s.cmd.Process.Pid
	procs := append(descendants(pid), pid)
	at := time.Now()
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for _, p := range procs {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	<-s.exited
	waitGone(t, procs, 5*time.Second)
	return at
}

// A lease on a remote browser (--no-local --connect ws://…) is revoked
// with BROWSER_CRASHED when the browser server dies; acquires fail while
// it is down; when it is back the broker reconnects by itself and a new
// acquire gets a working browser context on it.
func TestRemoteSourceDisconnectAndReconnect(t *testing.T) {
	const wsPath = "/broker-remote"
	srv := startBrowserServer(t, 0, wsPath)
	p := startBroker(t, "--max-leases", "2", "--no-local", "--connect", srv.endpoint)
	site := newFaultSite(t)
	conn := dial(t, p.addr)
	page, admin := brokerv1.NewPageServiceClient(conn), brokerv1.NewAdminServiceClient(conn)
	if pids := p.browserPids(t); len(pids) != 0 {
		t.Fatalf("broker launched browsers %v with --no-local, want none", pids)
	}
	connected := func(want bool) func(*brokerv1.GetStatsResponse) bool {
		return func(s *brokerv1.GetStatsResponse) bool {
			src := s.GetSources()
			return len(src) == 1 && src[0].GetName() == srv.endpoint && src[0].GetConnected() == want
		}
	}
	if s := getStats(t, admin); !connected(true)(s) {
		t.Fatalf("GetStats().sources = %v, want only %s, connected", s.GetSources(), srv.endpoint)
	}

	l := acquireLease(t, conn, 0)
	navigate(t, page, l.id, site.URL+"/a")
	if got := evaluate(t, page, l.id, "document.title"); got != `"page a"` {
		t.Fatalf("Evaluate(document.title) on the remote browser = %s, want \"page a\"", got)
	}
	if s := getStats(t, admin); s.GetSources()[0].GetContexts() != 1 {
		t.Fatalf("GetStats().sources = %v, want the lease's context on the remote source", s.GetSources())
	}

	killed := srv.kill(t)
	l.wantRevoked(t, brokerv1.ReclaimReason_RECLAIM_REASON_BROWSER_CRASHED, killed, crashBound)
	s, _ := waitStats(t, admin, killed, 10*time.Second, "the source down and the lease reclaimed", func(s *brokerv1.GetStatsResponse) bool {
		return connected(false)(s) && settled(0)(s)
	})
	if src := s.GetSources()[0]; src.GetDisconnects() != 1 || src.GetLastError() == "" {
		t.Errorf("source after the server died = %v, want 1 disconnect and its error", src)
	}
	if err := tryAcquire(t, conn); status.Code(err) != codes.Unavailable {
		t.Errorf("acquire with the only source down = %v, want UNAVAILABLE", err)
	}

	again := startBrowserServer(t, srv.port, wsPath)
	if again.endpoint != srv.endpoint {
		t.Fatalf("restarted browser server at %s, want %s", again.endpoint, srv.endpoint)
	}
	waitStats(t, admin, time.Now(), 40*time.Second, "the source reconnected", connected(true))
	l = acquireLease(t, conn, 0)
	navigate(t, page, l.id, site.URL+"/c")
	if got := evaluate(t, page, l.id, "document.title"); got != `"page c"` {
		t.Fatalf("Evaluate(document.title) after the reconnect = %s, want \"page c\"", got)
	}
	l.release(t)
	waitStats(t, admin, time.Now(), 10*time.Second, "invariant ok, nothing left", settled(0))
}
