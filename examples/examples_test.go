package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// These tests run the example workers as a user would: the real broker
// binary, the system node, Debian's /usr/bin/python3, and a local page.

const python = "/usr/bin/python3"

var (
	binDir   string // holds the broker binary built by TestMain
	repoRoot string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "examples-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	build := exec.Command("go", "build", "-o", dir, "github.com/browserbroker/broker/cmd/broker")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the broker:", err)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	return code
}

// need skips the test when something `make setup` installs is missing, or
// fails it when BROKER_REQUIRE_BROWSER is set (as `make test` does).
func need(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("BROKER_REQUIRE_BROWSER") != "" {
		t.Fatalf("%s missing (%v); run `make setup`", what, err)
	}
	t.Skipf("%s missing (%v); run `make setup`", what, err)
}

func driverDir() string {
	if d := os.Getenv("PLAYWRIGHT_DRIVER_PATH"); d != "" {
		return d
	}
	return filepath.Join(repoRoot, ".cache", "playwright", "1.52.0")
}

func chromium() string {
	if exe := os.Getenv("BROKER_CHROMIUM"); exe != "" {
		return exe
	}
	return "/usr/bin/chromium"
}

// An example is one of the workers under test.
type example struct {
	name string
	// prepare checks the example's dependencies and returns the command
	// line and environment that run it.
	prepare func(t *testing.T) (argv, env []string)
}

var examples = []example{
	{"node", func(t *testing.T) ([]string, []string) {
		dir := filepath.Join(repoRoot, "examples", "node")
		_, err := exec.LookPath("node")
		if err == nil {
			_, err = os.Stat(filepath.Join(dir, "node_modules", "@grpc", "grpc-js", "package.json"))
		}
		if err == nil {
			_, err = os.Stat(filepath.Join(dir, "node_modules", "@grpc", "proto-loader", "package.json"))
		}
		need(t, "node or the Node example's npm packages", err)
		return []string{"node", filepath.Join(dir, "lease.js")}, nil
	}},
	{"python", func(t *testing.T) ([]string, []string) {
		dir := filepath.Join(repoRoot, "examples", "python")
		out, err := exec.Command(python, "-c", "import grpc, grpc_tools").CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%s -c 'import grpc, grpc_tools': %v: %s", python, err, bytes.TrimSpace(out))
		}
		need(t, "gRPC for "+python, err)
		stubs := t.TempDir()
		gen := exec.Command("sh", filepath.Join(dir, "gen.sh"), stubs)
		gen.Env = append(os.Environ(), "PYTHON="+python)
		if out, err := gen.CombinedOutput(); err != nil {
			t.Fatalf("gen.sh %s: %v\n%s", stubs, err, out)
		}
		return []string{python, filepath.Join(dir, "lease.py")},
			[]string{"BROKER_PY_STUBS=" + stubs, "PYTHONDONTWRITEBYTECODE=1"}
	}},
}

// The README's flow from another language: wait in the queue, get the
// lease, load a page, read texts, take a screenshot, release.
func TestExampleLeasesAndReleases(t *testing.T) {
	for _, ex := range examples {
		t.Run(ex.name, func(t *testing.T) {
			t.Parallel()
			argv, env := ex.prepare(t)
			b := startBroker(t, "--max-leases", "1")
			site := startSite(t)

			// Hold the only lease, so the example has to queue.
			holder := holdLease(t, b.conn)
			shot := filepath.Join(t.TempDir(), "page.png")
			p := startExample(t, argv, env, "--addr", b.addr, "--url", site.URL,
				"--text", "li", "--screenshot", shot, "--ttl", "5s", "--wait", "30s",
				"--label", "test="+t.Name())
			p.waitForLine(t, "queued: position 1", 20*time.Second)
			holder.release(t)

			code := p.wait(t, 60*time.Second)
			out := p.output()
			if code != 0 {
				t.Fatalf("%s exited %d, want 0:\n%s\nbroker:\n%s", ex.name, code, out, b.log.String())
			}
			for _, want := range []string{
				"granted: lease l_",
				`title "Fruit stand"`,
				"text li: Apple", "text li: Banana", "text li: Cherry",
				"screenshot: " + shot,
				"ended: RELEASED",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("%s output lacks %q:\n%s", ex.name, want, out)
				}
			}
			checkPNG(t, shot)
			checkStats(t, b.conn, 2, map[brokerv1.ReclaimReason]uint64{
				brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED: 2,
			})
		})
	}
}

