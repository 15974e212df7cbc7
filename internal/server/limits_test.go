package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/lease"
)

// TestLimits checks every limit of the README's "Limits" table through the
// API: past it, the call fails with the documented code and a message that
// names the limit.
func TestLimits(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 2})
	ctx := context.Background()
	h := b.acquire(t, &brokerv1.Acquire{})
	id := h.id
	if _, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: site.URL}); err != nil {
		t.Fatalf("Navigate(site) = %v", err)
	}

	n := strconv.Itoa
	many := func(count int, f func(i int) string) map[string]string {
		m := map[string]string{}
		for i := range count {
			m[f(i)] = "v"
		}
		return m
	}
	acquire := func(a *brokerv1.Acquire) func() error {
		return func() error {
			h, err := b.tryAcquire(t, a)
			if err == nil {
				h.release()
			}
			return err
		}
	}
	evaluate := func(expr, arg string) func() error {
		return func() error {
			_, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id, Expression: expr, ArgJson: arg})
			return err
		}
	}
	cookies := func(cs ...*brokerv1.Cookie) func() error {
		return func() error {
			_, err := b.page.SetCookies(ctx, &brokerv1.SetCookiesRequest{LeaseId: id, Cookies: cs})
			return err
		}
	}
	manyCookies := make([]*brokerv1.Cookie, maxCookies+1)
	for i := range manyCookies {
		manyCookies[i] = &brokerv1.Cookie{Name: "c" + n(i), Url: site.URL}
	}
	long := func(n int) string { return strings.Repeat("x", n) }
	url := func(n int) string { return site.URL + "/?q=" + long(n-len(site.URL)-4) }
	viewport := func(w, h int32, scale float64) *brokerv1.ContextOptions {
		return &brokerv1.ContextOptions{Viewport: &brokerv1.Viewport{Width: w, Height: h}, DeviceScaleFactor: scale}
	}

	cases := []struct {
		name  string
		call  func() error
		code  codes.Code
		limit string // in the message
	}{
		{"whole request", evaluate(long(5<<20), ""), codes.ResourceExhausted, n(4 << 20)},
		{"lease stream message", acquire(&brokerv1.Acquire{SessionKey: long(5 << 20)}), codes.ResourceExhausted, n(4 << 20)},
		{"expression", evaluate(long(maxExpressionBytes+1), ""), codes.InvalidArgument, n(maxExpressionBytes)},
		{"arg_json", evaluate("(a) => 1", `"`+long(maxValueBytes)+`"`), codes.InvalidArgument, n(maxValueBytes)},
		{"evaluate result", evaluate(`"x".repeat(5e6)`, ""), codes.ResourceExhausted, n(maxResponseBytes)},
		{"content", func() error {
			if _, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id,
				Expression: `(document.body.textContent = "x".repeat(4100000), 0)`}); err != nil {
				return fmt.Errorf("making the page big: %w", err)
			}
			_, err := b.page.Content(ctx, &brokerv1.ContentRequest{LeaseId: id})
			return err
		}, codes.ResourceExhausted, n(maxResponseBytes)},
		{"texts", func() error {
			_, err := b.page.Text(ctx, &brokerv1.TextRequest{LeaseId: id, Selector: "body"})
			return err
		}, codes.ResourceExhausted, n(maxResponseBytes)},
		{"full-page screenshot", func() error {
			if _, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id,
				Expression: `(document.body.textContent = "", document.body.style.height = "100000px", 0)`}); err != nil {
				return fmt.Errorf("making the page long: %w", err)
			}
			_, err := b.page.Screenshot(ctx, &brokerv1.ScreenshotRequest{LeaseId: id, FullPage: true})
			return err
		}, codes.ResourceExhausted, n(browser.MaxScreenshotSide)},
		{"label count", acquire(&brokerv1.Acquire{Labels: many(maxLabels+1, func(i int) string { return "k" + n(i) })}), codes.InvalidArgument, n(maxLabels)},
		{"label key", acquire(&brokerv1.Acquire{Labels: map[string]string{long(maxLabelKey + 1): "v"}}), codes.InvalidArgument, n(maxLabelKey)},
		{"label value", acquire(&brokerv1.Acquire{Labels: map[string]string{"k": long(maxLabelValue + 1)}}), codes.InvalidArgument, n(maxLabelValue)},
		{"ttl", acquire(&brokerv1.Acquire{Ttl: durationpb.New(2 * time.Hour)}), codes.InvalidArgument, "1h0m0s"},
		{"negative ttl", acquire(&brokerv1.Acquire{Ttl: durationpb.New(-time.Second)}), codes.InvalidArgument, "negative"},
		{"wait_timeout", acquire(&brokerv1.Acquire{WaitTimeout: durationpb.New(11 * time.Minute)}), codes.InvalidArgument, "10m0s"},
		{"negative max_lifetime", acquire(&brokerv1.Acquire{MaxLifetime: durationpb.New(-time.Second)}), codes.InvalidArgument, "negative"},
		{"malformed duration", acquire(&brokerv1.Acquire{Ttl: &durationpb.Duration{Seconds: 1, Nanos: -1}}), codes.InvalidArgument, "ttl"},
		{"session_key", acquire(&brokerv1.Acquire{SessionKey: long(lease.MaxSessionKey + 1)}), codes.InvalidArgument, n(lease.MaxSessionKey)},
		{"viewport", acquire(&brokerv1.Acquire{Context: viewport(maxViewportSide+1, 10, 0)}), codes.InvalidArgument, n(maxViewportSide)},
		{"device pixels", acquire(&brokerv1.Acquire{Context: viewport(9000, 10, 2)}), codes.InvalidArgument, n(maxDevicePixels)},
		{"device_scale_factor", acquire(&brokerv1.Acquire{Context: viewport(10, 10, maxScaleFactor+1)}), codes.InvalidArgument, n(maxScaleFactor)},
		{"header count", acquire(&brokerv1.Acquire{Context: &brokerv1.ContextOptions{
			ExtraHttpHeaders: many(maxHeaders+1, func(i int) string { return "X-H" + n(i) })}}), codes.InvalidArgument, n(maxHeaders)},
		{"header bytes", acquire(&brokerv1.Acquire{Context: &brokerv1.ContextOptions{
			ExtraHttpHeaders: map[string]string{"X-Big": long(maxHeaderBytes)}}}), codes.InvalidArgument, n(maxHeaderBytes)},
		{"header name", acquire(&brokerv1.Acquire{Context: &brokerv1.ContextOptions{
			ExtraHttpHeaders: map[string]string{"Bad Name": "v"}}}), codes.InvalidArgument, "header name"},
		{"header value", acquire(&brokerv1.Acquire{Context: &brokerv1.ContextOptions{
			ExtraHttpHeaders: map[string]string{"X-Split": "a\r\nX-Injected: b"}}}), codes.InvalidArgument, "control character"},
		{"user_agent", acquire(&brokerv1.Acquire{Context: &brokerv1.ContextOptions{UserAgent: long(maxUserAgentBytes + 1)}}), codes.InvalidArgument, n(maxUserAgentBytes)},
		{"timezone_id", acquire(&brokerv1.Acquire{Context: &brokerv1.ContextOptions{TimezoneId: long(maxLocaleBytes + 1)}}), codes.InvalidArgument, n(maxLocaleBytes)},
		{"proxy password", acquire(&brokerv1.Acquire{Context: &brokerv1.ContextOptions{
			Proxy: &brokerv1.Proxy{Server: "http://proxy:3128", Password: long(maxProxyField + 1)}}}), codes.InvalidArgument, n(maxProxyField)},
		{"url", func() error {
			_, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: url(maxURLBytes + 1)})
			return err
		}, codes.InvalidArgument, n(maxURLBytes)},
		{"referer", func() error {
			_, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: site.URL, Referer: url(maxURLBytes + 1)})
			return err
		}, codes.InvalidArgument, n(maxURLBytes)},
		{"selector", func() error {
			_, err := b.page.Click(ctx, &brokerv1.ClickRequest{LeaseId: id, Selector: long(maxSelectorBytes + 1)})
			return err
		}, codes.InvalidArgument, n(maxSelectorBytes)},
		{"fill value", func() error {
			_, err := b.page.Fill(ctx, &brokerv1.FillRequest{LeaseId: id, Selector: "#q", Value: long(maxValueBytes + 1)})
			return err
		}, codes.InvalidArgument, n(maxValueBytes)},
		{"key", func() error {
			_, err := b.page.Press(ctx, &brokerv1.PressRequest{LeaseId: id, Selector: "#q", Key: long(65)})
			return err
		}, codes.InvalidArgument, "64"},
		{"cookie count", cookies(manyCookies...), codes.InvalidArgument, n(maxCookies)},
		{"cookie size", cookies(&brokerv1.Cookie{Name: "big", Value: long(maxCookieBytes), Url: site.URL}), codes.InvalidArgument, n(maxCookieBytes)},
		{"cookie domain", cookies(&brokerv1.Cookie{Name: "c", Domain: long(maxCookieAttr + 1)}), codes.InvalidArgument, n(maxCookieAttr)},
		{"cookie urls", func() error {
			urls := make([]string, maxCookieURLs+1)
			for i := range urls {
				urls[i] = site.URL
			}
			_, err := b.page.GetCookies(ctx, &brokerv1.GetCookiesRequest{LeaseId: id, Urls: urls})
			return err
		}, codes.InvalidArgument, n(maxCookieURLs)},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			wantCode(t, c.name+" past its limit", c.call(), c.code, c.limit)
		})
	}

	// Within the limits all is well: the lease is unharmed, a modest
	// full-page screenshot works, and a max_lifetime past the maximum is
	// capped, not refused.
	if _, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id,
		Expression: `(document.body.style.height = "3000px", 0)`}); err != nil {
		t.Fatalf("Evaluate after the limits = %v", err)
	}
	if _, err := b.page.Screenshot(ctx, &brokerv1.ScreenshotRequest{LeaseId: id, FullPage: true}); err != nil {
		t.Fatalf("full-page Screenshot of a 3000px page = %v, want an image", err)
	}
	capped, g := b.acquireGranted(t, &brokerv1.Acquire{MaxLifetime: durationpb.New(100 * time.Hour)})
	if life := g.GetMaxExpiresAt().AsTime().Sub(time.Now()); life > time.Hour {
		t.Errorf("max_lifetime 100h: lease lives %v, want it capped at the 1h maximum", life)
	}
	capped.release()
	h.release()
}
