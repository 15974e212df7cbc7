package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/browserbroker/broker/client"
	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/lease"
)

// guard bounds waits for something that should happen promptly, so a broken
// client fails the test instead of hanging it.
const guard = 10 * time.Second

const (
	released     = brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED
	revoked      = brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED
	ttlExpired   = brokerv1.ReclaimReason_RECLAIM_REASON_TTL_EXPIRED
	streamClosed = brokerv1.ReclaimReason_RECLAIM_REASON_STREAM_CLOSED
)

func dial(tb testing.TB, addr string, opts ...client.Option) *client.Client {
	tb.Helper()
	c, err := client.Dial(addr, opts...)
	if err != nil {
		tb.Fatalf("Dial(%q) = %v", addr, err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("Close() = %v", err)
		}
	})
	return c
}

func acquire(tb testing.TB, c *client.Client, o client.AcquireOptions) *client.Lease {
	tb.Helper()
	l, err := c.Acquire(tb.Context(), o)
	if err != nil {
		tb.Fatalf("Acquire(ttl=%v) = %v, want granted", o.TTL, err)
	}
	return l
}

// awaitDone waits for the lease to end.
func awaitDone(tb testing.TB, l *client.Lease) {
	tb.Helper()
	select {
	case <-l.Done():
	case <-time.After(guard):
		tb.Fatalf("lease %s: Done not closed within %v", l.ID(), guard)
	}
}

// eventually polls cond until it holds or the guard passes.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v", what, guard)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func stats(tb testing.TB, c *client.Client) *brokerv1.GetStatsResponse {
	tb.Helper()
	st, err := c.Stats(tb.Context())
	if err != nil {
		tb.Fatalf("Stats() = %v", err)
	}
	return st
}

func reclaimed(st *brokerv1.GetStatsResponse, r brokerv1.ReclaimReason) uint64 {
	for _, rc := range st.GetReclaimed() {
		if rc.GetReason() == r {
			return rc.GetCount()
		}
	}
	return 0
}

