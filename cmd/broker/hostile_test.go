package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/proctree"
)

// http2Preface is what an HTTP/2 client sends first.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// TestHostileConnections turns every kind of bad client loose on one broker
// at once, while a well-behaved worker keeps leasing, navigating and
// releasing: garbage bytes on the gRPC port, raw TCP and HTTP/1.1;
// connections left half-open; requests over the size limit; lease streams
// abandoned before acquire, and after the grant with their connection cut;
// page commands on leases that do not exist. The worker never fails, and
// afterwards the broker is back where it began: no lease, no context, the
// books balanced, its goroutines, threads and open files back near their
// baseline, and no Chromium process more.
func TestHostileConnections(t *testing.T) {
	p := startBroker(t, "--max-leases", "6", "--metrics-addr", "127.0.0.1:0")
	metricsURL := "http://" + logAddr(t, p, "metrics listening") + "/metrics"
	pid := p.cmd.Process.Pid
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "<!doctype html><title>good</title><h1>good %s</h1>", strings.Trim(r.URL.Path, "/"))
	}))
	defer site.Close()
	conn := dial(t, p.addr)
	admin := brokerv1.NewAdminServiceClient(conn)

	// The baseline: the browser launched and one lease served.
	good := &goodWorker{conn: conn, site: site.URL}
	if err := good.cycle(0); err != nil {
		t.Fatalf("first lease cycle: %v", err)
	}
	waitStats(t, admin, time.Now(), 30*time.Second, "settled with no lease", settled(0))
	base := sample(t, pid, metricsURL)
	t.Logf("baseline: %s", base)

	stop := make(chan struct{})
	var goodDone sync.WaitGroup
	goodDone.Go(func() { good.run(stop) })

	var attacks sync.WaitGroup
	var hostileGrants, badCodes atomic.Int64
	var failMu sync.Mutex
	var failures []string
	fail := func(format string, args ...any) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}

	// Garbage on the port: the broker must close each connection.
	garbage := [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: broker\r\n\r\n"),
		[]byte("POST /browserbroker.v1.PageService/Navigate HTTP/1.1\r\nHost: broker\r\nContent-Type: application/grpc\r\nContent-Length: 5\r\n\r\nhello"),
		append([]byte(http2Preface), randomBytes(4096)...),
	}
	for range 10 {
		garbage = append(garbage, randomBytes(64<<10))
	}
	for i, g := range garbage {
		attacks.Go(func() {
			if err := sendGarbage(p.addr, g); err != nil {
				fail("garbage %d (%q...): %v", i, g[:min(len(g), 16)], err)
			}
		})
	}

	// Half-open connections: connected, maybe the preface, then silence.
	var halfOpen []net.Conn
	for i := range 40 {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatalf("dial for a half-open connection: %v", err)
		}
		if i%2 == 1 {
			if _, err := c.Write([]byte(http2Preface)); err != nil {
				t.Fatalf("write the preface: %v", err)
			}
		}
		halfOpen = append(halfOpen, c)
	}

	// Requests over the 4 MiB limit, unary and on a lease stream.
	for range 3 {
		attacks.Go(func() {
			page := brokerv1.NewPageServiceClient(conn)
			_, err := page.Evaluate(callCtx(t, 30*time.Second), &brokerv1.EvaluateRequest{LeaseId: "l_x", Expression: strings.Repeat("x", 5<<20)})
			if status.Code(err) != codes.ResourceExhausted {
				fail("Evaluate(5 MiB) = %v, want RESOURCE_EXHAUSTED", err)
			}
			s, err := brokerv1.NewLeaseServiceClient(conn).Lease(callCtx(t, 30*time.Second))
			if err == nil {
				s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{
					Labels: map[string]string{"big": strings.Repeat("x", 5<<20)}}}})
				_, err = s.Recv()
			}
			if status.Code(err) != codes.ResourceExhausted {
				fail("Lease(acquire of 5 MiB) = %v, want RESOURCE_EXHAUSTED", err)
			}
		})
	}

	// Lease streams abandoned before acquire: 120 on connections then cut,
	// 20 half-closed, 20 cancelled.
	for c := range 4 {
		attacks.Go(func() {
			cc, raw := dialRaw(t, p.addr)
			client := brokerv1.NewLeaseServiceClient(cc)
			for range 30 {
				if _, err := client.Lease(context.Background()); err != nil {
					fail("Lease() on connection %d: %v", c, err)
				}
			}
			time.Sleep(500 * time.Millisecond)
			raw.cut()
			cc.Close()
		})
	}
	for i := range 40 {
		attacks.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := brokerv1.NewLeaseServiceClient(conn).Lease(ctx)
			if err != nil {
				fail("Lease(): %v", err)
				return
			}
			if i%2 == 0 {
				s.CloseSend()
				if _, err := s.Recv(); status.Code(err) != codes.InvalidArgument {
					fail("stream half-closed before acquire: %v, want INVALID_ARGUMENT", err)
				}
				return
			}
			time.Sleep(100 * time.Millisecond)
			cancel()
		})
	}

	// Acquires whose connection is cut after the grant, or while queued.
	for i := range 24 {
		attacks.Go(func() {
			cc, raw := dialRaw(t, p.addr)
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			s, err := brokerv1.NewLeaseServiceClient(cc).Lease(ctx)
			if err != nil {
				fail("Lease(): %v", err)
				return
			}
			s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{
				WaitTimeout: durationpb.New(time.Minute), Labels: map[string]string{"who": "hostile"}}}})
			queuedCut := i%4 == 3 // cut as soon as it is queued or granted
			for {
				resp, err := s.Recv()
				if err != nil {
					fail("hostile acquire %d: %v before granted", i, err)
					return
				}
				if resp.GetGranted() != nil {
					hostileGrants.Add(1)
					break
				}
				if queuedCut {
					break
				}
			}
			if i%2 == 0 {
				raw.cut() // the TCP connection dies under HTTP/2
			} else {
				cc.Close() // the client goes away properly
			}
		})
	}

	// Page commands on leases that are not there.
	bogus := []string{"", "l_", "l_AAAAAAAAAAAAAAAAAAAAAAAAAA", "../../etc/passwd", strings.Repeat("l", 4096), "l_%00", "☃"}
	for w := range 6 {
		attacks.Go(func() {
			page := brokerv1.NewPageServiceClient(conn)
			for i := range 150 {
				id := bogus[(w+i)%len(bogus)]
				ctx := callCtx(t, 10*time.Second)
				var err error
				switch i % 4 {
				case 0:
					_, err = page.Content(ctx, &brokerv1.ContentRequest{LeaseId: id})
				case 1:
					_, err = page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: site.URL})
				case 2:
					_, err = page.Click(ctx, &brokerv1.ClickRequest{LeaseId: id, Selector: "h1"})
				case 3:
					_, err = page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id, Expression: "1"})
				}
				switch status.Code(err) {
				case codes.NotFound, codes.InvalidArgument:
				default:
					badCodes.Add(1)
					fail("page command on lease %.20q: %v, want NOT_FOUND or INVALID_ARGUMENT", id, err)
				}
			}
		})
	}

	attacks.Wait()
	t.Logf("with %d connections half-open: %s", len(halfOpen), sample(t, pid, metricsURL))
	time.Sleep(time.Second) // the half-open connections wait a little more
	for _, c := range halfOpen {
		c.Close()
	}
	// The worker keeps going a little after the attacks.
	time.Sleep(2 * time.Second)
	close(stop)
	goodDone.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if good.err != nil {
		t.Errorf("the well-behaved worker failed after %d good cycles: %v", good.cycles, good.err)
	}
	t.Logf("well-behaved worker: %d cycles during the attacks, slowest %v; hostile leases granted then cut: %d",
		good.cycles, good.slowest.Round(time.Millisecond), hostileGrants.Load())
	if good.cycles < 3 {
		t.Errorf("the well-behaved worker did %d lease cycles during the attacks, want at least 3", good.cycles)
	}

	// Everything the hostile clients held is reclaimed: the grants cut off
	// as STREAM_CLOSED, the books balanced, nothing left open.
	s, took := waitStats(t, admin, time.Now(), 30*time.Second, "nothing held or waiting, invariant ok", func(s *brokerv1.GetStatsResponse) bool {
		return settled(0)(s) && s.GetWaiting() == 0
	})
	t.Logf("settled %v after the attacks: %s", took.Round(time.Millisecond), statsString(s))
	if got := reclaimedBy(s, brokerv1.ReclaimReason_RECLAIM_REASON_STREAM_CLOSED); got < uint64(hostileGrants.Load()) {
		t.Errorf("STREAM_CLOSED reclaims: %d, want at least the %d hostile grants", got, hostileGrants.Load())
	}
	if s.GetOrphansClosed() != 0 || s.GetInvariantViolations() != 0 {
		t.Errorf("orphans closed %d, invariant violations %d; want 0 and 0", s.GetOrphansClosed(), s.GetInvariantViolations())
	}

	// And the process is back near its baseline. Go keeps the threads it
	// made for a burst; goroutines, files and Chromium processes go back.
	var now procSample
	deadline := time.Now().Add(30 * time.Second)
	for {
		now = sample(t, pid, metricsURL)
		ok := now.goroutines <= base.goroutines+10 && now.fds <= base.fds+5 &&
			now.threads <= base.threads+12 && now.chromium <= base.chromium
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("30s after the attacks: %s; baseline %s", now, base)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("after: %s", now)
	if strings.Contains(p.stderr.String(), `"level":"error"`) && strings.Contains(p.stderr.String(), "panic") {
		t.Errorf("the broker logged a panic:\n%s", p.stderr.String())
	}
}

