package server

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/test/bufconn"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/lease"
)

// isolationSite serves a page with a cacheable script, and counts the
// requests for each path.
type isolationSite struct {
	*httptest.Server
	mu   sync.Mutex
	hits map[string]int
}

func newIsolationSite(t *testing.T) *isolationSite {
	t.Helper()
	s := &isolationSite{hits: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, `<!doctype html><title>isolation</title><script src="/cached.js"></script>`)
	})
	mux.HandleFunc("/cached.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		w.Header().Set("Cache-Control", "max-age=3600")
		fmt.Fprint(w, "window.cachedRan = true")
	})
	mux.HandleFunc("/sw.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		fmt.Fprint(w, "self.addEventListener('fetch', () => {})")
	})
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.URL.Path]++
		s.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *isolationSite) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

// Two leases, two browser contexts (in one browser process here), share no
// HTTP cache, service workers or IndexedDB; TestLeasesAreIsolated covers
// cookies and localStorage. The site is on 127.0.0.1, a secure context, as
// service workers need.
func TestLeasesShareNoCacheWorkersOrDatabases(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 2})
	s := newIsolationSite(t)
	a := b.acquire(t, &brokerv1.Acquire{})
	c := b.acquire(t, &brokerv1.Acquire{})
	ctx := context.Background()
	nav := func(id string) {
		t.Helper()
		if _, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: s.URL + "/page"}); err != nil {
			t.Fatalf("Navigate(%s) = %v", id, err)
		}
	}
	eval := func(id, expr string) string {
		t.Helper()
		res, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id, Expression: expr})
		if err != nil {
			t.Fatalf("Evaluate(%s, %q) = %v", id, expr, err)
		}
		return res.ResultJson
	}

	// HTTP cache: the first lease's second load comes from its cache; the
	// other lease's first load goes to the server.
	nav(a.id)
	nav(a.id)
	if n := s.count("/cached.js"); n != 1 {
		t.Fatalf("after two loads in one lease the server saw /cached.js %d times, want 1 (cached)", n)
	}
	nav(c.id)
	if n := s.count("/cached.js"); n != 2 {
		t.Errorf("after a load in the other lease the server saw /cached.js %d times, want 2: the cache is shared", n)
	}

	// Service workers.
	const registrations = "navigator.serviceWorker.getRegistrations().then(r => r.length)"
	if got := eval(a.id, "navigator.serviceWorker.register('/sw.js').then(() => navigator.serviceWorker.ready).then(() => "+registrations+")"); got != "1" {
		t.Fatalf("service worker registrations after registering = %s, want 1", got)
	}
	if got := eval(c.id, registrations); got != "0" {
		t.Errorf("the other lease sees %s service worker registrations on the same origin, want 0", got)
	}
	if got := eval(a.id, registrations); got != "1" {
		t.Errorf("the registering lease sees %s registrations afterwards, want 1", got)
	}

	// IndexedDB.
	const put = `new Promise((ok, fail) => {
		const r = indexedDB.open('isolation', 1);
		r.onupgradeneeded = () => r.result.createObjectStore('s');
		r.onerror = () => fail(r.error);
		r.onsuccess = () => { const tx = r.result.transaction('s', 'readwrite'); tx.objectStore('s').put('a', 'k'); tx.oncomplete = () => { r.result.close(); ok(true) } };
	})`
	const names = "indexedDB.databases().then(d => d.map(x => x.name))"
	eval(a.id, put)
	if got := eval(a.id, names); got != `["isolation"]` {
		t.Fatalf("IndexedDB databases after creating one = %s, want [\"isolation\"]", got)
	}
	if got := eval(c.id, names); got != "[]" {
		t.Errorf("the other lease sees IndexedDB databases %s, want none", got)
	}
}

// newPolicyBroker is a broker over a pool of its own with
// DenyPrivateNetworks, the real deny list: every test server, on
// loopback, is out of bounds.
func newPolicyBroker(t *testing.T) *broker {
	t.Helper()
	needBrowser(t)
	cfg, err := browserConfig()
	if err != nil {
		t.Skip(err)
	}
	cfg.DenyPrivateNetworks = true
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	pool, err := browser.NewPool(ctx, cfg)
	cancel()
	if err != nil {
		t.Fatalf("NewPool(DenyPrivateNetworks) = %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pool.Close(ctx); err != nil {
			t.Errorf("closing the policy pool: %v", err)
		}
	})
	// Registered after the pool's cleanup, so it runs first.
	return newBrokerOn(t, pool, lease.Config{Capacity: 2}, bufconn.Listen(1<<20))
}

func TestNavigationPolicyPermissionDenied(t *testing.T) {
	b := newPolicyBroker(t)
	s := newIsolationSite(t)
	h := b.acquire(t, &brokerv1.Acquire{})
	ctx := context.Background()
	port := s.URL[strings.LastIndex(s.URL, ":")+1:]
	for url, why := range map[string]string{
		s.URL + "/page":                      "127.0.0.1 is in a denied range: loopback (deny-private-networks)",
		"http://localhost:" + port + "/page": "localhost resolves to",
		"http://169.254.169.254/latest/":     "169.254.169.254 is in a denied range: link-local",
		"http://[::1]:" + port + "/page":     "::1 is in a denied range: loopback",
	} {
		_, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: h.id, Url: url})
		wantCode(t, "Navigate("+url+")", err, codes.PermissionDenied, why)
	}
	if n := s.count("/page"); n != 0 {
		t.Errorf("the test site was reached %d times, want never", n)
	}
	if b.pool.Stats().PolicyDenied == 0 {
		t.Errorf("Stats.PolicyDenied = 0 after refusals")
	}
	if gs, err := b.admin.GetStats(ctx, &brokerv1.GetStatsRequest{}); err != nil || gs.PolicyDeniedRequests != b.pool.Stats().PolicyDenied {
		t.Errorf("GetStats.policy_denied_requests = %d (%v), want the pool's %d", gs.GetPolicyDeniedRequests(), err, b.pool.Stats().PolicyDenied)
	}

	// A per-lease proxy would bypass the policy.
	_, err := b.tryAcquire(t, &brokerv1.Acquire{Context: &brokerv1.ContextOptions{Proxy: &brokerv1.Proxy{Server: "http://203.0.113.7:3128"}}})
	wantCode(t, "Acquire(with a proxy)", err, codes.PermissionDenied, "per-lease proxy")
	h.release()
}

func TestDisableEvaluate(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 1}, func(_ *lease.Config, sc *Config, _ *GRPCConfig) { sc.DisableEvaluate = true })
	h := b.acquire(t, &brokerv1.Acquire{})
	_, err := b.page.Evaluate(context.Background(), &brokerv1.EvaluateRequest{LeaseId: h.id, Expression: "1"})
	wantCode(t, "Evaluate with DisableEvaluate", err, codes.PermissionDenied, "Evaluate is disabled on this broker")
	// Other commands are untouched.
	if _, err := b.page.Content(context.Background(), &brokerv1.ContentRequest{LeaseId: h.id}); err != nil {
		t.Errorf("Content with DisableEvaluate = %v, want success", err)
	}
	h.release()
}
