package server

import (
	"context"
	"encoding/json"
	"math"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/lease"
)

// The fuzz targets check the edge's validation on its own: leases come
// from a lease manager over stubBackend, whose pages record what reached
// them and return at once. Seeds are in testdata/fuzz.

// stubBackend opens stubPages.
type stubBackend struct {
	mu   sync.Mutex
	live int
}

func (b *stubBackend) Open(ctx context.Context, spec any) (lease.Session, error) {
	switch spec.(type) {
	case browser.ContextOptions, sessionSpec:
	default:
		return nil, status.Errorf(codes.Internal, "stub: spec %T", spec)
	}
	b.mu.Lock()
	b.live++
	b.mu.Unlock()
	return &stubPage{b: b, lost: make(chan struct{})}, nil
}

func (b *stubBackend) Live() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.live
}

// stubPage is a lease session whose page commands record their arguments
// in last and succeed. Page commands of a lease run one at a time, in the
// caller's goroutine, so last needs no lock.
type stubPage struct {
	Page // nil: a command the stub lacks panics, and the fuzz reports it
	b    *stubBackend
	lost chan struct{}
	last *stubCall
}

// stubCall is a page command as it reached the page.
type stubCall struct {
	method                      string
	url, referer, waitUntil     string
	selector, value, key, state string
	expression, argJSON         string
	shot                        browser.ScreenshotOptions
	urls                        []string
	cookies                     []browser.Cookie
}

func (p *stubPage) Close(context.Context) error {
	p.b.mu.Lock()
	p.b.live--
	p.b.mu.Unlock()
	return nil
}

func (p *stubPage) Lost() <-chan struct{}              { return p.lost }
func (p *stubPage) LostReason() (lease.Reason, string) { return lease.BrowserCrashed, "stub" }

func (p *stubPage) Navigate(_ context.Context, url string, o browser.NavigateOptions) (browser.NavigateResult, error) {
	p.last = &stubCall{method: "Navigate", url: url, referer: o.Referer, waitUntil: o.WaitUntil}
	return browser.NavigateResult{Status: 200, URL: url}, nil
}

func (p *stubPage) Click(_ context.Context, selector string) error {
	p.last = &stubCall{method: "Click", selector: selector}
	return nil
}

func (p *stubPage) Fill(_ context.Context, selector, value string) error {
	p.last = &stubCall{method: "Fill", selector: selector, value: value}
	return nil
}

func (p *stubPage) Press(_ context.Context, selector, key string) error {
	p.last = &stubCall{method: "Press", selector: selector, key: key}
	return nil
}

func (p *stubPage) WaitForSelector(_ context.Context, selector, state string) (bool, error) {
	p.last = &stubCall{method: "WaitForSelector", selector: selector, state: state}
	return true, nil
}

func (p *stubPage) Evaluate(_ context.Context, expression, argJSON string) (string, error) {
	p.last = &stubCall{method: "Evaluate", expression: expression, argJSON: argJSON}
	return "null", nil
}

func (p *stubPage) Content(context.Context) (string, error) {
	p.last = &stubCall{method: "Content"}
	return "<html></html>", nil
}

func (p *stubPage) Text(_ context.Context, selector string) ([]string, error) {
	p.last = &stubCall{method: "Text", selector: selector}
	return []string{}, nil
}

func (p *stubPage) Screenshot(_ context.Context, o browser.ScreenshotOptions) ([]byte, error) {
	p.last = &stubCall{method: "Screenshot", shot: o}
	return []byte("\x89PNG"), nil
}

func (p *stubPage) Cookies(_ context.Context, urls ...string) ([]browser.Cookie, error) {
	p.last = &stubCall{method: "GetCookies", urls: urls}
	return nil, nil
}

func (p *stubPage) SetCookies(_ context.Context, cookies []browser.Cookie) error {
	p.last = &stubCall{method: "SetCookies", cookies: cookies}
	return nil
}

// stubEdge is the edge over a lease manager with stubBackend.
type stubEdge struct {
	leases *lease.Manager
	srv    *Server
	page   *pageService
	held   *lease.Lease // a live lease, for page commands
}

func newStubEdge(tb testing.TB) *stubEdge {
	tb.Helper()
	m := lease.New(&stubBackend{}, lease.Config{Capacity: 4, SessionIdleTTL: -1, CheckInterval: -1})
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			tb.Errorf("closing the lease manager: %v", err)
		}
		if st := m.Stats(); st.InvariantErr != nil || st.Active != 0 {
			tb.Errorf("after close: invariant %v, %d leases active", st.InvariantErr, st.Active)
		}
	})
	srv := New(Config{Leases: m})
	return &stubEdge{leases: m, srv: srv, page: &pageService{s: srv}}
}