func TestLeaseFlow(t *testing.T) {
	b := startBroker(t, lease.Config{})
	c := dial(t, b.addr)
	ctx := t.Context()

	labels := map[string]string{"test": "flow"}
	before := time.Now()
	l := acquire(t, c, client.AcquireOptions{
		TTL:    time.Minute,
		Labels: labels,
		Context: &brokerv1.ContextOptions{
			Viewport:  &brokerv1.Viewport{Width: 800, Height: 600},
			UserAgent: "FlowAgent/1",
		},
	})
	if l.ID() == "" || l.TTL() != time.Minute {
		t.Errorf("granted lease ID %q, TTL %v; want an ID and 1m", l.ID(), l.TTL())
	}
	if exp := l.ExpiresAt(); exp.Before(before.Add(time.Minute)) || exp.After(time.Now().Add(2*time.Minute)) {
		t.Errorf("ExpiresAt() = %v, want about a minute from now", exp)
	}
	if !l.MaxExpiresAt().After(l.ExpiresAt()) {
		t.Errorf("MaxExpiresAt() = %v, want after ExpiresAt() %v", l.MaxExpiresAt(), l.ExpiresAt())
	}
	if l.Err() != nil {
		t.Errorf("Err() of a held lease = %v, want nil", l.Err())
	}

	nav, err := l.Navigate(ctx, siteURL)
	if err != nil || nav.GetStatus() != 200 || nav.GetTitle() != "Test Site" || nav.GetUrl() != siteURL {
		t.Fatalf("Navigate(%s) = %v, %v; want status 200, title Test Site", siteURL, nav, err)
	}
	if err := l.Fill(ctx, "#q", "gopher"); err != nil {
		t.Fatalf("Fill(#q) = %v", err)
	}
	if err := l.Press(ctx, "#q", "End"); err != nil {
		t.Fatalf("Press(#q, End) = %v", err)
	}
	if err := l.Click(ctx, "#go"); err != nil {
		t.Fatalf("Click(#go) = %v", err)
	}
	if found, err := l.WaitForSelector(ctx, "#out"); !found || err != nil {
		t.Errorf("WaitForSelector(#out) = %t, %v; want found", found, err)
	}
	if found, err := l.WaitForSelector(ctx, "#none", client.WithState(brokerv1.ElementState_ELEMENT_STATE_DETACHED)); found || err != nil {
		t.Errorf("WaitForSelector(#none, DETACHED) = %t, %v; want not found", found, err)
	}
	if texts, err := l.Text(ctx, "#out"); err != nil || !slices.Equal(texts, []string{"clicked gopher"}) {
		t.Errorf("Text(#out) = %q, %v; want [clicked gopher]", texts, err)
	}
	if texts, err := l.Text(ctx, "li.item"); err != nil || !slices.Equal(texts, []string{"item 1", "item 2", "item 3"}) {
		t.Errorf("Text(li.item) = %q, %v; want three items", texts, err)
	}
	if texts, err := l.Text(ctx, "table"); err != nil || len(texts) != 0 {
		t.Errorf("Text(table) = %q, %v; want none", texts, err)
	}
	if raw, err := l.Evaluate(ctx, "(n) => n + 1", 41); err != nil || string(raw) != "42" {
		t.Errorf("Evaluate((n) => n + 1, 41) = %s, %v; want 42", raw, err)
	}
	if raw, err := l.Evaluate(ctx, "undefined", nil); err != nil || string(raw) != "null" {
		t.Errorf("Evaluate(undefined) = %s, %v; want null", raw, err)
	}
	if size, err := client.EvaluateAs[[2]int](ctx, l, "[innerWidth, innerHeight]", nil); err != nil || size != [2]int{800, 600} {
		t.Errorf("EvaluateAs[[2]int]([innerWidth, innerHeight]) = %v, %v; want the 800x600 viewport", size, err)
	}
	if html, err := l.Content(ctx); err != nil || !strings.Contains(html, "<h1>Hello</h1>") {
		t.Errorf("Content() = %.80q…, %v; want the page with its h1", html, err)
	}
	if png, err := l.Screenshot(ctx, client.ScreenshotOptions{}); err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("Screenshot() = %d bytes starting %q, %v; want a PNG", len(png), png[:min(8, len(png))], err)
	}
	jpeg, err := l.Screenshot(ctx, client.ScreenshotOptions{FullPage: true, Format: brokerv1.ImageFormat_IMAGE_FORMAT_JPEG, Quality: 50})
	if err != nil || !bytes.HasPrefix(jpeg, []byte{0xff, 0xd8}) {
		t.Errorf("Screenshot(JPEG) = %d bytes, %v; want a JPEG", len(jpeg), err)
	}

	// Context options and navigate options reach the site.
	if _, err := l.Navigate(ctx, siteURL+"headers", client.WithReferer(siteURL),
		client.WithWaitUntil(brokerv1.WaitUntil_WAIT_UNTIL_DOM_CONTENT_LOADED), client.WithCommandTimeout(10*time.Second)); err != nil {
		t.Fatalf("Navigate(headers) = %v", err)
	}
	if ua, err := l.Text(ctx, "#ua"); err != nil || !slices.Equal(ua, []string{"FlowAgent/1"}) {
		t.Errorf("site saw User-Agent %q, %v; want FlowAgent/1", ua, err)
	}
	if ref, err := l.Text(ctx, "#referer"); err != nil || !slices.Equal(ref, []string{siteURL}) {
		t.Errorf("site saw Referer %q, %v; want %s", ref, err, siteURL)
	}

	// Cookies, set by the site and by us.
	if _, err := l.Navigate(ctx, siteURL+"cookie"); err != nil {
		t.Fatalf("Navigate(cookie) = %v", err)
	}
	if err := l.SetCookies(ctx, &brokerv1.Cookie{Name: "mine", Value: "1", Url: siteURL}); err != nil {
		t.Fatalf("SetCookies(mine=1) = %v", err)
	}
	cookies, err := l.Cookies(ctx, siteURL)
	var names []string
	for _, ck := range cookies {
		names = append(names, ck.GetName()+"="+ck.GetValue())
	}
	slices.Sort(names)
	if err != nil || !slices.Equal(names, []string{"mine=1", "session=abc"}) {
		t.Errorf("Cookies(%s) = %q, %v; want mine=1 and session=abc", siteURL, names, err)
	}

	// Errors are the broker's statuses.
	pageErrors := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"script throws", func() error { _, err := l.Evaluate(ctx, "() => { throw new Error('boom') }", nil); return err }, codes.InvalidArgument},
		{"bad URL", func() error { _, err := l.Navigate(ctx, "ftp://example.com/"); return err }, codes.InvalidArgument},
		{"time limit", func() error {
			_, err := l.WaitForSelector(ctx, "#never", client.WithCommandTimeout(200*time.Millisecond))
			return err
		}, codes.DeadlineExceeded},
		{"context deadline", func() error {
			ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			return l.Click(ctx, "#never")
		}, codes.DeadlineExceeded},
	}
	for _, pe := range pageErrors {
		if err := pe.call(); status.Code(err) != pe.want {
			t.Errorf("%s: error %v (code %v), want code %v", pe.name, err, status.Code(err), pe.want)
		}
	}

	// The admin API sees the lease.
	infos, err := c.Leases(ctx, labels)
	if err != nil || len(infos) != 1 || infos[0].GetLeaseId() != l.ID() {
		t.Errorf("Leases(%v) = %v, %v; want our lease only", labels, infos, err)
	}
	if infos, err := c.Leases(ctx, map[string]string{"test": "other"}); err != nil || len(infos) != 0 {
		t.Errorf("Leases(test=other) = %v, %v; want none", infos, err)
	}
	info, err := c.LeaseInfo(ctx, l.ID())
	if err != nil || info.GetState() != brokerv1.LeaseState_LEASE_STATE_ACTIVE || info.GetCommands() == 0 || info.GetLabels()["test"] != "flow" {
		t.Errorf("LeaseInfo(%s) = %v, %v; want ACTIVE with commands and our label", l.ID(), info, err)
	}
	if _, err := c.LeaseInfo(ctx, "l_nope"); status.Code(err) != codes.NotFound {
		t.Errorf("LeaseInfo(l_nope) error = %v, want NOT_FOUND", err)
	}
	if st := stats(t, c); st.GetActive() != 1 || !st.GetInvariantOk() {
		t.Errorf("Stats() while held = active %d, invariant_ok %t; want 1, true", st.GetActive(), st.GetInvariantOk())
	}

	reason, err := l.Release(ctx)
	if reason != released || err != nil {
		t.Fatalf("Release() = %v, %v; want RELEASED", reason, err)
	}
	select {
	case <-l.Done():
	default:
		t.Error("Done() not closed after Release returned")
	}
	if r, msg := l.Reason(); r != released || msg == "" {
		t.Errorf("Reason() after release = %v, %q; want RELEASED with a message", r, msg)
	}
	var re *client.RevokedError
	if !errors.As(l.Err(), &re) || re.Reason != released || re.LeaseID != l.ID() {
		t.Errorf("Err() after release = %v, want a *RevokedError RELEASED for %s", l.Err(), l.ID())
	}
	st := stats(t, c)
	if st.GetActive() != 0 || reclaimed(st, released) != 1 || !st.GetInvariantOk() {
		t.Errorf("Stats() after release = %v; want nothing active and one RELEASED", st)
	}
}

