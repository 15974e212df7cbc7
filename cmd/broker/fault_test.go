package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/proctree"
)

// Fault injection against the real binaries: the faults are real process
// deaths and stops (client, Chromium browser, renderer, Playwright driver)
// and pages or scripts that never finish. Every wait polls or waits on an
// event under a deadline; the deadlines that matter are the ones the README
// promises (crash detection within 2s, keepalive within its bound).

// crashBound is how fast a dead client, browser, renderer or driver must
// cost its leases.
const crashBound = 2 * time.Second

// faultSite is a local web site for fault tests: /a, /b, /c are small
// pages; /hang sends the start of a page and never finishes it; /slow
// answers after slowDelay; /started records that a pendingScript runs.
type faultSite struct {
	*httptest.Server
	hangEntered chan struct{} // one send per /hang request, non-blocking
	hangActive  atomic.Int64  // /hang handlers still running
	hangTotal   atomic.Int64  // /hang requests seen
	started     chan struct{} // one send per /started request (see pendingScript)
	slowServed  atomic.Int64  // /slow responses sent in full
	slowAborted atomic.Int64  // /slow requests the browser gave up before the response
}

// slowDelay is how long /slow waits before it answers.
const slowDelay = 1500 * time.Millisecond

// pendingScript is a script that tells the site it runs, then never
// returns.
const pendingScript = `(async () => { await fetch("/started"); return new Promise(() => {}); })()`

func newFaultSite(t *testing.T) *faultSite {
	t.Helper()
	s := &faultSite{hangEntered: make(chan struct{}, 100), started: make(chan struct{}, 100)}
	stop := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		s.hangTotal.Add(1)
		s.hangActive.Add(1)
		defer s.hangActive.Add(-1)
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<!doctype html><title>hanging</title><h1>still loading")
		w.(http.Flusher).Flush()
		select {
		case s.hangEntered <- struct{}{}:
		default:
		}
		select {
		case <-r.Context().Done(): // the browser gave up on it
		case <-stop:
		}
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(slowDelay):
			fmt.Fprint(w, "<!doctype html><title>slow</title><h1>late</h1>")
			s.slowServed.Add(1)
		case <-r.Context().Done():
			s.slowAborted.Add(1)
		case <-stop:
		}
	})
	mux.HandleFunc("/started", func(w http.ResponseWriter, r *http.Request) {
		select {
		case s.started <- struct{}{}:
		default:
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		name := strings.Trim(r.URL.Path, "/")
		fmt.Fprintf(w, "<!doctype html><title>page %s</title><h1 id=marker>%s</h1>", name, name)
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(func() {
		close(stop)
		s.Close()
	})
	return s
}

// waitHangEntered waits until a /hang request reached the site.
func (s *faultSite) waitHangEntered(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-s.hangEntered:
	case <-time.After(within):
		t.Fatalf("no request for /hang reached the site within %v", within)
	}
}

// waitStarted waits until a pendingScript runs in a page.
func (s *faultSite) waitStarted(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-s.started:
	case <-time.After(within):
		t.Fatalf("no pending script reported it runs within %v", within)
	}
}

// testLease is a lease held over a raw stream, as a worker in any language
// would hold it. A goroutine receives until the stream ends.
type testLease struct {
	id     string
	stream brokerv1.LeaseService_LeaseClient
	cancel context.CancelFunc
	done   chan struct{} // closed when the stream has ended
	ended  leaseEnd      // how; set before done is closed
}

// leaseEnd is how a lease stream ended: its revoked message (nil if none),
// when that came, and the stream's final error (nil for OK).
type leaseEnd struct {
	revoked *brokerv1.Revoked
	at      time.Time
	err     error
}

