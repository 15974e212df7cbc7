package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/lease"
	"github.com/browserbroker/broker/internal/state"
)

// The package's tests share one browser pool (launching Chromium takes a
// second) and one local test site. Tests run one at a time, and each closes
// what it leased, so the pool is empty between tests.
var (
	sharedPool *browser.Pool
	site       *httptest.Server
	skipReason string
)

func TestMain(m *testing.M) {
	site = httptest.NewServer(testSite())
	cfg, err := browserConfig()
	if err == nil && !fuzzing() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		sharedPool, err = browser.NewPool(ctx, cfg)
		cancel()
	}
	if err != nil {
		if os.Getenv("BROKER_REQUIRE_BROWSER") != "" {
			fmt.Fprintf(os.Stderr, "browser required but unavailable: %v\n", err)
			os.Exit(1)
		}
		skipReason = fmt.Sprintf("no browser (%v); run `make test`", err)
	}
	code := m.Run()
	if sharedPool != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		sharedPool.Close(ctx)
		cancel()
	}
	site.Close()
	if code == 0 {
		if err := goleak.Find(goleakOptions()...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// fuzzing reports a run with -test.fuzz: the fuzz coordinator and each of
// its workers run TestMain, and the fuzz targets need no browser.
func fuzzing() bool {
	flag.Parse()
	f := flag.Lookup("test.fuzz")
	return f != nil && f.Value.String() != ""
}

func goleakOptions() []goleak.Option {
	return []goleak.Option{
		// httptest's idle connections close asynchronously.
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	}
}

func browserConfig() (browser.Config, error) {
	driver := os.Getenv("PLAYWRIGHT_DRIVER_PATH")
	if driver == "" {
		dir, _ := os.Getwd()
		for ; dir != "/"; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				break
			}
		}
		driver = filepath.Join(dir, ".cache", "playwright", "1.52.0")
	}
	exe := os.Getenv("BROKER_CHROMIUM")
	if exe == "" {
		exe = "/usr/bin/chromium"
	}
	cfg := browser.Config{DriverDir: driver, ExecutablePath: exe}
	return cfg, browser.Check(cfg)
}

func needBrowser(t testing.TB) *browser.Pool {
	t.Helper()
	if sharedPool == nil {
		t.Skip(skipReason)
	}
	return sharedPool
}

// needGrpcurl returns the grpcurl binary: $GRPCURL (make test sets it),
// else one on $PATH. Without one the test is skipped, or fails when
// BROKER_REQUIRE_BROWSER says everything must be there.
func needGrpcurl(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("GRPCURL"); bin != "" {
		return bin
	}
	bin, err := exec.LookPath("grpcurl")
	if err != nil {
		if os.Getenv("BROKER_REQUIRE_BROWSER") != "" {
			t.Fatal("grpcurl not found: set GRPCURL (make test does)")
		}
		t.Skip("grpcurl not installed; run `make test`")
	}
	return bin
}

// testSite serves the pages the tests drive.
func testSite() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var items strings.Builder
		for i := 1; i <= 50; i++ {
			fmt.Fprintf(&items, "<li class=item>item %d</li>", i)
		}
		fmt.Fprintf(w, `<!doctype html><title>Test Site</title>
<h1>Hello</h1>
<form onsubmit="event.preventDefault(); document.querySelector('#out').textContent = 'submitted ' + document.querySelector('#q').value">
<input id=q name=q><button id=go type=button onclick="document.querySelector('#out').textContent = 'clicked ' + document.querySelector('#q').value">Go</button></form>
<p id=out></p><ul>%s</ul><a href="#done">done</a>
<script>localStorage.setItem('seen', (localStorage.getItem('seen')||'') + 'x')</script>`, items.String())
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		// Headers and a little body, then nothing until the client leaves.
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "<html><body>loading")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/", http.StatusFound)
	})
	mux.HandleFunc("/missing", http.NotFound)
	return mux
}

// broker is one broker under test: a lease manager over the shared pool,
// the gRPC edge, and clients over an in-memory connection.
type broker struct {
	leases  *lease.Manager
	metrics *Metrics
	pool    *browser.Pool
	grpc    *grpc.Server
	lis     net.Listener
	conn    *grpc.ClientConn
	lease   brokerv1.LeaseServiceClient
	page    brokerv1.PageServiceClient
	admin   brokerv1.AdminServiceClient
}

type brokerOption func(*lease.Config, *Config, *GRPCConfig)

// withStore keeps sticky sessions' state in store.
func withStore(store *state.Store) brokerOption {
	return func(lc *lease.Config, sc *Config, _ *GRPCConfig) {
		lc.Sessions = store
		sc.Sessions = store
	}
}

func newBroker(t *testing.T, cfg lease.Config, opts ...brokerOption) *broker {
	t.Helper()
	pool := needBrowser(t)
	return newBrokerOn(t, pool, cfg, bufconn.Listen(1<<20), opts...)
}