// goodWorker leases, navigates, reads and releases, over and over, and
// notes the first failure.
type goodWorker struct {
	conn    *grpc.ClientConn
	site    string
	cycles  int
	slowest time.Duration
	err     error
}

func (g *goodWorker) run(stop <-chan struct{}) {
	for i := 1; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		start := time.Now()
		if err := g.cycle(i); err != nil {
			g.err = fmt.Errorf("cycle %d: %w", i, err)
			return
		}
		g.cycles++
		g.slowest = max(g.slowest, time.Since(start))
	}
}

func (g *goodWorker) cycle(i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := brokerv1.NewLeaseServiceClient(g.conn).Lease(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{
		WaitTimeout: durationpb.New(time.Minute), Labels: map[string]string{"who": "good"}}}}); err != nil {
		return err
	}
	var id string
	for id == "" {
		resp, err := s.Recv()
		if err != nil {
			return fmt.Errorf("acquire: %w", err)
		}
		id = resp.GetGranted().GetLeaseId()
	}
	page := brokerv1.NewPageServiceClient(g.conn)
	if _, err := page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: g.site + "/" + strconv.Itoa(i)}); err != nil {
		return fmt.Errorf("navigate: %w", err)
	}
	txt, err := page.Text(ctx, &brokerv1.TextRequest{LeaseId: id, Selector: "h1"})
	if want := "good " + strconv.Itoa(i); err != nil || len(txt.GetTexts()) != 1 || txt.GetTexts()[0] != want {
		return fmt.Errorf("Text(h1) = %v, %v; want [%s]", txt, err, want)
	}
	if err := s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}}); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	var rev *brokerv1.Revoked
	for {
		resp, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("after release: %w", err)
		}
		if r := resp.GetRevoked(); r != nil {
			rev = r
		}
	}
	if rev.GetReason() != brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED {
		return fmt.Errorf("release ended with %v, want revoked{RELEASED}", rev)
	}
	return nil
}