func acquireLease(t *testing.T, conn *grpc.ClientConn, ttl time.Duration) *testLease {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := brokerv1.NewLeaseServiceClient(conn).Lease(ctx)
	if err != nil {
		t.Fatalf("Lease() = %v", err)
	}
	acq := &brokerv1.Acquire{WaitTimeout: durationpb.New(30 * time.Second)}
	if ttl > 0 {
		acq.Ttl = durationpb.New(ttl)
	}
	if err := s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: acq}}); err != nil {
		t.Fatalf("send acquire: %v", err)
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			t.Fatalf("acquire: stream ended with %v, want granted", err)
		}
		if g := resp.GetGranted(); g != nil {
			l := &testLease{id: g.GetLeaseId(), stream: s, cancel: cancel, done: make(chan struct{})}
			go l.receive()
			return l
		}
		if resp.GetQueued() == nil {
			t.Fatalf("acquire: got %v, want queued or granted", resp)
		}
	}
}

func (l *testLease) receive() {
	defer close(l.done)
	for {
		resp, err := l.stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				l.ended.err = err
			}
			return
		}
		if r := resp.GetRevoked(); r != nil {
			l.ended.revoked, l.ended.at = r, time.Now()
		}
	}
}

// waitEnd waits for the lease stream to end and returns how it ended.
func (l *testLease) waitEnd(t *testing.T, within time.Duration) leaseEnd {
	t.Helper()
	select {
	case <-l.done:
	case <-time.After(within):
		t.Fatalf("lease %s: stream still open %v later, want revoked and the end", l.id, within)
	}
	return l.ended
}

// stillHeld fails the test if the lease's stream has ended.
func (l *testLease) stillHeld(t *testing.T) {
	t.Helper()
	select {
	case <-l.done:
		t.Fatalf("lease %s ended (revoked %v, %v), want it untouched", l.id, l.ended.revoked, l.ended.err)
	default:
	}
}

func (l *testLease) release(t *testing.T) {
	t.Helper()
	if err := l.stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}}); err != nil {
		t.Fatalf("lease %s: send release: %v", l.id, err)
	}
	if e := l.waitEnd(t, 10*time.Second); e.revoked.GetReason() != brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED {
		t.Fatalf("lease %s: release ended with %v, %v; want revoked{RELEASED}", l.id, e.revoked, e.err)
	}
}

// wantRevoked waits for the lease's revoked message and checks its reason
// and how long after since it came.
func (l *testLease) wantRevoked(t *testing.T, reason brokerv1.ReclaimReason, since time.Time, within time.Duration) *brokerv1.Revoked {
	t.Helper()
	e := l.waitEnd(t, within+5*time.Second)
	if e.revoked == nil {
		t.Fatalf("lease %s: stream ended with %v and no revoked, want revoked{%v}", l.id, e.err, reason)
	}
	if e.err != nil {
		t.Errorf("lease %s: stream ended with %v after revoked, want OK", l.id, e.err)
	}
	if e.revoked.GetReason() != reason {
		t.Fatalf("lease %s: revoked %v, want %v", l.id, e.revoked, reason)
	}
	d := e.at.Sub(since)
	t.Logf("lease %s: revoked{%v} %v after the fault (%q)", l.id, reason, d.Round(time.Millisecond), e.revoked.GetMessage())
	if d > within {
		t.Errorf("lease %s: revoked{%v} came %v after the fault, want within %v", l.id, reason, d, within)
	}
	return e.revoked
}

// callCtx is the context of one call, cancelled at the latest when the test
// ends.
func callCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func navigate(t *testing.T, page brokerv1.PageServiceClient, id, url string) {
	t.Helper()
	if _, err := page.Navigate(callCtx(t, 30*time.Second), &brokerv1.NavigateRequest{LeaseId: id, Url: url}); err != nil {
		t.Fatalf("Navigate(%s, %s) = %v, want OK", id, url, err)
	}
}

func evaluate(t *testing.T, page brokerv1.PageServiceClient, id, expr string) string {
	t.Helper()
	resp, err := page.Evaluate(callCtx(t, 30*time.Second), &brokerv1.EvaluateRequest{LeaseId: id, Expression: expr})
	if err != nil {
		t.Fatalf("Evaluate(%s, %q) = %v, want OK", id, expr, err)
	}
	return resp.GetResultJson()
}

func getStats(t *testing.T, admin brokerv1.AdminServiceClient) *brokerv1.GetStatsResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := admin.GetStats(ctx, &brokerv1.GetStatsRequest{})
	if err != nil {
		t.Fatalf("GetStats() = %v", err)
	}
	return s
}