func newBrokerOn(t *testing.T, pool *browser.Pool, cfg lease.Config, lis net.Listener, opts ...brokerOption) *broker {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	cfg.Logger = log
	scfg := Config{Browsers: pool, Logger: log}
	var gcfg GRPCConfig
	for _, o := range opts {
		o(&cfg, &scfg, &gcfg)
	}
	b := &broker{pool: pool, lis: lis}
	backend := BrowserBackend{Pool: pool}
	if store, ok := scfg.Sessions.(*state.Store); ok { // see withStore
		backend.Store = store
	}
	b.leases = lease.New(backend, cfg)
	b.metrics = NewMetrics(b.leases, pool)
	scfg.Leases = b.leases
	scfg.Metrics = b.metrics
	b.grpc, _ = NewGRPCServer(New(scfg), gcfg)
	go b.grpc.Serve(lis)
	var dial []grpc.DialOption
	target := lis.Addr().String()
	if bl, ok := lis.(*bufconn.Listener); ok {
		target = "passthrough:///bufnet"
		dial = append(dial, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return bl.DialContext(ctx)
		}))
	}
	conn, err := grpc.NewClient(target, append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	b.conn = conn
	b.lease = brokerv1.NewLeaseServiceClient(conn)
	b.page = brokerv1.NewPageServiceClient(conn)
	b.admin = brokerv1.NewAdminServiceClient(conn)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.leases.Close(ctx); err != nil {
			t.Errorf("closing the lease manager: %v", err)
		}
		conn.Close()
		b.grpc.Stop()
		b.checkSettled(t)
	})
	return b
}

// checkSettled asserts the books balance and no context is left open.
func (b *broker) checkSettled(t *testing.T) {
	t.Helper()
	st := b.leases.Stats()
	if st.InvariantErr != nil || st.InvariantViolations != 0 || st.OrphansClosed != 0 {
		t.Errorf("invariant: %v (violations %d, orphans closed %d)", st.InvariantErr, st.InvariantViolations, st.OrphansClosed)
	}
	if st.Active != 0 || b.pool.Stats().Contexts != 0 {
		t.Errorf("after close: %d leases active, %d browser contexts open; want 0 and 0", st.Active, b.pool.Stats().Contexts)
	}
}

// holder is a client holding a lease stream.
type holder struct {
	t      *testing.T
	stream brokerv1.LeaseService_LeaseClient
	cancel context.CancelFunc
	id     string
	queued []int32
}

// acquire opens a stream, sends acquire and reads until granted.
func (b *broker) acquire(t *testing.T, a *brokerv1.Acquire) *holder {
	t.Helper()
	h, err := b.tryAcquire(t, a)
	if err != nil {
		t.Fatalf("acquire(%v) = %v, want granted", a, err)
	}
	return h
}

func (b *broker) tryAcquire(t *testing.T, a *brokerv1.Acquire) (*holder, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := b.lease.Lease(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	if err := stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: a}}); err != nil {
		cancel()
		return nil, err
	}
	h := &holder{t: t, stream: stream, cancel: cancel}
	for {
		resp, err := stream.Recv()
		if err != nil {
			cancel()
			return h, err
		}
		switch m := resp.Msg.(type) {
		case *brokerv1.LeaseResponse_Queued:
			h.queued = append(h.queued, m.Queued.Position)
		case *brokerv1.LeaseResponse_Granted:
			h.id = m.Granted.LeaseId
			return h, nil
		default:
			cancel()
			return h, fmt.Errorf("unexpected %v before granted", resp)
		}
	}
}

// revoked reads the stream to its end and returns the revoked message,
// failing the test if the stream ends any other way.
func (h *holder) revoked() *brokerv1.Revoked {
	h.t.Helper()
	var rev *brokerv1.Revoked
	for {
		resp, err := h.stream.Recv()
		if err != nil {
			if rev == nil {
				h.t.Fatalf("lease %s stream ended with %v before revoked", h.id, err)
			}
			if !errors.Is(err, io.EOF) {
				h.t.Fatalf("lease %s stream ended with %v after revoked, want OK", h.id, err)
			}
			return rev
		}
		if r := resp.GetRevoked(); r != nil {
			rev = r
		}
	}
}

func (h *holder) send(r *brokerv1.LeaseRequest) {
	h.t.Helper()
	if err := h.stream.Send(r); err != nil {
		h.t.Fatalf("send %v: %v", r, err)
	}
}

func (h *holder) release() *brokerv1.Revoked {
	h.t.Helper()
	h.send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}})
	return h.revoked()
}

// newBufListener serves g over an in-memory listener and returns a client
// connection to it.
func newBufListener(t *testing.T, g *grpc.Server) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	go g.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); g.Stop() })
	return conn
}