// lease returns a live lease, acquiring one if the last one ended.
func (e *stubEdge) lease(t *testing.T) (*lease.Lease, *stubPage) {
	t.Helper()
	if e.held != nil {
		if _, err := e.leases.Renew(e.held.ID()); err == nil {
			return e.held, e.held.Session().(*stubPage)
		}
	}
	l, err := e.leases.Acquire(context.Background(), lease.AcquireRequest{Spec: browser.ContextOptions{}}, nil)
	if err != nil {
		t.Fatalf("Acquire() = %v, want a stub lease", err)
	}
	e.held = l
	return l, l.Session().(*stubPage)
}

// FuzzAcquireRequest feeds the edge's conversion of acquire requests, and
// the lease manager after it, with any bytes that parse as a LeaseRequest
// or an Acquire. Nothing may panic; every refusal is INVALID_ARGUMENT; an
// accepted request is within every documented bound, and its lease too.
func FuzzAcquireRequest(f *testing.F) {
	e := newStubEdge(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		var lr brokerv1.LeaseRequest
		if proto.Unmarshal(msg, &lr) != nil {
			return
		}
		a := lr.GetAcquire()
		if a == nil {
			a = &brokerv1.Acquire{}
			if proto.Unmarshal(msg, a) != nil {
				return
			}
		}
		req, err := acquireRequest(a)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("acquireRequest(%v) = %v, want INVALID_ARGUMENT or success", a, err)
			}
			return
		}
		checkAcquireBounds(t, a, req)
		l, err := e.leases.Acquire(context.Background(), req, nil)
		if err != nil {
			if code := status.Code(toStatus(e.srv.log, err)); code != codes.InvalidArgument {
				t.Fatalf("Acquire(%+v) = %v (%v), want INVALID_ARGUMENT or a lease", req, err, code)
			}
			return
		}
		defer l.Reclaim(lease.Released, "fuzz")
		if l.TTL() <= 0 || l.TTL() > time.Hour {
			t.Errorf("Acquire(%v): TTL %v, want (0, 1h]", a, l.TTL())
		}
		if life := time.Until(l.MaxDeadline()); life > time.Hour {
			t.Errorf("Acquire(%v): lives %v more, want at most the 1h maximum", a, life)
		}
		if k := l.SessionKey(); len(k) > lease.MaxSessionKey || k != a.GetSessionKey() {
			t.Errorf("Acquire(%v): session key %q, want %q of at most %d bytes", a, k, a.GetSessionKey(), lease.MaxSessionKey)
		}
	})
}

// checkAcquireBounds checks an accepted acquire against the documented
// limits (README, "Limits").
func checkAcquireBounds(t *testing.T, a *brokerv1.Acquire, req lease.AcquireRequest) {
	t.Helper()
	for _, d := range []time.Duration{req.TTL, req.Wait, req.MaxLifetime} {
		if d < 0 {
			t.Fatalf("acquireRequest(%v) accepted a negative duration: %+v", a, req)
		}
	}
	if len(req.Labels) > maxLabels {
		t.Fatalf("acquireRequest accepted %d labels, over %d", len(req.Labels), maxLabels)
	}
	for k, v := range req.Labels {
		if k == "" || len(k) > maxLabelKey || len(v) > maxLabelValue {
			t.Fatalf("acquireRequest accepted label %q=%q (%d, %d bytes)", k, v, len(k), len(v))
		}
	}
	c := a.GetContext()
	if c == nil {
		return
	}
	f := c.GetDeviceScaleFactor()
	if !(f >= 0 && f <= maxScaleFactor) {
		t.Fatalf("acquireRequest accepted device_scale_factor %v", f)
	}
	if v := c.GetViewport(); v != nil {
		side := max(v.Width, v.Height)
		if v.Width < 1 || v.Height < 1 || side > maxViewportSide || float64(side)*max(f, 1) > maxDevicePixels {
			t.Fatalf("acquireRequest accepted viewport %dx%d at scale %v", v.Width, v.Height, f)
		}
	}
	if len(c.GetUserAgent()) > maxUserAgentBytes || len(c.GetLocale()) > maxLocaleBytes || len(c.GetTimezoneId()) > maxLocaleBytes {
		t.Fatalf("acquireRequest accepted user agent, locale, time zone of %d, %d, %d bytes",
			len(c.GetUserAgent()), len(c.GetLocale()), len(c.GetTimezoneId()))
	}
	h := c.GetExtraHttpHeaders()
	size := 0
	for k, v := range h {
		if !validHeaderName(k) || !validHeaderValue(v) || strings.ContainsAny(k+v, "\r\n\x00") {
			t.Fatalf("acquireRequest accepted header %q: %q", k, v)
		}
		size += len(k) + len(v)
	}
	if len(h) > maxHeaders || size > maxHeaderBytes {
		t.Fatalf("acquireRequest accepted %d headers of %d bytes", len(h), size)
	}
	if p := c.GetProxy(); p != nil {
		u, err := url.Parse(p.GetServer())
		if err != nil || u.Host == "" || len(p.GetServer()) > maxURLBytes || len(p.GetUsername()) > maxProxyField ||
			len(p.GetPassword()) > maxProxyField || len(p.GetBypass()) > maxURLBytes {
			t.Fatalf("acquireRequest accepted proxy %v", p)
		}
	}
}

