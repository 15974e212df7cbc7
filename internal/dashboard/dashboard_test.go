package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/fleet"
	"github.com/browserbroker/broker/internal/lease"
	"github.com/browserbroker/broker/internal/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// httptest's idle client connections close asynchronously.
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// fakeBackend opens sessions that are counters with a page that can be
// screenshot.
type fakeBackend struct {
	mu   sync.Mutex
	live int
}

func (b *fakeBackend) Open(ctx context.Context, spec any) (lease.Session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.live++
	return &fakeSession{b: b, lost: make(chan struct{})}, nil
}

func (b *fakeBackend) Live() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.live
}

type fakeSession struct {
	b     *fakeBackend
	lost  chan struct{}
	shots atomic.Int32
}

func (s *fakeSession) Close(ctx context.Context) error {
	s.b.mu.Lock()
	s.b.live--
	s.b.mu.Unlock()
	return nil
}

func (s *fakeSession) Lost() <-chan struct{}              { return s.lost }
func (s *fakeSession) LostReason() (lease.Reason, string) { return lease.BrowserCrashed, "" }

func (s *fakeSession) Screenshot(ctx context.Context, o browser.ScreenshotOptions) ([]byte, error) {
	s.shots.Add(1)
	if o.Format != "jpeg" || o.FullPage || !o.Untouched {
		return nil, io.ErrUnexpectedEOF // the dashboard asks for an untouched viewport JPEG only
	}
	return []byte("\xff\xd8 fake jpeg"), nil
}

// fakeBrowsers is a pool of one browser.
type fakeBrowsers struct{}

func (fakeBrowsers) Stats() browser.Stats {
	return browser.Stats{Browsers: 1, Warm: 2, WarmHits: 3, Launches: 4, BrowserCrashes: 1, PageCrashes: 2}
}
func (fakeBrowsers) Browsers() []browser.BrowserInfo {
	return []browser.BrowserInfo{{Name: "local-1", PID: 4242, Contexts: 2, Created: 5, Age: time.Minute, PSSBytes: 300 << 20}}
}

// recordingDrainer records SetDraining and drains the manager, as
// server.Server does.
type recordingDrainer struct {
	leases *lease.Manager
	calls  []bool
}

func (d *recordingDrainer) SetDraining(on bool) {
	d.calls = append(d.calls, on)
	d.leases.Drain(on)
}

type testDashboard struct {
	h       *Handler
	leases  *lease.Manager
	drainer *recordingDrainer
	srv     *httptest.Server
}

func newTestDashboard(t *testing.T, edit func(*Config)) *testDashboard {
	t.Helper()
	log := zaptest.NewLogger(t)
	m := lease.New(&fakeBackend{}, lease.Config{Capacity: 2, Logger: log})
	d := &recordingDrainer{leases: m}
	cfg := Config{Leases: m, Browsers: fakeBrowsers{}, Drainer: d, Logger: log}
	if edit != nil {
		edit(&cfg)
	}
	h := New(cfg)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		h.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("closing the lease manager: %v", err)
		}
	})
	return &testDashboard{h: h, leases: m, drainer: d, srv: srv}
}

func (d *testDashboard) acquire(t *testing.T, req lease.AcquireRequest) *lease.Lease {
	t.Helper()
	l, err := d.leases.Acquire(context.Background(), req, nil)
	if err != nil {
		t.Fatalf("Acquire(%+v) = %v", req, err)
	}
	return l
}

// do sends a request to the dashboard; header holds extra headers.
func (d *testDashboard) do(t *testing.T, method, path string, body io.Reader, header map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, d.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

const (
	adminToken  = "admin-token-0123456789"
	clientToken = "client-token-0123456789"
)

func withAuth(t *testing.T) func(*Config) {
	tokens, err := server.ParseTokens(strings.NewReader(adminToken + " alice admin\n" + clientToken + " bob client\n"))
	if err != nil {
		t.Fatal(err)
	}
	return func(c *Config) { c.Auth = server.NewAuth(server.AuthConfig{Tokens: tokens}) }
}

func bearer(token string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token}
}