// sendGarbage writes b to a new connection to addr and waits for the
// broker to close it.
func sendGarbage(addr string, b []byte) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(b); err != nil && !isReset(err) {
		return fmt.Errorf("write: %w", err)
	}
	if _, err := io.Copy(io.Discard, c); err != nil && !isReset(err) {
		return fmt.Errorf("the broker did not close the connection: %w", err)
	}
	return nil
}

func isReset(err error) bool {
	return errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "connection reset") ||
		strings.Contains(err.Error(), "broken pipe")
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// rawConn is the TCP connection under a gRPC client connection, to cut it
// without a goodbye.
type rawConn struct {
	mu sync.Mutex
	c  net.Conn
}

func (r *rawConn) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c != nil {
		if tc, ok := r.c.(*net.TCPConn); ok {
			tc.SetLinger(0) // a reset, not a FIN
		}
		r.c.Close()
	}
}

// dialRaw is dial, keeping hold of the TCP connection. The client makes
// one connection only: after a cut it does not reconnect.
func dialRaw(t *testing.T, addr string) (*grpc.ClientConn, *rawConn) {
	t.Helper()
	raw := &rawConn{}
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			raw.mu.Lock()
			defer raw.mu.Unlock()
			if raw.c != nil {
				return nil, errors.New("test: no reconnect")
			}
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", a)
			raw.c = c
			return c, err
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, raw
}

// logAddr is the addr field of the broker's first log line with msg.
func logAddr(t *testing.T, p *brokerProc, msg string) string {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(p.stderr.String()))
	for sc.Scan() {
		var entry struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(sc.Bytes(), &entry) == nil && entry.Msg == msg {
			return entry.Addr
		}
	}
	t.Fatalf("no %q in the broker's log:\n%s", msg, p.stderr.String())
	return ""
}

// procSample is what the broker process holds.
type procSample struct {
	goroutines, threads, fds, chromium int
}

func (s procSample) String() string {
	return fmt.Sprintf("%d goroutines, %d threads, %d open files, %d Chromium processes", s.goroutines, s.threads, s.fds, s.chromium)
}

func sample(t *testing.T, pid int, metricsURL string) procSample {
	t.Helper()
	var s procSample
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatalf("GET %s: %v", metricsURL, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^go_goroutines (\d+)`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no go_goroutines in %s", metricsURL)
	}
	s.goroutines, _ = strconv.Atoi(string(m[1]))
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^Threads:\s+(\d+)`).FindSubmatch(st); m != nil {
		s.threads, _ = strconv.Atoi(string(m[1]))
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	s.fds = len(fds)
	for _, e := range proctree.Tree(pid) {
		if strings.Contains(e.Cmdline, "chrom") {
			s.chromium++
		}
	}
	return s
}