// The page commands FuzzPageRequests calls, by its method argument.
var pageMethods = []struct {
	name string
	req  func() proto.Message
	call func(ctx context.Context, ps *pageService, m proto.Message) error
}{
	{"Navigate", func() proto.Message { return &brokerv1.NavigateRequest{} }, func(ctx context.Context, ps *pageService, m proto.Message) error {
		_, err := ps.Navigate(ctx, m.(*brokerv1.NavigateRequest))
		return err
	}},
	{"Click", func() proto.Message { return &brokerv1.ClickRequest{} }, func(ctx context.Context, ps *pageService, m proto.Message) error {
		_, err := ps.Click(ctx, m.(*brokerv1.ClickRequest))
		return err
	}},
	{"Fill", func() proto.Message { return &brokerv1.FillRequest{} }, func(ctx context.Context, ps *pageService, m proto.Message) error {
		_, err := ps.Fill(ctx, m.(*brokerv1.FillRequest))
		return err
	}},
	{"Press", func() proto.Message { return &brokerv1.PressRequest{} }, func(ctx context.Context, ps *pageService, m proto.Message) error {
		_, err := ps.Press(ctx, m.(*brokerv1.PressRequest))
		return err
	}},
	{"WaitForSelector", func() proto.Message { return &brokerv1.WaitForSelectorRequest{} }, func(ctx context.Context, ps *pageService, m proto.Message) error {
		_, err := ps.WaitForSelector(ctx, m.(*brokerv1.WaitForSelectorRequest))
		return err
	}},
	{"Evaluate", func() proto.Message { return &brokerv1.EvaluateRequest{} }, func(ctx context.Context, ps *pageService, m proto.Message) error {
		_, err := ps.Evaluate(ctx, m.(*brokerv1.EvaluateRequest))
		return err
	}},
	{"Content", func() proto.Message { return &brokerv1.ContentRequest{} }, func(ctx context.Context, ps *pageService, m proto.Message) error {
		_, err := ps.Content(ctx, m.(*brokerv1.ContentRequest))
		return err
	}},
	{"Text", func() proto.Message { return &brokerv1.TextRequest{} }, func(ctx context.Context, ps *pageService, m proto.Message) error {
		_, err := ps.Text(ctx, m.(*brokerv1.TextRequest))
		return err
	}},
	{"Screenshot", func() proto.Message { return &brokerv1.ScreenshotRequest{} }, func(ctx context.Context, ps *pageService, m proto.Message) error {
		_, err := ps.Screenshot(ctx, m.(*brokerv1.ScreenshotRequest))
		return err
	}},
	{"GetCookies", func() proto.Message { return &brokerv1.GetCookiesRequest{} }, func(ctx context.Context, ps *pageService, m proto.Message) error {
		_, err := ps.GetCookies(ctx, m.(*brokerv1.GetCookiesRequest))
		return err
	}},
	{"SetCookies", func() proto.Message { return &brokerv1.SetCookiesRequest{} }, func(ctx context.Context, ps *pageService, m proto.Message) error {
		_, err := ps.SetCookies(ctx, m.(*brokerv1.SetCookiesRequest))
		return err
	}},
}