func TestAuth(t *testing.T) {
	d := newTestDashboard(t, withAuth(t))
	for _, tc := range []struct {
		name, path string
		header     map[string]string
		want       int
	}{
		{"state without a token", "/dashboard/api/state", nil, http.StatusUnauthorized},
		{"events without a token", "/dashboard/api/events", nil, http.StatusUnauthorized},
		{"thumbnail without a token", "/dashboard/api/leases/l_x/thumbnail", nil, http.StatusUnauthorized},
		{"state with an unknown token", "/dashboard/api/state", bearer("not-a-token-0123456789"), http.StatusUnauthorized},
		{"state with a client token", "/dashboard/api/state", bearer(clientToken), http.StatusForbidden},
		{"state with an admin token", "/dashboard/api/state", bearer(adminToken), http.StatusOK},
		{"page without a token", "/dashboard/", nil, http.StatusUnauthorized},
		{"page with a client token", "/dashboard/", bearer(clientToken), http.StatusForbidden},
		{"page with an admin token", "/dashboard/", bearer(adminToken), http.StatusOK},
		{"static files without a token", "/dashboard/static/app.js", nil, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := d.do(t, "GET", tc.path, nil, tc.header)
			if resp.StatusCode != tc.want {
				t.Fatalf("GET %s = %s, want %d", tc.path, resp.Status, tc.want)
			}
		})
	}
	t.Run("the page without a token is the login form", func(t *testing.T) {
		resp := d.do(t, "GET", "/dashboard/", nil, nil)
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `action="/dashboard/login"`) {
			t.Fatalf("GET /dashboard/ without a token = %q, want the login form", b)
		}
	})
}

func TestCookieLogin(t *testing.T) {
	d := newTestDashboard(t, withAuth(t))
	form := func(token string) io.Reader { return strings.NewReader(url.Values{"token": {token}}.Encode()) }
	formHeader := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": d.srv.URL}

	if resp := d.do(t, "POST", "/dashboard/login", form("wrong-token-0123456789"), formHeader); resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Fatalf("login with an unknown token = %s with cookies %v, want 401 and none", resp.Status, resp.Cookies())
	}
	if resp := d.do(t, "POST", "/dashboard/login", form(clientToken), formHeader); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Fatalf("login with a client token = %s with cookies %v, want 403 and none", resp.Status, resp.Cookies())
	}
	cross := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Site": "cross-site"}
	if resp := d.do(t, "POST", "/dashboard/login", form(adminToken), cross); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Fatalf("cross-site login = %s with cookies %v, want 403 and none", resp.Status, resp.Cookies())
	}

	resp := d.do(t, "POST", "/dashboard/login", form(adminToken), formHeader)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dashboard/" {
		t.Fatalf("login with an admin token = %s to %q, want 303 to /dashboard/", resp.Status, resp.Header.Get("Location"))
	}
	var c *http.Cookie
	for _, rc := range resp.Cookies() {
		if rc.Name == cookieName {
			c = rc
		}
	}
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/dashboard" || strings.Contains(c.Value, adminToken) {
		t.Fatalf("login cookie = %+v, want %s, HttpOnly, SameSite=Strict, Path=/dashboard, token not in clear", c, cookieName)
	}
	withCookie := map[string]string{"Cookie": c.Name + "=" + c.Value}
	if resp := d.do(t, "GET", "/dashboard/api/state", nil, withCookie); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET state with the login cookie = %s, want 200", resp.Status)
	}
	// Removing the token (as a SIGHUP reload does) ends the login.
	none, _ := server.ParseTokens(strings.NewReader(""))
	d.h.cfg.Auth.SetTokens(none)
	if resp := d.do(t, "GET", "/dashboard/api/state", nil, withCookie); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET state with the cookie of a removed token = %s, want 401", resp.Status)
	}
}