func reclaimedBy(s *brokerv1.GetStatsResponse, r brokerv1.ReclaimReason) uint64 {
	for _, c := range s.GetReclaimed() {
		if c.GetReason() == r {
			return c.GetCount()
		}
	}
	return 0
}

func statsString(s *brokerv1.GetStatsResponse) string {
	var b strings.Builder
	fmt.Fprintf(&b, "active=%d opening=%d waiting=%d contexts=%d browsers=%d granted=%d reclaimed=%d invariant_ok=%v violations=%d duplicates=%d by reason:",
		s.GetActive(), s.GetOpening(), s.GetWaiting(), s.GetBrowserContexts(), s.GetBrowsers(), s.GetGrantedTotal(),
		s.GetReclaimedTotal(), s.GetInvariantOk(), s.GetInvariantViolations(), s.GetDuplicateTriggers())
	for _, c := range s.GetReclaimed() {
		fmt.Fprintf(&b, " %v=%d", strings.TrimPrefix(c.GetReason().String(), "RECLAIM_REASON_"), c.GetCount())
	}
	return b.String()
}

// waitStats polls GetStats until ok holds, and returns the stats and how
// long after since that was.
func waitStats(t *testing.T, admin brokerv1.AdminServiceClient, since time.Time, within time.Duration, what string, ok func(*brokerv1.GetStatsResponse) bool) (*brokerv1.GetStatsResponse, time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s := getStats(t, admin)
		if ok(s) {
			return s, time.Since(since)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetStats() after %v: %s; want %s", within, statsString(s), what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settled is the state of a broker with the given live leases and nothing
// in flight: the lease invariant holds and no context is left over.
func settled(active int32) func(*brokerv1.GetStatsResponse) bool {
	return func(s *brokerv1.GetStatsResponse) bool {
		return s.GetActive() == active && s.GetOpening() == 0 && s.GetBrowserContexts() == active &&
			s.GetInvariantOk() && s.GetInvariantViolations() == 0 &&
			s.GetGrantedTotal() == uint64(active)+s.GetReclaimedTotal()
	}
}

// driverPid is the Playwright driver under the broker: node running
// "run-driver".
func (p *brokerProc) driverPid(t *testing.T) int {
	t.Helper()
	var found []int
	for _, e := range proctree.Tree(p.cmd.Process.Pid) {
		if strings.Contains(e.Cmdline, "run-driver") {
			found = append(found, e.PID)
		}
	}
	if len(found) != 1 {
		t.Fatalf("Playwright driver processes under the broker: %v, want one", found)
	}
	return found[0]
}

// browserPids are the Chromium browser processes: the driver's children
// whose command line has no --type= (renderers, zygotes, GPU and utility
// processes all have one).
func (p *brokerProc) browserPids(t *testing.T) []int {
	t.Helper()
	driver := p.driverPid(t)
	var out []int
	for _, e := range proctree.Tree(p.cmd.Process.Pid) {
		if e.PPID == driver && !strings.Contains(e.Cmdline, "--type=") {
			out = append(out, e.PID)
		}
	}
	return out
}

// rendererPids are the broker's Chromium renderer processes.
func (p *brokerProc) rendererPids() []int {
	var out []int
	for _, e := range proctree.Tree(p.cmd.Process.Pid) {
		if strings.Contains(e.Cmdline, "--type=renderer") {
			out = append(out, e.PID)
		}
	}
	return out
}

// workerScript starts a dedicated worker in the page. Chromium runs it as a
// thread named "DedicatedWorker" in the page's own renderer process, which
// is how the tests tell that renderer from the others.
const workerScript = `(() => {
	window.__marker = new Worker(URL.createObjectURL(new Blob(["setInterval(() => {}, 1000)"])));
	return true;
})()`

// markedRenderer waits until exactly one renderer under the broker runs a
// dedicated worker (see workerScript) and returns it.
func (p *brokerProc) markedRenderer(t *testing.T, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var marked []int
		for _, pid := range p.rendererPids() {
			if proctree.HasThread(pid, "DedicatedWorker") {
				marked = append(marked, pid)
			}
		}
		if len(marked) == 1 {
			return marked[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("renderers running a worker: %v, want exactly one (renderers %v)", marked, p.rendererPids())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func kill(t *testing.T, pid int, sig syscall.Signal) time.Time {
	t.Helper()
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("kill(%d, %v): %v", pid, sig, err)
	}
	return time.Now()
}

// runClient starts the client binary against the broker.
func runClient(t *testing.T, addr string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	cmd := exec.Command(filepath.Join(binDir, "client"), append([]string{"--addr", addr}, args...)...)
	w := writerFunc(func(b []byte) (int, error) { out.WriteString(string(b)); return len(b), nil })
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-waited
	})
	return cmd, out
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// 1. A worker process killed while its command runs: the broker sees the
// connection close and reclaims the lease (STREAM_CLOSED) within 2s,
// aborting the navigation in the browser.
func TestFaultClientKilledMidCommand(t *testing.T) {
	p := startBroker(t, "--max-leases", "2")
	site := newFaultSite(t)
	admin := brokerv1.NewAdminServiceClient(dial(t, p.addr))
	cmd, out := runClient(t, p.addr, "lease", "--url", site.URL+"/hang")
	site.waitHangEntered(t, 30*time.Second)
	list, err := admin.ListLeases(callCtx(t, 10*time.Second), &brokerv1.ListLeasesRequest{})
	if err != nil || len(list.GetLeases()) != 1 || list.GetLeases()[0].GetCommands() < 1 {
		t.Fatalf("ListLeases() = %v, %v; want one lease with its Navigate counted", list, err)
	}

	killed := kill(t, cmd.Process.Pid, syscall.SIGKILL)
	s, took := waitStats(t, admin, killed, crashBound+5*time.Second, "STREAM_CLOSED=1 and nothing left", func(s *brokerv1.GetStatsResponse) bool {
		return reclaimedBy(s, brokerv1.ReclaimReason_RECLAIM_REASON_STREAM_CLOSED) == 1 && settled(0)(s)
	})
	t.Logf("client SIGKILL to lease reclaimed and context closed: %v", took.Round(time.Millisecond))
	if took > crashBound {
		t.Errorf("lease of a killed client reclaimed %v after the kill, want within %v", took, crashBound)
	}
	if s.GetReclaimedTotal() != 1 {
		t.Errorf("GetStats() = %s, want only the one STREAM_CLOSED reclaim", statsString(s))
	}
	// The navigation was stopped in the browser, not abandoned.
	deadline := time.Now().Add(5 * time.Second)
	for site.hangActive.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the hanging request is still open 5s after the reclaim")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("client SIGKILL to hanging request closed: %v (client output: %q)", time.Since(killed).Round(time.Millisecond), out.String())
}

// 2. A worker frozen with SIGSTOP keeps its TCP connection open but answers
// nothing: keepalive drops it and its lease is reclaimed (STREAM_CLOSED)
// within keepalive-time + keepalive-timeout.
func TestFaultClientFrozen(t *testing.T) {
	const keepaliveBound = 2 * time.Second // --keepalive-time + --keepalive-timeout
	const margin = 2 * time.Second         // scheduling on a loaded machine
	p := startBroker(t, "--max-leases", "2", "--keepalive-time", "1s", "--keepalive-timeout", "1s")
	site := newFaultSite(t)
	admin := brokerv1.NewAdminServiceClient(dial(t, p.addr))
	cmd, _ := runClient(t, p.addr, "lease", "--url", site.URL+"/hang")
	site.waitHangEntered(t, 30*time.Second)

	stopped := kill(t, cmd.Process.Pid, syscall.SIGSTOP)
	s, took := waitStats(t, admin, stopped, keepaliveBound+margin+5*time.Second, "STREAM_CLOSED=1 and nothing left", func(s *brokerv1.GetStatsResponse) bool {
		return reclaimedBy(s, brokerv1.ReclaimReason_RECLAIM_REASON_STREAM_CLOSED) == 1 && settled(0)(s)
	})
	t.Logf("client SIGSTOP to lease reclaimed (keepalive 1s+1s): %v", took.Round(time.Millisecond))
	if took > keepaliveBound+margin {
		t.Errorf("lease of a frozen client reclaimed %v after SIGSTOP, want within the keepalive bound %v (+%v)", took, keepaliveBound, margin)
	}
	if s.GetReclaimedTotal() != 1 {
		t.Errorf("GetStats() = %s, want only the one STREAM_CLOSED reclaim", statsString(s))
	}
	// runClient's cleanup resumes and kills the client: once resumed, it
	// may see its stream gone and exit by itself first.
}

// 3. The Chromium browser process killed: its leases get
// revoked{BROWSER_CRASHED} within 2s, a command running on one of them ends
// ABORTED, and the next acquire gets a relaunched browser.
func TestFaultBrowserKilled(t *testing.T) {
	p := startBroker(t, "--max-leases", "3")
	site := newFaultSite(t)
	conn := dial(t, p.addr)
	page, admin := brokerv1.NewPageServiceClient(conn), brokerv1.NewAdminServiceClient(conn)
	a, b := acquireLease(t, conn, 0), acquireLease(t, conn, 0)
	navigate(t, page, a.id, site.URL+"/a")
	navigate(t, page, b.id, site.URL+"/b")
	browsers := p.browserPids(t)
	if len(browsers) != 1 {
		t.Fatalf("browser processes %v, want one", browsers)
	}
	old := proctree.Tree(browsers[0])

	pending := make(chan error, 1)
	go func() {
		_, err := page.Evaluate(callCtx(t, 30*time.Second), &brokerv1.EvaluateRequest{LeaseId: a.id, Expression: pendingScript})
		pending <- err
	}()
	site.waitStarted(t, 10*time.Second)

	killed := kill(t, browsers[0], syscall.SIGKILL)
	a.wantRevoked(t, brokerv1.ReclaimReason_RECLAIM_REASON_BROWSER_CRASHED, killed, crashBound)
	b.wantRevoked(t, brokerv1.ReclaimReason_RECLAIM_REASON_BROWSER_CRASHED, killed, crashBound)
	select {
	case err := <-pending:
		if status.Code(err) != codes.Aborted {
			t.Errorf("Evaluate running at the crash = %v, want ABORTED", err)
		}
	case <-time.After(crashBound):
		t.Errorf("Evaluate running at the crash still running %v later", crashBound)
	}
	s, took := waitStats(t, admin, killed, 10*time.Second, "2 BROWSER_CRASHED and nothing left", func(s *brokerv1.GetStatsResponse) bool {
		return reclaimedBy(s, brokerv1.ReclaimReason_RECLAIM_REASON_BROWSER_CRASHED) == 2 && settled(0)(s)
	})
	t.Logf("browser SIGKILL to both leases reclaimed: %v; %s", took.Round(time.Millisecond), statsString(s))
	var pids []int
	for _, e := range old {
		pids = append(pids, e.PID)
	}
	waitGone(t, pids, 5*time.Second)

	c := acquireLease(t, conn, 0)
	navigate(t, page, c.id, site.URL+"/c")
	if got := evaluate(t, page, c.id, "document.title"); got != `"page c"` {
		t.Errorf("Evaluate(document.title) after the relaunch = %s, want \"page c\"", got)
	}
	if now := p.browserPids(t); len(now) != 1 || now[0] == browsers[0] {
		t.Errorf("browser processes after the crash %v, want one new one (old %d)", now, browsers[0])
	}
	c.release(t)
	waitStats(t, admin, time.Now(), 10*time.Second, "invariant ok, nothing left", settled(0))
}

// 4. One renderer killed: its lease gets revoked{PAGE_CRASHED} within 2s;
// the other leases, on the same browser, are untouched and still work.
func TestFaultRendererKilled(t *testing.T) {
	p := startBroker(t, "--max-leases", "3")
	site := newFaultSite(t)
	conn := dial(t, p.addr)
	page, admin := brokerv1.NewPageServiceClient(conn), brokerv1.NewAdminServiceClient(conn)
	a, b, c := acquireLease(t, conn, 0), acquireLease(t, conn, 0), acquireLease(t, conn, 0)
	for _, l := range []struct {
		lease *testLease
		path  string
	}{{a, "/a"}, {b, "/b"}, {c, "/c"}} {
		navigate(t, page, l.lease.id, site.URL+l.path)
	}
	browsers := p.browserPids(t)
	if got := evaluate(t, page, a.id, workerScript); got != "true" {
		t.Fatalf("Evaluate(start a worker) = %s, want true", got)
	}
	renderer := p.markedRenderer(t, 10*time.Second)

	killed := kill(t, renderer, syscall.SIGKILL)
	a.wantRevoked(t, brokerv1.ReclaimReason_RECLAIM_REASON_PAGE_CRASHED, killed, crashBound)
	s, took := waitStats(t, admin, killed, 10*time.Second, "PAGE_CRASHED=1, two leases left", func(s *brokerv1.GetStatsResponse) bool {
		return reclaimedBy(s, brokerv1.ReclaimReason_RECLAIM_REASON_PAGE_CRASHED) == 1 && settled(2)(s)
	})
	t.Logf("renderer SIGKILL to lease reclaimed: %v; %s", took.Round(time.Millisecond), statsString(s))
	if s.GetReclaimedTotal() != 1 {
		t.Errorf("GetStats() = %s, want only the PAGE_CRASHED reclaim", statsString(s))
	}
	for _, l := range []*testLease{b, c} {
		l.stillHeld(t)
		if got := evaluate(t, page, l.id, "1+1"); got != "2" {
			t.Errorf("Evaluate(%s, 1+1) after another lease's renderer died = %s, want 2", l.id, got)
		}
	}
	if _, err := page.Evaluate(callCtx(t, 10*time.Second), &brokerv1.EvaluateRequest{LeaseId: a.id, Expression: "1"}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "PAGE_CRASHED") {
		t.Errorf("Evaluate on the crashed lease = %v, want FAILED_PRECONDITION naming PAGE_CRASHED", err)
	}
	if now := p.browserPids(t); len(now) != 1 || now[0] != browsers[0] {
		t.Errorf("browser processes %v after a renderer crash, want the same one %v", now, browsers)
	}
	b.release(t)
	c.release(t)
	waitStats(t, admin, time.Now(), 10*time.Second, "invariant ok, nothing left", settled(0))
}

// 5. The Playwright driver killed: every lease is revoked{BROWSER_CRASHED}
// with a message naming the driver, within 2s; its Chromium goes too; the
// broker starts a new driver for the next acquire, without a restart.
func TestFaultDriverKilled(t *testing.T) {
	p := startBroker(t, "--max-leases", "3")
	site := newFaultSite(t)
	conn := dial(t, p.addr)
	page, admin := brokerv1.NewPageServiceClient(conn), brokerv1.NewAdminServiceClient(conn)
	a, b := acquireLease(t, conn, 0), acquireLease(t, conn, 0)
	navigate(t, page, a.id, site.URL+"/a")
	navigate(t, page, b.id, site.URL+"/b")
	driver := p.driverPid(t)
	var old []int
	for _, e := range proctree.Tree(driver) {
		old = append(old, e.PID)
	}

	pending := make(chan error, 1)
	go func() {
		_, err := page.Evaluate(callCtx(t, 30*time.Second), &brokerv1.EvaluateRequest{LeaseId: a.id, Expression: pendingScript})
		pending <- err
	}()
	site.waitStarted(t, 10*time.Second)

	killed := kill(t, driver, syscall.SIGKILL)
	for _, l := range []*testLease{a, b} {
		r := l.wantRevoked(t, brokerv1.ReclaimReason_RECLAIM_REASON_BROWSER_CRASHED, killed, crashBound)
		if !strings.Contains(r.GetMessage(), "driver") {
			t.Errorf("lease %s: revoked message %q, want it to name the driver", l.id, r.GetMessage())
		}
	}
	select {
	case err := <-pending:
		if status.Code(err) != codes.Aborted {
			t.Errorf("Evaluate running when the driver died = %v, want ABORTED", err)
		}
	case <-time.After(crashBound):
		t.Errorf("Evaluate running when the driver died still running %v later", crashBound)
	}
	s, took := waitStats(t, admin, killed, 10*time.Second, "2 BROWSER_CRASHED and nothing left", func(s *brokerv1.GetStatsResponse) bool {
		return reclaimedBy(s, brokerv1.ReclaimReason_RECLAIM_REASON_BROWSER_CRASHED) == 2 && settled(0)(s)
	})
	t.Logf("driver SIGKILL to both leases reclaimed: %v; %s", took.Round(time.Millisecond), statsString(s))
	waitGone(t, old, 5*time.Second)

	c := acquireLease(t, conn, 0)
	navigate(t, page, c.id, site.URL+"/c")
	if got := evaluate(t, page, c.id, "document.title"); got != `"page c"` {
		t.Errorf("Evaluate(document.title) after the driver restart = %s, want \"page c\"", got)
	}
	if now := p.driverPid(t); now == driver {
		t.Errorf("driver pid %d after the crash, want a new driver", now)
	}
	c.release(t)
	waitStats(t, admin, time.Now(), 10*time.Second, "invariant ok, nothing left", settled(0))
}

// 8. A page that never finishes loading and scripts that never return: each
// command ends DEADLINE_EXCEEDED at its time limit and is stopped in the
// browser (the hanging request is closed, the spinning script's renderer
// goes away); the lease stays usable and nothing piles up.
func TestFaultCommandsThatNeverEnd(t *testing.T) {
	const limit = 500 * time.Millisecond
	const rounds = 5
	p := startBroker(t, "--max-leases", "2")
	site := newFaultSite(t)
	conn := dial(t, p.addr)
	page, admin := brokerv1.NewPageServiceClient(conn), brokerv1.NewAdminServiceClient(conn)
	l := acquireLease(t, conn, 0)
	navigate(t, page, l.id, site.URL+"/a")
	baseline := len(p.rendererPids())

	// timedOut runs a command that cannot finish within its limit, checks
	// it ends DEADLINE_EXCEEDED in about that time and, when stopped is
	// given, that it was really stopped in the browser before another
	// command could stop it by the way; then that the lease still works.
	notStopped := map[string]bool{} // commands found running after their timeout: not waited for again
	timedOut := func(round int, name string, call func(ctx context.Context) error, stopped func() bool) {
		t.Helper()
		what := fmt.Sprintf("round %d: %s", round, name)
		start := time.Now()
		err := call(callCtx(t, 30*time.Second))
		took := time.Since(start)
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("%s with timeout %v = %v, want DEADLINE_EXCEEDED", what, limit, err)
		}
		t.Logf("%s: DEADLINE_EXCEEDED after %v", what, took.Round(time.Millisecond))
		if took > limit+3*time.Second {
			t.Errorf("%s took %v, want about its timeout %v", what, took, limit)
		}
		if stopped != nil && !notStopped[name] {
			deadline := time.Now().Add(2 * time.Second)
			for !stopped() {
				if time.Now().After(deadline) {
					t.Errorf("%s: still running in the browser 2s after DEADLINE_EXCEEDED, want it stopped", what)
					notStopped[name] = true
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		if got := evaluate(t, page, l.id, "1+1"); got != "2" {
			t.Fatalf("Evaluate(1+1) after %s = %s, want 2", what, got)
		}
	}
	evalTimesOut := func(expr string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: l.id, Expression: expr, Timeout: durationpb.New(limit)})
			return err
		}
	}
	var maxRenderers int
	for i := range rounds {
		timedOut(i, "Navigate(/hang)", func(ctx context.Context) error {
			_, err := page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: l.id, Url: site.URL + "/hang", Timeout: durationpb.New(limit)})
			return err
		}, func() bool { return site.hangActive.Load() == 0 })
		// Scripts that never return, in turns: a promise that never
		// settles, and a loop that never yields. Their page is replaced;
		// the checks after the rounds show the old ones are gone.
		if i%2 == 0 {
			timedOut(i, "Evaluate(new Promise(() => {}))", evalTimesOut("new Promise(() => {})"), nil)
		} else {
			timedOut(i, "Evaluate(while (true) {})", evalTimesOut("(() => { while (true) {} })()"), nil)
		}
		maxRenderers = max(maxRenderers, len(p.rendererPids()))
	}
	// A navigation stopped before its request left the browser never
	// reaches the site; none may reach it twice.
	if got := site.hangTotal.Load(); got > rounds {
		t.Errorf("the site saw %d requests for /hang, want at most %d", got, rounds)
	}
	// Nothing piles up: the hanging requests are closed, the renderers of
	// replaced pages are gone, and none spins.
	deadline := time.Now().Add(5 * time.Second)
	for site.hangActive.Load() != 0 || len(p.rendererPids()) > baseline+2 {
		if time.Now().After(deadline) {
			t.Fatalf("5s after %d rounds: %d hanging requests still open, %d renderers (baseline %d); want 0 and at most baseline+2",
				rounds, site.hangActive.Load(), len(p.rendererPids()), baseline)
		}
		time.Sleep(20 * time.Millisecond)
	}
	renderers := p.rendererPids()
	before := map[int]int64{}
	for _, pid := range renderers {
		before[pid] = proctree.CPUTicks(pid)
	}
	const sample = time.Second
	time.Sleep(sample) // a CPU-time sample, not a synchronisation
	var spent int64
	for _, pid := range renderers {
		spent += proctree.CPUTicks(pid) - before[pid]
	}
	t.Logf("renderers: baseline %d, at most %d during the rounds, %d after; their CPU over %v: %d ticks", baseline, maxRenderers, len(renderers), sample, spent)
	if spent > 30 { // 0.3s of CPU at 100 ticks/s: a spinning script burns 1s
		t.Errorf("renderers used %d ticks of CPU over %v after the rounds; a script is still spinning", spent, sample)
	}
	if got := evaluate(t, page, l.id, "1+1"); got != "2" {
		t.Fatalf("Evaluate(1+1) at the end = %s, want 2", got)
	}
	l.release(t)
	s, _ := waitStats(t, admin, time.Now(), 10*time.Second, "invariant ok, nothing left", settled(0))
	if s.GetReclaimedTotal() != 1 || reclaimedBy(s, brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED) != 1 {
		t.Errorf("GetStats() = %s, want the one RELEASED reclaim", statsString(s))
	}
}