// An operator's revoke while the example works: the example stops at once,
// says REVOKED and exits 3. Its TTL is shorter than the wait before the
// revoke, so only its renewals keep the lease alive that long.
func TestExampleRevokedMidway(t *testing.T) {
	for _, ex := range examples {
		t.Run(ex.name, func(t *testing.T) {
			t.Parallel()
			argv, env := ex.prepare(t)
			b := startBroker(t, "--max-leases", "2")
			site := startSite(t)

			shot := filepath.Join(t.TempDir(), "page.png")
			label := t.Name()
			p := startExample(t, argv, env, "--addr", b.addr, "--url", site.URL,
				"--text", "li", "--screenshot", shot, "--ttl", "2s", "--hold", "60s",
				"--label", "test="+label)
			p.waitForLine(t, "holding: ", 30*time.Second)
			time.Sleep(3 * time.Second) // > TTL plus jitter: renewals must have run

			admin := brokerv1.NewAdminServiceClient(b.conn)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			list, err := admin.ListLeases(ctx, &brokerv1.ListLeasesRequest{Labels: map[string]string{"test": label}})
			if err != nil || len(list.GetLeases()) != 1 {
				t.Fatalf("ListLeases(test=%s) = %v, %v; want one lease\n%s", label, list, err, p.output())
			}
			id := list.GetLeases()[0].GetLeaseId()
			const why = "revoked by the examples test"
			start := time.Now()
			rev, err := admin.RevokeLease(ctx, &brokerv1.RevokeLeaseRequest{LeaseId: id, Message: why})
			if err != nil || rev.GetReason() != brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED {
				t.Fatalf("RevokeLease(%s) = %v, %v; want reason REVOKED (a TTL_EXPIRED here means no renewals)\n%s",
					id, rev, err, p.output())
			}

			code := p.wait(t, 20*time.Second)
			out := p.output()
			if code != 3 {
				t.Fatalf("%s exited %d after the revoke, want 3:\n%s", ex.name, code, out)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("%s exited %v after the revoke, want it to stop holding at once", ex.name, took)
			}
			if want := fmt.Sprintf("lease %s ended: REVOKED (%s)", id, why); !strings.Contains(out, want) {
				t.Errorf("%s output lacks %q:\n%s", ex.name, want, out)
			}
			if strings.Contains(out, "text li:") || strings.Contains(out, "screenshot:") {
				t.Errorf("%s went on working after the revoke:\n%s", ex.name, out)
			}
			checkStats(t, b.conn, 1, map[brokerv1.ReclaimReason]uint64{
				brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED: 1,
			})
		})
	}
}

// checkStats asserts that every granted lease was reclaimed, for the
// reasons given, and that the broker's books balance.
func checkStats(t *testing.T, conn *grpc.ClientConn, granted uint64, reclaimed map[brokerv1.ReclaimReason]uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := brokerv1.NewAdminServiceClient(conn).GetStats(ctx, &brokerv1.GetStatsRequest{})
	if err != nil {
		t.Fatalf("GetStats: %v", err)
	}
	got := map[brokerv1.ReclaimReason]uint64{}
	for _, rc := range st.GetReclaimed() {
		if rc.GetCount() > 0 {
			got[rc.GetReason()] = rc.GetCount()
		}
	}
	if st.GetGrantedTotal() != granted || st.GetReclaimedTotal() != granted || st.GetActive() != 0 ||
		fmt.Sprint(got) != fmt.Sprint(reclaimed) || !st.GetInvariantOk() ||
		st.GetInvariantViolations() != 0 || st.GetOrphansClosed() != 0 || st.GetBrowserContexts() != 0 {
		t.Errorf("GetStats = %v\nwant granted_total = reclaimed_total = %d, reclaimed %v, active 0, no browser contexts, invariant_ok, no violations, no orphans",
			st, granted, reclaimed)
	}
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("screenshot %s (%d bytes) is not a PNG: %v", path, len(data), err)
	}
	if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
		t.Fatalf("screenshot is %dx%d, want the page's viewport", b.Dx(), b.Dy())
	}
}