func TestAutoRenewKeepsLeaseAlive(t *testing.T) {
	b := startBroker(t, lease.Config{})
	c := dial(t, b.addr)
	const ttl = 600 * time.Millisecond
	l := acquire(t, c, client.AcquireOptions{TTL: ttl})
	granted := l.ExpiresAt()

	// No page command, nothing but the lease's own renews, for more than
	// three TTLs.
	select {
	case <-l.Done():
		r, msg := l.Reason()
		t.Fatalf("lease with TTL %v ended after less than 2s: %v %q (err %v), want it renewed", ttl, r, msg, l.Err())
	case <-time.After(2 * time.Second):
	}
	info, err := c.LeaseInfo(t.Context(), l.ID())
	if err != nil || info.GetState() != brokerv1.LeaseState_LEASE_STATE_ACTIVE {
		t.Errorf("LeaseInfo after 2s = %v, %v; want ACTIVE", info, err)
	}
	if !l.ExpiresAt().After(granted.Add(time.Second)) {
		t.Errorf("ExpiresAt() after 2s = %v, granted %v; want moved on by the renews", l.ExpiresAt(), granted)
	}
	if reason, err := l.Release(t.Context()); reason != released || err != nil {
		t.Errorf("Release() = %v, %v; want RELEASED", reason, err)
	}
}