func TestActionsRefuseCrossSiteRequests(t *testing.T) {
	d := newTestDashboard(t, withAuth(t))
	l := d.acquire(t, lease.AcquireRequest{})
	path := "/dashboard/api/leases/" + l.ID() + "/revoke"
	merge := func(hs ...map[string]string) map[string]string {
		out := map[string]string{}
		for _, h := range hs {
			for k, v := range h {
				out[k] = v
			}
		}
		return out
	}
	action := map[string]string{actionHeader: "1"}
	for _, tc := range []struct {
		name   string
		method string
		header map[string]string
		want   int
	}{
		{"GET", "GET", merge(bearer(adminToken), action), http.StatusMethodNotAllowed},
		{"no token", "POST", action, http.StatusUnauthorized},
		{"client token", "POST", merge(bearer(clientToken), action), http.StatusForbidden},
		{"no action header", "POST", bearer(adminToken), http.StatusForbidden},
		{"cross-site fetch", "POST", merge(bearer(adminToken), action, map[string]string{"Sec-Fetch-Site": "cross-site"}), http.StatusForbidden},
		{"other origin", "POST", merge(bearer(adminToken), action, map[string]string{"Origin": "http://evil.example"}), http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if resp := d.do(t, tc.method, path, nil, tc.header); resp.StatusCode != tc.want {
				t.Fatalf("%s %s (%s) = %s, want %d", tc.method, path, tc.name, resp.Status, tc.want)
			}
			if _, err := d.leases.Get(l.ID()); err != nil {
				t.Fatalf("after a refused revoke, Get(%s) = %v, want the lease alive", l.ID(), err)
			}
		})
	}
	for _, p := range []string{"/dashboard/api/drain", "/dashboard/logout"} {
		if resp := d.do(t, "POST", p, nil, merge(bearer(adminToken), action, map[string]string{"Sec-Fetch-Site": "cross-site"})); resp.StatusCode != http.StatusForbidden {
			t.Errorf("cross-site POST %s = %s, want 403", p, resp.Status)
		}
	}
	if len(d.drainer.calls) != 0 {
		t.Fatalf("refused drains called SetDraining %v, want never", d.drainer.calls)
	}

	same := merge(bearer(adminToken), action, map[string]string{"Origin": d.srv.URL, "Sec-Fetch-Site": "same-origin"})
	resp := d.do(t, "POST", path, nil, same)
	var got map[string]string
	json.NewDecoder(resp.Body).Decode(&got)
	if resp.StatusCode != http.StatusOK || got["reason"] != "REVOKED" {
		t.Fatalf("same-origin revoke = %s %v, want 200 REVOKED", resp.Status, got)
	}
	if r, _ := l.Reason(); r != lease.Revoked {
		t.Fatalf("revoked lease ended %v, want REVOKED", r)
	}
	if resp := d.do(t, "POST", path, nil, same); resp.StatusCode != http.StatusConflict {
		t.Fatalf("revoking it again = %s, want 409", resp.Status)
	}
}

func TestDrainAndUndrain(t *testing.T) {
	d := newTestDashboard(t, nil)
	action := map[string]string{actionHeader: "1"}
	for _, step := range []struct {
		path string
		want bool
	}{{"/dashboard/api/drain", true}, {"/dashboard/api/undrain", false}} {
		if resp := d.do(t, "POST", step.path, nil, action); resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s = %s, want 200", step.path, resp.Status)
		}
		if got := d.leases.Stats().Draining; got != step.want {
			t.Fatalf("after POST %s, Stats().Draining = %v, want %v", step.path, got, step.want)
		}
	}
	if len(d.drainer.calls) != 2 || !d.drainer.calls[0] || d.drainer.calls[1] {
		t.Fatalf("SetDraining calls %v, want [true false]", d.drainer.calls)
	}
}