// startSite serves a page with a title, a list and an image.
func startSite(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><title>Fruit stand</title>
<h1>Today</h1>
<ul><li>Apple</li><li>Banana</li><li>Cherry</li></ul>
<img src="/logo.svg" width=120 height=120 alt=logo>`)
	})
	mux.HandleFunc("/logo.svg", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/svg+xml")
		fmt.Fprint(w, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><circle cx="5" cy="5" r="4" fill="tomato"/></svg>`)
	})
	site := httptest.NewServer(mux)
	t.Cleanup(site.Close)
	return site
}

type brokerProc struct {
	addr string
	conn *grpc.ClientConn
	log  *syncBuffer
}

// startBroker runs the broker on a free loopback port, waits until it
// listens, and stops it when the test ends.
func startBroker(t *testing.T, args ...string) *brokerProc {
	t.Helper()
	_, err := os.Stat(filepath.Join(driverDir(), "package", "cli.js"))
	need(t, "the Playwright driver", err)
	_, err = os.Stat(chromium())
	need(t, "Chromium", err)

	all := append([]string{"--addr", "127.0.0.1:0", "--log-format", "json",
		"--driver-dir", driverDir(), "--chromium", chromium(), "--state-dir", t.TempDir()}, args...)
	cmd := exec.Command(filepath.Join(binDir, "broker"), all...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &brokerProc{log: &syncBuffer{}}
	addrc := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			b.log.WriteString(line + "\n")
			var entry struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "broker listening" {
				addrc <- entry.Addr
			}
		}
	}()
	exited := make(chan struct{})
	go func() { cmd.Wait(); pw.Close(); <-scanned; close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	select {
	case b.addr = <-addrc:
	case <-exited:
		t.Fatalf("broker exited before listening:\n%s", b.log.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("broker not listening after 60s:\n%s", b.log.String())
	}
	conn, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	b.conn = conn
	return b
}

// heldLease is a lease held by the test itself, through the Go stubs.
type heldLease struct {
	stream brokerv1.LeaseService_LeaseClient
	cancel context.CancelFunc
}

func holdLease(t *testing.T, conn *grpc.ClientConn) *heldLease {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := brokerv1.NewLeaseServiceClient(conn).Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{
		Labels: map[string]string{"holder": "test"}}}})
	if err != nil {
		t.Fatalf("send acquire: %v", err)
	}
	if resp, err := s.Recv(); err != nil || resp.GetGranted() == nil {
		t.Fatalf("acquire = %v, %v; want granted", resp, err)
	}
	return &heldLease{stream: s, cancel: cancel}
}

func (h *heldLease) release(t *testing.T) {
	t.Helper()
	defer h.cancel()
	if err := h.stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}}); err != nil {
		t.Fatalf("send release: %v", err)
	}
	resp, err := h.stream.Recv()
	if err != nil || resp.GetRevoked().GetReason() != brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED {
		t.Fatalf("release = %v, %v; want revoked{RELEASED}", resp, err)
	}
	h.stream.CloseSend()
	if _, err := h.stream.Recv(); err != io.EOF {
		t.Fatalf("after revoked: %v, want the stream to end with OK", err)
	}
}

// exampleProc is a running example, its stdout and stderr merged.
type exampleProc struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	lines  chan string
	exited chan struct{}
}

func startExample(t *testing.T, argv, env []string, args ...string) *exampleProc {
	t.Helper()
	cmd := exec.Command(argv[0], append(argv[1:], args...)...)
	cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	p := &exampleProc{cmd: cmd, out: &syncBuffer{}, lines: make(chan string, 1000), exited: make(chan struct{})}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		defer close(p.lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.out.WriteString(sc.Text() + "\n")
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() { cmd.Wait(); pw.Close(); <-scanned; close(p.exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// waitForLine waits for an output line that starts with prefix.
func (p *exampleProc) waitForLine(t *testing.T, prefix string, within time.Duration) {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("%v exited before printing %q:\n%s", p.cmd.Args, prefix, p.output())
			}
			if strings.HasPrefix(line, prefix) {
				return
			}
		case <-timeout:
			t.Fatalf("%v printed no %q in %v:\n%s", p.cmd.Args, prefix, within, p.output())
		}
	}
}

// wait waits for the example to exit and returns its exit code.
func (p *exampleProc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("%v still running after %v:\n%s", p.cmd.Args, within, p.output())
		return -1
	}
}

func (p *exampleProc) output() string { return p.out.String() }

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