func TestNoRenewExpires(t *testing.T) {
	b := startBroker(t, lease.Config{})
	c := dial(t, b.addr)
	l := acquire(t, c, client.AcquireOptions{TTL: 300 * time.Millisecond, RenewInterval: -1})
	awaitDone(t, l)
	if r, _ := l.Reason(); r != ttlExpired {
		t.Errorf("Reason() of an idle lease without renew = %v (err %v), want TTL_EXPIRED", r, l.Err())
	}
	if _, err := l.Text(t.Context(), "h1"); !strings.Contains(err.Error(), "TTL_EXPIRED") {
		t.Errorf("Text() after expiry = %v, want an error naming TTL_EXPIRED", err)
	}
	if reason, err := l.Release(t.Context()); reason != ttlExpired || err != nil {
		t.Errorf("Release() after expiry = %v, %v; want TTL_EXPIRED, nil", reason, err)
	}
}

func TestRevokedLease(t *testing.T) {
	b := startBroker(t, lease.Config{})
	var calls atomic.Int64
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		calls.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	c := dial(t, b.addr, client.WithDialOptions(grpc.WithChainUnaryInterceptor(count)))
	ctx := t.Context()
	l := acquire(t, c, client.AcquireOptions{TTL: time.Minute})
	if _, err := l.Navigate(ctx, siteURL); err != nil {
		t.Fatalf("Navigate = %v", err)
	}

	if reason, err := c.Revoke(ctx, l.ID(), "maintenance"); reason != revoked || err != nil {
		t.Fatalf("Revoke(%s) = %v, %v; want REVOKED", l.ID(), reason, err)
	}
	awaitDone(t, l)
	if r, msg := l.Reason(); r != revoked || msg != "maintenance" {
		t.Errorf("Reason() = %v, %q; want REVOKED, maintenance", r, msg)
	}

	before := calls.Load()
	_, err := l.Text(ctx, "h1")
	var re *client.RevokedError
	if !errors.As(err, &re) || re.Reason != revoked || !strings.Contains(err.Error(), "REVOKED") {
		t.Errorf("Text() after revoke = %v, want a *RevokedError naming REVOKED", err)
	}
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("status.Code(Text() after revoke) = %v, want FailedPrecondition", status.Code(err))
	}
	if n := calls.Load() - before; n != 0 {
		t.Errorf("Text() after revoke made %d calls, want 0 (fail fast)", n)
	}
	if reason, err := l.Release(ctx); reason != revoked || err != nil {
		t.Errorf("Release() after revoke = %v, %v; want REVOKED, nil", reason, err)
	}
	if _, err := c.Revoke(ctx, l.ID(), ""); status.Code(err) != codes.NotFound && status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Revoke(%s) again = %v, want NOT_FOUND or FAILED_PRECONDITION", l.ID(), err)
	}
}