// fakeClock is a clock tests move.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestThumbnailsAtMostOnePerLeasePerSecond(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	var shots atomic.Int32
	gate := make(chan struct{})
	d := newTestDashboard(t, func(c *Config) {
		c.Now = clock.Now
		c.Thumbnail = func(ctx context.Context, id string) ([]byte, error) {
			n := shots.Add(1)
			<-gate
			return []byte(id + " shot " + string(rune('0'+n))), nil
		}
	})
	l := d.acquire(t, lease.AcquireRequest{})
	path := "/dashboard/api/leases/" + l.ID() + "/thumbnail"
	get := func() string {
		resp := d.do(t, "GET", path, nil, nil)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/jpeg" {
			t.Errorf("GET %s = %s %q, want 200 image/jpeg", path, resp.Status, resp.Header.Get("Content-Type"))
		}
		return string(b)
	}

	// Ten at once, while the screenshot is being taken: one screenshot.
	results := make(chan string, 10)
	for range 10 {
		go func() { results <- get() }()
	}
	close(gate)
	for range 10 {
		if got, want := <-results, l.ID()+" shot 1"; got != want {
			t.Fatalf("concurrent thumbnail = %q, want %q", got, want)
		}
	}
	if n := shots.Load(); n != 1 {
		t.Fatalf("10 concurrent thumbnail requests took %d screenshots, want 1", n)
	}
	// Under a second later: the same picture.
	clock.Add(900 * time.Millisecond)
	if got := get(); got != l.ID()+" shot 1" || shots.Load() != 1 {
		t.Fatalf("thumbnail 0.9s later = %q after %d screenshots, want shot 1 from 1", got, shots.Load())
	}
	// A second after the first: a new one.
	clock.Add(100 * time.Millisecond)
	if got := get(); got != l.ID()+" shot 2" || shots.Load() != 2 {
		t.Fatalf("thumbnail 1s later = %q after %d screenshots, want shot 2 from 2", got, shots.Load())
	}
}

func TestThumbnailIsNotActivity(t *testing.T) {
	d := newTestDashboard(t, nil)
	l := d.acquire(t, lease.AcquireRequest{TTL: time.Minute})
	before, _ := d.leases.Get(l.ID())
	resp := d.do(t, "GET", "/dashboard/api/leases/"+l.ID()+"/thumbnail", nil, nil)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(b), "\xff\xd8") {
		t.Fatalf("GET thumbnail = %s %q, want 200 and a JPEG", resp.Status, b)
	}
	if n := l.Session().(*fakeSession).shots.Load(); n != 1 {
		t.Fatalf("the session was screenshot %d times, want 1", n)
	}
	after, _ := d.leases.Get(l.ID())
	if after.Commands != before.Commands || !after.LastActivity.Equal(before.LastActivity) || !after.ExpiresAt.Equal(before.ExpiresAt) {
		t.Fatalf("a thumbnail changed the lease: commands %d→%d, last activity %v→%v, expires %v→%v; want unchanged",
			before.Commands, after.Commands, before.LastActivity, after.LastActivity, before.ExpiresAt, after.ExpiresAt)
	}
	if resp := d.do(t, "GET", "/dashboard/api/leases/l_nope/thumbnail", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("thumbnail of an unknown lease = %s, want 404", resp.Status)
	}
}

func TestReclaimHistoryRollsOver(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var h reclaimHistory
	counts := func(s []MinuteReclaims, i int) map[string]uint64 { return s[i].Counts }
	h.observe(t0, map[lease.Reason]uint64{lease.Released: 7}) // baseline: earlier reclaims are not charted
	h.observe(t0.Add(10*time.Second), map[lease.Reason]uint64{lease.Released: 9})
	s := h.series(t0.Add(10 * time.Second))
	if len(s) != 60 || !s[59].Start.Equal(t0) || counts(s, 59)["RELEASED"] != 2 {
		t.Fatalf("series at t0+10s: %d minutes, last %v %v; want 60, the last t0 with RELEASED 2", len(s), s[59].Start, counts(s, 59))
	}
	h.observe(t0.Add(70*time.Second), map[lease.Reason]uint64{lease.Released: 10, lease.Revoked: 1})
	s = h.series(t0.Add(70 * time.Second))
	if c := counts(s, 58); c["RELEASED"] != 2 || len(c) != 1 {
		t.Fatalf("minute t0 at t0+70s = %v, want RELEASED 2", c)
	}
	if c := counts(s, 59); c["RELEASED"] != 1 || c["REVOKED"] != 1 {
		t.Fatalf("minute t0+1m at t0+70s = %v, want RELEASED 1, REVOKED 1", c)
	}
	// An hour later, minute t0 has left the chart, and its slot counts
	// the new minute from zero.
	later := t0.Add(60*time.Minute + 20*time.Second)
	h.observe(later, map[lease.Reason]uint64{lease.Released: 12, lease.Revoked: 1})
	s = h.series(later)
	if !s[0].Start.Equal(t0.Add(time.Minute)) || counts(s, 0)["REVOKED"] != 1 {
		t.Fatalf("an hour later the first minute is %v %v, want t0+1m with REVOKED 1", s[0].Start, counts(s, 0))
	}
	if c := counts(s, 59); c["RELEASED"] != 2 || len(c) != 1 {
		t.Fatalf("minute t0+60m = %v, want RELEASED 2 (not the old minute's 2 added)", c)
	}
	total := 0
	for _, m := range s {
		for _, n := range m.Counts {
			total += int(n)
		}
	}
	if total != 4 {
		t.Fatalf("an hour later the chart holds %d reclaims, want 4 (1+1 at t0+1m, 2 at t0+60m)", total)
	}
}

