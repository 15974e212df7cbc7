package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/proctree"
)

// These tests run the real binaries as subprocesses, as operators do.
var (
	binDir   string
	haveDeps bool
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "broker-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", dir, "github.com/browserbroker/broker/cmd/broker", "github.com/browserbroker/broker/cmd/client")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	_, err = os.Stat(filepath.Join(driverDir(), "package", "cli.js"))
	haveDeps = err == nil
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func driverDir() string {
	if d := os.Getenv("PLAYWRIGHT_DRIVER_PATH"); d != "" {
		return d
	}
	return filepath.Join("..", "..", ".cache", "playwright", playwrightVersion)
}

func needDeps(t *testing.T) {
	t.Helper()
	if !haveDeps {
		if os.Getenv("BROKER_REQUIRE_BROWSER") != "" {
			t.Fatal("Playwright driver missing; run make setup")
		}
		t.Skip("Playwright driver missing; run `make test`")
	}
}

type brokerProc struct {
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
	exited chan struct{}
}

// startBroker runs the broker on a free loopback port and waits until it
// listens.
func startBroker(t *testing.T, args ...string) *brokerProc {
	t.Helper()
	needDeps(t)
	all := append([]string{"--addr", "127.0.0.1:0", "--log-format", "json", "--driver-dir", driverDir(),
		"--state-dir", t.TempDir()}, args...)
	cmd := exec.Command(filepath.Join(binDir, "broker"), all...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &brokerProc{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{})}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			p.stderr.WriteString(line + "\n")
			var entry struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "broker listening" {
				addrc <- entry.Addr
			}
		}
	}()
	go func() { cmd.Wait(); pw.Close(); close(p.exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	select {
	case p.addr = <-addrc:
	case <-p.exited:
		t.Fatalf("broker exited before listening:\n%s", p.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("broker not listening after 60s:\n%s", p.stderr.String())
	}
	return p
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) WriteString(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(v)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// descendants lists the pids below pid.
func descendants(pid int) []int {
	var out []int
	for _, p := range proctree.Tree(pid) {
		out = append(out, p.PID)
	}
	return out
}

func waitGone(t *testing.T, pids []int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var left []int
		for _, p := range pids {
			if proctree.Running(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %v still alive %v after the broker ended", left, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestRefusesToStartWithoutDriver(t *testing.T) {
	out, err := exec.Command(filepath.Join(binDir, "broker"), "--driver-dir", "/nonexistent/driver").CombinedOutput()
	if err == nil {
		t.Fatalf("broker started without a driver:\n%s", out)
	}
	if !strings.Contains(string(out), "/nonexistent/driver") || !strings.Contains(string(out), "make setup") {
		t.Fatalf("error = %s, want it to name the folder and `make setup`", out)
	}
	out, err = exec.Command(filepath.Join(binDir, "broker"), "--driver-dir", driverDir(), "--chromium", "/nonexistent/chromium").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "/nonexistent/chromium") {
		t.Fatalf("broker with a missing Chromium: %v\n%s; want a refusal naming it", err, out)
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(filepath.Join(binDir, "broker"), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "broker ") {
		t.Fatalf("broker --version = %q, %v", out, err)
	}
}

// The README's tour: the broker, then `client lease --screenshot`.
func TestClientLeaseWritesScreenshot(t *testing.T) {
	p := startBroker(t, "--max-leases", "2")
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<title>Tour</title><h1>Hello from the tour</h1><p class=x>one</p><p class=x>two</p>`)
	}))
	defer site.Close()
	shot := filepath.Join(t.TempDir(), "x.png")
	out, err := exec.Command(filepath.Join(binDir, "client"), "--addr", p.addr, "lease", "--url", site.URL,
		"--screenshot", shot, "--text", "p.x", "--eval", "document.title").CombinedOutput()
	if err != nil {
		t.Fatalf("client lease: %v\n%s\nbroker:\n%s", err, out, p.stderr.String())
	}
	for _, want := range []string{"one", "two", `"Tour"`, "RELEASED"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("client output lacks %q:\n%s", want, out)
		}
	}
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 1000 {
		t.Fatalf("screenshot: %d bytes, %v; want a real PNG", len(png), err)
	}
	out, err = exec.Command(filepath.Join(binDir, "client"), "--addr", p.addr, "--json", "stats").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"invariant_ok": true`) {
		t.Fatalf("client stats: %v\n%s", err, out)
	}
}

// A TMPDIR too deep for Chromium's Unix socket (CI clones live under long
// paths) must not stop the broker: its browsers start and serve a lease.
func TestStartsUnderADeepTMPDIR(t *testing.T) {
	deep := filepath.Join(t.TempDir(), strings.Repeat("d", 70))
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", deep)
	p := startBroker(t, "--max-leases", "1", "--warm", "1")
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<title>deep</title>`)
	}))
	defer site.Close()
	out, err := exec.Command(filepath.Join(binDir, "client"), "--addr", p.addr, "lease", "--url", site.URL,
		"--eval", "document.title").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"deep"`) {
		t.Fatalf("client lease under a %d-byte TMPDIR: %v\n%s\nbroker:\n%s", len(deep), err, out, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "TMPDIR is too deep") {
		t.Errorf("the broker did not say it moved Chromium's temporary files:\n%s", p.stderr.String())
	}
}

// SIGTERM: every holder gets revoked{SHUTDOWN}, the broker exits 0 and
// leaves no Chromium or driver process behind.
func TestSigtermRevokesLeasesAndExitsClean(t *testing.T) {
	p := startBroker(t, "--max-leases", "10", "--contexts-per-browser", "4")
	conn := dial(t, p.addr)
	client := brokerv1.NewLeaseServiceClient(conn)
	var streams []brokerv1.LeaseService_LeaseClient
	for range 10 {
		s, err := client.Lease(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{}}})
		resp, err := s.Recv()
		if err != nil || resp.GetGranted() == nil {
			t.Fatalf("acquire: %v, %v", resp, err)
		}
		streams = append(streams, s)
	}
	procs := descendants(p.cmd.Process.Pid)
	if len(procs) < 2 {
		t.Fatalf("broker children %v, want the driver and Chromium", procs)
	}
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	for i, s := range streams {
		var rev *brokerv1.Revoked
		for {
			resp, err := s.Recv()
			if err != nil {
				if err != io.EOF {
					t.Fatalf("stream %d ended with %v, want OK after revoked", i, err)
				}
				break
			}
			if r := resp.GetRevoked(); r != nil {
				rev = r
			}
		}
		if rev.GetReason() != brokerv1.ReclaimReason_RECLAIM_REASON_SHUTDOWN {
			t.Fatalf("stream %d: revoked %v, want SHUTDOWN", i, rev)
		}
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("broker still running 30s after SIGTERM:\n%s", p.stderr.String())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0:\n%s", code, p.stderr.String())
	}
	t.Logf("SIGTERM to exit with 10 leases: %v", time.Since(start))
	waitGone(t, procs, 5*time.Second)
}

// SIGKILL: the driver and Chromium die with the broker.
func TestSigkillLeavesNoProcesses(t *testing.T) {
	p := startBroker(t, "--max-leases", "2")
	conn := dial(t, p.addr)
	s, err := brokerv1.NewLeaseServiceClient(conn).Lease(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{}}})
	if resp, err := s.Recv(); err != nil || resp.GetGranted() == nil {
		t.Fatalf("acquire: %v, %v", resp, err)
	}
	procs := descendants(p.cmd.Process.Pid)
	if len(procs) < 2 {
		t.Fatalf("broker children %v, want the driver and Chromium", procs)
	}
	p.cmd.Process.Kill()
	<-p.exited
	waitGone(t, procs, 5*time.Second)
}