// FuzzPageRequests feeds the page commands' validation with any bytes that
// parse as the request of the command method picks, on a live lease when
// ownLease is set (else on the lease id the bytes name). Nothing may panic;
// a refused request is INVALID_ARGUMENT (or NOT_FOUND for a lease that is
// not there) and never reaches the page; what reaches the page is within
// every documented bound.
func FuzzPageRequests(f *testing.F) {
	e := newStubEdge(f)
	f.Fuzz(func(t *testing.T, method byte, ownLease bool, msg []byte) {
		pm := pageMethods[int(method)%len(pageMethods)]
		req := pm.req()
		if proto.Unmarshal(msg, req) != nil {
			return
		}
		l, page := e.lease(t)
		fields := req.ProtoReflect().Descriptor().Fields()
		if ownLease {
			req.ProtoReflect().Set(fields.ByName("lease_id"), protoreflect.ValueOfString(l.ID()))
		}
		var timeout *durationpb.Duration // the request's, if it has one
		if fd := fields.ByName("timeout"); fd != nil && req.ProtoReflect().Has(fd) {
			timeout = req.ProtoReflect().Get(fd).Message().Interface().(*durationpb.Duration)
		}
		page.last = nil
		err := pm.call(context.Background(), e.page, req)
		called := page.last
		if err != nil {
			code := status.Code(err)
			if code == codes.DeadlineExceeded && timeout.IsValid() && timeout.AsDuration() < time.Second {
				return // a time limit of nanoseconds may pass before the command's turn
			}
			if code != codes.InvalidArgument && (code != codes.NotFound || ownLease) {
				t.Fatalf("%s(%v) = %v, want INVALID_ARGUMENT, NOT_FOUND for another lease, or success", pm.name, req, err)
			}
			if called != nil {
				t.Fatalf("%s(%v) = %v, but the page got the command: %+v", pm.name, req, err, called)
			}
			return
		}
		if !ownLease {
			return // the fuzzed id named the live lease: fine either way
		}
		if called == nil || called.method != pm.name {
			t.Fatalf("%s(%v) = ok, but the page got %+v", pm.name, req, called)
		}
		if timeout != nil && (!timeout.IsValid() || timeout.AsDuration() < 0) {
			t.Fatalf("%s(%v) = ok with the timeout %v", pm.name, req, timeout)
		}
		if why := outOfBounds(called); why != "" {
			t.Fatalf("%s(%v) = ok, but %s", pm.name, req, why)
		}
	})
}

// outOfBounds says which documented limit (README, "Limits") a command
// that reached the page breaks, if any.
func outOfBounds(c *stubCall) string {
	switch c.method {
	case "Navigate":
		if !goodURL(c.url) {
			return "the url " + trim(c.url) + " is not an absolute http(s) URL within the limit"
		}
		if c.referer != "" && !goodURL(c.referer) {
			return "the referer " + trim(c.referer) + " is not an absolute http(s) URL within the limit"
		}
		switch c.waitUntil {
		case "load", "domcontentloaded", "networkidle", "commit":
		default:
			return "wait_until " + c.waitUntil
		}
	case "Click", "Fill", "Press", "WaitForSelector", "Text":
		if strings.TrimSpace(c.selector) == "" || len(c.selector) > maxSelectorBytes {
			return "the selector " + trim(c.selector) + " is blank or too long"
		}
		if len(c.value) > maxValueBytes {
			return "the value is too long"
		}
		if c.method == "Press" && (c.key == "" || len(c.key) > 64) {
			return "the key " + trim(c.key) + " is empty or too long"
		}
		if c.method == "WaitForSelector" {
			switch c.state {
			case "attached", "detached", "visible", "hidden":
			default:
				return "the state " + c.state
			}
		}
	case "Evaluate":
		if c.expression == "" || len(c.expression) > maxExpressionBytes {
			return "the expression is empty or too long"
		}
		if c.argJSON != "" && (len(c.argJSON) > maxValueBytes || !json.Valid([]byte(c.argJSON))) {
			return "arg_json " + trim(c.argJSON) + " is not JSON within the limit"
		}
	case "Screenshot":
		o := c.shot
		if (o.Format != "png" && o.Format != "jpeg") || o.Quality < 0 || o.Quality > 100 || (o.Format == "png" && o.Quality != 0) {
			return "screenshot options " + trim(o.Format)
		}
	case "GetCookies":
		if len(c.urls) > maxCookieURLs {
			return "too many urls"
		}
		for _, u := range c.urls {
			if !goodURL(u) {
				return "the url " + trim(u) + " is not an absolute http(s) URL within the limit"
			}
		}
	case "SetCookies":
		if len(c.cookies) == 0 || len(c.cookies) > maxCookies {
			return "no or too many cookies"
		}
		for _, ck := range c.cookies {
			switch {
			case ck.Name == "", len(ck.Name)+len(ck.Value) > maxCookieBytes, len(ck.Domain) > maxCookieAttr, len(ck.Path) > maxCookieAttr:
				return "cookie " + trim(ck.Name) + " has no name or is too large"
			case (ck.URL == "") == (ck.Domain == ""), ck.URL != "" && (!goodURL(ck.URL) || ck.Path != ""):
				return "cookie " + trim(ck.Name) + " names no single place: url " + trim(ck.URL) + ", domain " + trim(ck.Domain)
			case ck.Path != "" && !strings.HasPrefix(ck.Path, "/"):
				return "cookie " + trim(ck.Name) + " has the path " + trim(ck.Path)
			case math.IsNaN(ck.Expires) || math.IsInf(ck.Expires, 0):
				return "cookie " + trim(ck.Name) + " expires at no time"
			}
			switch ck.SameSite {
			case "", "Strict", "Lax", "None":
			default:
				return "cookie " + trim(ck.Name) + " has same_site " + trim(ck.SameSite)
			}
		}
	}
	return ""
}

func goodURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && len(raw) <= maxURLBytes && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// trim quotes s for a failure message, shortened.
func trim(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return `"` + s + `"`
}