func TestStateJSONShape(t *testing.T) {
	d := newTestDashboard(t, nil)
	a := d.acquire(t, lease.AcquireRequest{Labels: map[string]string{"job": "crawl"}, Principal: "alice"})
	d.acquire(t, lease.AcquireRequest{SessionKey: "shop-1"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	queued := make(chan struct{})
	waiterGranted := make(chan error, 1)
	go func() {
		_, err := d.leases.Acquire(ctx, lease.AcquireRequest{Wait: time.Minute}, func(int) { close(queued) })
		waiterGranted <- err
	}()
	<-queued
	if err := d.leases.DoCommand(context.Background(), "alice", a.ID(), "Navigate", func(context.Context, lease.Session) error { return nil }); err != nil {
		t.Fatalf("DoCommand = %v", err)
	}

	resp := d.do(t, "GET", "/dashboard/api/state", nil, nil)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/json" {
		t.Fatalf("GET state = %s %s, want 200 application/json", resp.Status, ct)
	}
	var raw map[string]json.RawMessage
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("state %s: %v", b, err)
	}
	for _, k := range []string{"now", "draining", "capacity", "invariant", "leases", "queue", "browsers", "reclaims", "viewer", "totals"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("state has no %q: %s", k, b)
		}
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Leases) != 2 || s.Leases[0].ID != a.ID() || s.Leases[0].Principal != "alice" || s.Leases[0].Labels["job"] != "crawl" ||
		s.Leases[0].LastCommand != "Navigate" || s.Leases[0].Commands != 1 || s.Leases[0].State != "ACTIVE" || s.Leases[1].SessionKey != "shop-1" {
		t.Errorf("state leases = %+v, want alice's (job=crawl, last command Navigate) then shop-1's", s.Leases)
	}
	if len(s.Queue) != 1 || s.Queue[0].Position != 1 || s.Capacity.Waiting != 1 || s.Capacity.Active != 2 || s.Capacity.Capacity != 2 {
		t.Errorf("state queue %+v, capacity %+v; want one waiter, 2 of 2 active", s.Queue, s.Capacity)
	}
	if len(s.Browsers) != 1 || s.Browsers[0].PID != 4242 || s.Browsers[0].PSSBytes != 300<<20 || s.Capacity.WarmContexts != 2 {
		t.Errorf("state browsers %+v, warm %d; want the fake pool's", s.Browsers, s.Capacity.WarmContexts)
	}
	if s.Totals["browser_launches"] != 4 || s.Totals["browser_crashes"] != 1 || s.Totals["page_crashes"] != 2 || s.Totals["driver_crashes"] != 0 {
		t.Errorf("state totals %v, want the fake pool's launches and crashes", s.Totals)
	}
	if !s.Invariant.OK || !strings.HasPrefix(s.Invariant.Text, "Holding") {
		t.Errorf("state invariant = %+v, want holding", s.Invariant)
	}
	if len(s.Reclaims.Minutes) != 60 || len(s.Reclaims.Reasons) != len(lease.Reasons()) {
		t.Errorf("state reclaims: %d minutes, reasons %v; want 60 and every reason", len(s.Reclaims.Minutes), s.Reclaims.Reasons)
	}

	// A reclaim shows in the chart, through the manager's own counters.
	a.Reclaim(lease.Released, "")
	if err := <-waiterGranted; err != nil {
		t.Fatalf("the waiter's Acquire = %v, want granted after the release", err)
	}
	resp = d.do(t, "GET", "/dashboard/api/state", nil, nil)
	s = State{}
	json.NewDecoder(resp.Body).Decode(&s)
	if s.Reclaims.LastHour["RELEASED"] != 1 || len(s.Leases) != 2 {
		t.Errorf("after a release: reclaims last hour %v, %d leases; want RELEASED 1 and 2 leases (the waiter got one)", s.Reclaims.LastHour, len(s.Leases))
	}
}

