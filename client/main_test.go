package client_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"

	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/lease"
	"github.com/browserbroker/broker/internal/server"
)

// The tests and examples run against real brokers (lease manager, gRPC edge,
// loopback TCP) over one shared browser pool, and drive pages of a local
// test site. TestMain starts one broker for the examples; tests that need
// particular settings start their own on the same pool.
var (
	pool *browser.Pool
	site *httptest.Server

	// brokerAddr is the address of the examples' broker.
	brokerAddr string
	// siteURL is the root of the local test site, with a trailing slash.
	siteURL string
)

type testMain struct{ m *testing.M }

func (tm testMain) Run() int {
	site = httptest.NewServer(testSite())
	defer site.Close()
	siteURL = site.URL + "/"

	cfg, err := browserConfig()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		pool, err = browser.NewPool(ctx, cfg)
		cancel()
	}
	if err != nil {
		if os.Getenv("BROKER_REQUIRE_BROWSER") != "" {
			fmt.Fprintf(os.Stderr, "browser required but unavailable: %v\n", err)
			return 1
		}
		// Every test and example needs a broker with a browser.
		fmt.Printf("skipping package client: no browser (%v); run `make test`\n", err)
		return 0
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pool.Close(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "closing the browser pool: %v\n", err)
		}
	}()

	// This broker outlives the tests' own brokers on the same pool, whose
	// browser contexts its periodic invariant check would count as its
	// own; its books are checked once, when it stops.
	b, err := newBroker(lease.Config{CheckInterval: -1}, zap.NewNop())
	if err != nil {
		fmt.Fprintf(os.Stderr, "start the examples' broker: %v\n", err)
		return 1
	}
	brokerAddr = b.addr
	code := tm.m.Run()
	if err := b.stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stop the examples' broker: %v\n", err)
		code = 1
	}
	return code
}

func TestMain(m *testing.M) {
	// No ignores: leases, brokers, the pool and the site leave nothing
	// running.
	goleak.VerifyTestMain(testMain{m})
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
		driver = filepath.Join(dir, ".cache", "playwright", browser.DriverVersion)
	}
	exe := os.Getenv("BROKER_CHROMIUM")
	if exe == "" {
		exe = "/usr/bin/chromium"
	}
	cfg := browser.Config{DriverDir: driver, ExecutablePath: exe}
	return cfg, browser.Check(cfg)
}

// testSite serves the pages the tests drive.
func testSite() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		var items strings.Builder
		for i := 1; i <= 3; i++ {
			fmt.Fprintf(&items, "<li class=item>item %d</li>", i)
		}
		fmt.Fprintf(w, `<!doctype html><title>Test Site</title>
<h1>Hello</h1>
<input id=q name=q><button id=go type=button onclick="document.querySelector('#out').textContent = 'clicked ' + document.querySelector('#q').value">Go</button>
<p id=out></p><ul>%s</ul>`, items.String())
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><title>Headers</title><p id=ua>%s</p><p id=referer>%s</p>`,
			r.UserAgent(), r.Referer())
	})
	mux.HandleFunc("/cookie", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "abc", Path: "/"})
		fmt.Fprint(w, `<!doctype html><title>Cookie</title>`)
	})
	return mux
}

// testBroker is one broker: a lease manager over the shared pool and the
// gRPC edge on a loopback port.
type testBroker struct {
	addr   string
	leases *lease.Manager
	grpc   *grpc.Server
	served chan struct{}
}

func newBroker(cfg lease.Config, log *zap.Logger) (*testBroker, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cfg.Logger = log
	b := &testBroker{addr: lis.Addr().String(), served: make(chan struct{})}
	b.leases = lease.New(server.BrowserBackend{Pool: pool}, cfg)
	b.grpc, _ = server.NewGRPCServer(server.New(server.Config{Leases: b.leases, Browsers: pool, Logger: log}), server.GRPCConfig{})
	go func() {
		defer close(b.served)
		_ = b.grpc.Serve(lis)
	}()
	return b, nil
}

// stop shuts the broker down and checks its books balance.
func (b *testBroker) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := b.leases.Close(ctx)
	b.grpc.Stop()
	<-b.served
	if err != nil {
		return err
	}
	st := b.leases.Stats()
	if st.InvariantErr != nil || st.InvariantViolations != 0 || st.Active != 0 {
		return fmt.Errorf("after close: invariant %v, %d violations, %d leases active; want ok, 0, 0",
			st.InvariantErr, st.InvariantViolations, st.Active)
	}
	return nil
}

// startBroker starts a broker with cfg for one test.
func startBroker(tb testing.TB, cfg lease.Config) *testBroker {
	tb.Helper()
	b, err := newBroker(cfg, zaptest.NewLogger(tb, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		tb.Fatalf("start broker: %v", err)
	}
	tb.Cleanup(func() {
		if err := b.stop(); err != nil {
			tb.Errorf("stop broker: %v", err)
		}
	})
	return b
}