func TestCommandInFlightWhenLeaseEnds(t *testing.T) {
	b := startBroker(t, lease.Config{})
	c := dial(t, b.addr)
	l := acquire(t, c, client.AcquireOptions{TTL: time.Minute})
	if _, err := l.Navigate(t.Context(), siteURL); err != nil {
		t.Fatalf("Navigate = %v", err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := l.Evaluate(t.Context(), "new Promise(() => {})", nil, client.WithCommandTimeout(time.Minute))
		errc <- err
	}()
	eventually(t, "the script runs", func() bool {
		info, err := c.LeaseInfo(t.Context(), l.ID())
		return err == nil && info.GetCommands() >= 2
	})
	if _, err := c.Revoke(t.Context(), l.ID(), "stop it"); err != nil {
		t.Fatalf("Revoke = %v", err)
	}
	select {
	case err := <-errc:
		// The broker's ABORTED or our own cut, whichever came first; both
		// name the reason.
		if code := status.Code(err); (code != codes.Aborted && code != codes.FailedPrecondition) || !strings.Contains(err.Error(), "REVOKED") {
			t.Errorf("Evaluate in flight during a revoke = %v, want ABORTED or FAILED_PRECONDITION naming REVOKED", err)
		}
	case <-time.After(guard):
		t.Fatal("Evaluate in flight during a revoke did not return")
	}
}

func TestCloseEndsLeases(t *testing.T) {
	b := startBroker(t, lease.Config{})
	admin := dial(t, b.addr)
	c, err := client.Dial(b.addr)
	if err != nil {
		t.Fatal(err)
	}
	l := acquire(t, c, client.AcquireOptions{TTL: time.Minute})
	if _, err := l.Navigate(t.Context(), siteURL); err != nil {
		t.Fatalf("Navigate = %v", err)
	}
	errc := make(chan error, 1)
	go func() {
		// The broker would let this run for a minute; Close must cut it.
		_, err := l.Evaluate(t.Context(), "new Promise(() => {})", nil, client.WithCommandTimeout(time.Minute))
		errc <- err
	}()
	eventually(t, "the script runs", func() bool {
		info, err := admin.LeaseInfo(t.Context(), l.ID())
		return err == nil && info.GetCommands() >= 2
	})

	if err := c.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	select {
	case <-l.Done():
	default:
		t.Error("Done() not closed when Close returned")
	}
	if code := status.Code(l.Err()); code != codes.Canceled {
		t.Errorf("Err() after Close = %v, want CANCELLED", l.Err())
	}
	if r, _ := l.Reason(); r != brokerv1.ReclaimReason_RECLAIM_REASON_UNSPECIFIED {
		t.Errorf("Reason() after Close = %v, want UNSPECIFIED (the broker did not say)", r)
	}
	select {
	case err := <-errc:
		if status.Code(err) != codes.Canceled {
			t.Errorf("Evaluate in flight during Close = %v, want CANCELLED", err)
		}
	case <-time.After(guard):
		t.Fatal("Evaluate in flight during Close did not return")
	}
	if reason, err := l.Release(t.Context()); reason != brokerv1.ReclaimReason_RECLAIM_REASON_UNSPECIFIED || status.Code(err) != codes.Canceled {
		t.Errorf("Release() after Close = %v, %v; want UNSPECIFIED, CANCELLED", reason, err)
	}
	if _, err := c.Acquire(t.Context(), client.AcquireOptions{}); status.Code(err) != codes.Canceled {
		t.Errorf("Acquire() after Close = %v, want CANCELLED", err)
	}
	eventually(t, "the broker reclaims the lease with STREAM_CLOSED", func() bool {
		st := stats(t, admin)
		return st.GetActive() == 0 && reclaimed(st, streamClosed) == 1
	})
	if err := c.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
}

func TestReleaseIdempotent(t *testing.T) {
	b := startBroker(t, lease.Config{})
	c := dial(t, b.addr)
	l := acquire(t, c, client.AcquireOptions{TTL: time.Minute})

	var wg sync.WaitGroup
	reasons := make([]brokerv1.ReclaimReason, 4)
	errs := make([]error, 4)
	for i := range reasons {
		wg.Go(func() { reasons[i], errs[i] = l.Release(t.Context()) })
	}
	wg.Wait()
	for i := range reasons {
		if reasons[i] != released || errs[i] != nil {
			t.Errorf("concurrent Release() #%d = %v, %v; want RELEASED", i, reasons[i], errs[i])
		}
	}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	if reason, err := l.Release(cancelled); reason != released || err != nil {
		t.Errorf("Release() again, with a cancelled context = %v, %v; want RELEASED", reason, err)
	}
	st := stats(t, c)
	if st.GetGrantedTotal() != 1 || reclaimed(st, released) != 1 || st.GetReclaimedTotal() != 1 || st.GetDuplicateTriggers() != 0 {
		t.Errorf("Stats() after repeated releases = granted %d, released %d, reclaimed %d, duplicates %d; want 1, 1, 1, 0",
			st.GetGrantedTotal(), reclaimed(st, released), st.GetReclaimedTotal(), st.GetDuplicateTriggers())
	}
}

func TestAcquireCancelledWhileQueued(t *testing.T) {
	b := startBroker(t, lease.Config{Capacity: 1})
	c := dial(t, b.addr)
	holder := acquire(t, c, client.AcquireOptions{TTL: time.Minute})

	tests := []struct {
		name    string
		timeout time.Duration // zero: cancel once queued
		want    codes.Code
	}{
		{"cancelled", 0, codes.Canceled},
		{"deadline", 300 * time.Millisecond, codes.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			if tt.timeout > 0 {
				ctx, cancel = context.WithTimeout(t.Context(), tt.timeout)
			}
			defer cancel()
			var positions []int
			l, err := c.Acquire(ctx, client.AcquireOptions{
				WaitTimeout: time.Minute,
				OnQueued: func(pos int) {
					positions = append(positions, pos)
					if tt.timeout == 0 {
						cancel()
					}
				},
			})
			if l != nil || status.Code(err) != tt.want {
				t.Fatalf("Acquire(%s while queued) = %v, %v; want code %v", tt.name, l, err, tt.want)
			}
			if !slices.Equal(positions, []int{1}) {
				t.Errorf("OnQueued saw positions %v, want [1]", positions)
			}
			eventually(t, "the queue empties", func() bool { return stats(t, c).GetWaiting() == 0 })
		})
	}

	// The waiters that left are never granted: the capacity goes to the
	// next acquire, and only two leases were ever granted.
	if reason, err := holder.Release(t.Context()); reason != released || err != nil {
		t.Fatalf("Release() = %v, %v; want RELEASED", reason, err)
	}
	next, err := c.Acquire(t.Context(), client.AcquireOptions{WaitTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Acquire() after the release = %v, want granted", err)
	}
	if st := stats(t, c); st.GetGrantedTotal() != 2 || st.GetActive() != 1 || st.GetWaiting() != 0 {
		t.Errorf("Stats() = granted %d, active %d, waiting %d; want 2, 1, 0", st.GetGrantedTotal(), st.GetActive(), st.GetWaiting())
	}
	if reason, err := next.Release(t.Context()); reason != released || err != nil {
		t.Errorf("Release() = %v, %v; want RELEASED", reason, err)
	}
}

func TestAcquireFails(t *testing.T) {
	b := startBroker(t, lease.Config{Capacity: 1})
	c := dial(t, b.addr)
	holder := acquire(t, c, client.AcquireOptions{})
	defer holder.Release(context.Background())

	// A free port with nothing listening.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := lis.Addr().String()
	lis.Close()

	tests := []struct {
		name string
		c    *client.Client
		o    client.AcquireOptions
		want codes.Code
	}{
		{"no capacity in time", c, client.AcquireOptions{WaitTimeout: 200 * time.Millisecond}, codes.ResourceExhausted},
		{"negative TTL", c, client.AcquireOptions{TTL: -time.Second}, codes.InvalidArgument},
		{"TTL over the maximum", c, client.AcquireOptions{TTL: 2 * time.Hour}, codes.InvalidArgument},
		{"bad viewport", c, client.AcquireOptions{Context: &brokerv1.ContextOptions{Viewport: &brokerv1.Viewport{Width: -1, Height: 1}}}, codes.InvalidArgument},
		{"broker unreachable", dial(t, nowhere), client.AcquireOptions{}, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := tt.c.Acquire(t.Context(), tt.o)
			st, ok := status.FromError(err)
			if l != nil || !ok || st.Code() != tt.want {
				t.Errorf("Acquire(%s) = %v, %v; want a status with code %v", tt.name, l, err, tt.want)
			}
		})
	}
}