// fakeFleet is a fleet of two brokers, or one Redis cannot reach.
type fakeFleet struct{ err error }

func (f fakeFleet) ID() string { return "b1" }

func (f fakeFleet) MembersWithin(_ context.Context, maxAge time.Duration) ([]fleet.Member, error) {
	if maxAge <= 0 {
		return nil, errors.New("want members read at most once per interval")
	}
	if f.err != nil {
		return nil, f.err
	}
	return []fleet.Member{
		{ID: "b1", Address: "10.0.0.1:7070", Load: fleet.Load{Capacity: 4, Active: 2, Free: 2}, At: time.Now()},
		{ID: "b2", Address: "10.0.0.2:7070", Load: fleet.Load{Capacity: 8, Active: 8, Waiting: 3, Draining: true}, At: time.Now().Add(-2 * time.Second)},
	}, nil
}

// In a fleet, the state lists its members as they registered (this broker
// marked); while Redis is away, it says so. Outside a fleet there is none.
func TestStateFleet(t *testing.T) {
	state := func(d *testDashboard) State {
		t.Helper()
		var s State
		if err := json.NewDecoder(d.do(t, "GET", "/dashboard/api/state", nil, nil).Body).Decode(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := state(newTestDashboard(t, nil)); s.Fleet != nil {
		t.Errorf("state outside a fleet has fleet %+v, want none", s.Fleet)
	}
	s := state(newTestDashboard(t, func(c *Config) { c.Fleet = fakeFleet{} }))
	if s.Fleet == nil || s.Fleet.BrokerID != "b1" || len(s.Fleet.Members) != 2 || s.Fleet.Error != "" {
		t.Fatalf("state fleet = %+v, want b1's view of b1 and b2", s.Fleet)
	}
	b1, b2 := s.Fleet.Members[0], s.Fleet.Members[1]
	if !b1.Self || b1.Active != 2 || b1.Capacity != 4 || b2.Self || !b2.Draining || b2.Waiting != 3 || b2.Heartbeat < 1.5 || b2.Address != "10.0.0.2:7070" {
		t.Errorf("state fleet members = %+v, want b1 (this broker, 2 of 4) and b2 (draining, 3 waiting, heartbeat 2s ago)", s.Fleet.Members)
	}
	s = state(newTestDashboard(t, func(c *Config) { c.Fleet = fakeFleet{err: errors.New("fleet: Redis unreachable")} }))
	if s.Fleet == nil || len(s.Fleet.Members) != 0 || !strings.Contains(s.Fleet.Error, "Redis unreachable") {
		t.Errorf("state fleet with Redis away = %+v, want no members and the error", s.Fleet)
	}
}

func TestEventsStreamUntilTheClientGoes(t *testing.T) {
	d := newTestDashboard(t, func(c *Config) { c.Interval = 10 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", d.srv.URL+"/dashboard/api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("events Content-Type = %q, want text/event-stream", ct)
	}
	buf := make([]byte, 0, 64<<10)
	events := 0
	for events < 3 {
		chunk := make([]byte, 32<<10)
		n, err := resp.Body.Read(chunk)
		if err != nil {
			t.Fatalf("reading events: %v after %d", err, events)
		}
		buf = append(buf, chunk[:n]...)
		events = strings.Count(string(buf), "\n\n")
	}
	first, _, _ := strings.Cut(string(buf), "\n\n")
	var s State
	if !strings.HasPrefix(first, "data: ") || json.Unmarshal([]byte(strings.TrimPrefix(first, "data: ")), &s) != nil || s.Capacity.Capacity != 2 {
		t.Fatalf("first event %.200q, want data: and the state", first)
	}
	cancel() // the handler ends; goleak checks it at the end
}