// 8b. A navigation that timed out must not commit later, under the next
// command: the README says the command is stopped in the browser. /slow
// answers only after 1.5s, so a Navigate with a 500ms limit times out
// before the response; the next command must still see the old page.
func TestFaultTimedOutNavigationDoesNotCommitLater(t *testing.T) {
	const limit = 500 * time.Millisecond
	p := startBroker(t, "--max-leases", "2")
	site := newFaultSite(t)
	conn := dial(t, p.addr)
	page := brokerv1.NewPageServiceClient(conn)
	l := acquireLease(t, conn, 0)
	navigate(t, page, l.id, site.URL+"/a")

	_, err := page.Navigate(callCtx(t, 30*time.Second), &brokerv1.NavigateRequest{LeaseId: l.id, Url: site.URL + "/slow", Timeout: durationpb.New(limit)})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Navigate(/slow, timeout %v) = %v, want DEADLINE_EXCEEDED", limit, err)
	}
	// Spans the moment /slow answers.
	const probe = `new Promise(resolve => setTimeout(() => resolve(location.pathname), 2000))`
	resp, err := page.Evaluate(callCtx(t, 30*time.Second), &brokerv1.EvaluateRequest{LeaseId: l.id, Expression: probe})
	if err != nil || resp.GetResultJson() != `"/a"` {
		t.Errorf("Evaluate(location.pathname, 2s later) after the timed-out Navigate(/slow) = %v, %v; want \"/a\": the navigation went on after its DEADLINE_EXCEEDED", resp, err)
	}
	if served := site.slowServed.Load(); served != 0 {
		t.Errorf("/slow: %d responses served after the Navigate timed out (%d requests given up); want none served", served, site.slowAborted.Load())
	}
	if got := evaluate(t, page, l.id, "1+1"); got != "2" {
		t.Fatalf("Evaluate(1+1) at the end = %s, want 2", got)
	}
	l.release(t)
}