func TestEvaluateAs(t *testing.T) {
	c := dial(t, brokerAddr)
	ctx := t.Context()
	l := acquire(t, c, client.AcquireOptions{})
	defer l.Release(context.Background())
	if _, err := l.Navigate(ctx, siteURL); err != nil {
		t.Fatalf("Navigate = %v", err)
	}

	type page struct {
		Title string   `json:"title"`
		Items []string `json:"items"`
	}
	got, err := client.EvaluateAs[page](ctx, l,
		`(sel) => ({title: document.title, items: [...document.querySelectorAll(sel)].map(e => e.textContent)})`, "li.item")
	want := page{Title: "Test Site", Items: []string{"item 1", "item 2", "item 3"}}
	if err != nil || got.Title != want.Title || !slices.Equal(got.Items, want.Items) {
		t.Errorf("EvaluateAs[page] = %+v, %v; want %+v", got, err, want)
	}

	raw := json.RawMessage(`{"a": [1, 2]}`)
	if n, err := client.EvaluateAs[int](ctx, l, "(v) => v.a[0] + v.a[1]", raw); err != nil || n != 3 {
		t.Errorf("EvaluateAs[int] with a json.RawMessage argument = %d, %v; want 3", n, err)
	}

	// A value of the wrong type: a decoding error, not a status.
	_, err = client.EvaluateAs[int](ctx, l, "document.title", nil)
	if _, isStatus := status.FromError(err); err == nil || isStatus || !strings.Contains(err.Error(), "decode") {
		t.Errorf("EvaluateAs[int](document.title) = %v, want a decoding error", err)
	}
	// An argument that cannot be encoded fails before any call.
	if _, err := l.Evaluate(ctx, "(v) => v", make(chan int)); err == nil || !strings.Contains(err.Error(), "encode") {
		t.Errorf("Evaluate with a channel argument = %v, want an encoding error", err)
	}
}
