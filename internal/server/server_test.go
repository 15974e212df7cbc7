package server

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/lease"
)

func wantCode(t *testing.T, what string, err error, code codes.Code, contains string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s = %v, want %v", what, err, code)
	}
	if contains != "" && !strings.Contains(status.Convert(err).Message(), contains) {
		t.Fatalf("%s = %v, want a message containing %q", what, err, contains)
	}
}

func TestLeaseFlowWithRealChromium(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 2})
	ctx := context.Background()
	h := b.acquire(t, &brokerv1.Acquire{
		Ttl:     durationpb.New(time.Minute),
		Labels:  map[string]string{"job": "flow"},
		Context: &brokerv1.ContextOptions{Viewport: &brokerv1.Viewport{Width: 800, Height: 600}, UserAgent: "flow-test/1.0"},
	})
	id := h.id

	nav, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: site.URL + "/redirect"})
	if err != nil || nav.Status != 200 || nav.Title != "Test Site" || nav.Url != site.URL+"/" {
		t.Fatalf("Navigate(/redirect) = %v, %v; want 200, title Test Site, url %s/", nav, err, site.URL)
	}
	if _, err := b.page.Fill(ctx, &brokerv1.FillRequest{LeaseId: id, Selector: "#q", Value: "gophers"}); err != nil {
		t.Fatalf("Fill: %v", err)
	}
	if _, err := b.page.Click(ctx, &brokerv1.ClickRequest{LeaseId: id, Selector: "#go"}); err != nil {
		t.Fatalf("Click: %v", err)
	}
	txt, err := b.page.Text(ctx, &brokerv1.TextRequest{LeaseId: id, Selector: "#out"})
	if err != nil || len(txt.Texts) != 1 || txt.Texts[0] != "clicked gophers" {
		t.Fatalf("Text(#out) = %v, %v; want [clicked gophers]", txt, err)
	}
	if _, err := b.page.Press(ctx, &brokerv1.PressRequest{LeaseId: id, Selector: "#q", Key: "Enter"}); err != nil {
		t.Fatalf("Press: %v", err)
	}
	wait, err := b.page.WaitForSelector(ctx, &brokerv1.WaitForSelectorRequest{LeaseId: id, Selector: "text=submitted gophers"})
	if err != nil || !wait.Found {
		t.Fatalf("WaitForSelector(submitted) = %v, %v; want found", wait, err)
	}
	items, err := b.page.Text(ctx, &brokerv1.TextRequest{LeaseId: id, Selector: "li.item"})
	if err != nil || len(items.Texts) != 50 || items.Texts[49] != "item 50" {
		t.Fatalf("Text(li.item) = %d texts, %v; want 50 ending in item 50", len(items.GetTexts()), err)
	}
	ev, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id, Expression: "(a) => a.x * 2 + navigator.userAgent.length", ArgJson: `{"x": 20}`})
	if err != nil || ev.ResultJson != "53" {
		t.Fatalf("Evaluate = %v, %v; want 53 (40 + len(flow-test/1.0))", ev, err)
	}
	vp, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id, Expression: "[innerWidth, innerHeight]"})
	if err != nil || vp.ResultJson != "[800,600]" {
		t.Fatalf("viewport = %v, %v; want [800,600]", vp, err)
	}
	content, err := b.page.Content(ctx, &brokerv1.ContentRequest{LeaseId: id})
	if err != nil || !strings.Contains(content.Html, "<h1>Hello</h1>") {
		t.Fatalf("Content = %.80v, %v; want the page's HTML", content, err)
	}
	shot, err := b.page.Screenshot(ctx, &brokerv1.ScreenshotRequest{LeaseId: id})
	if err != nil || !bytes.HasPrefix(shot.Data, []byte("\x89PNG")) {
		t.Fatalf("Screenshot = %d bytes, %v; want a PNG", len(shot.GetData()), err)
	}
	jpg, err := b.page.Screenshot(ctx, &brokerv1.ScreenshotRequest{LeaseId: id, Format: brokerv1.ImageFormat_IMAGE_FORMAT_JPEG, Quality: 50, FullPage: true})
	if err != nil || !bytes.HasPrefix(jpg.Data, []byte("\xff\xd8")) {
		t.Fatalf("Screenshot(jpeg) = %d bytes, %v; want a JPEG", len(jpg.GetData()), err)
	}
	_, err = b.page.SetCookies(ctx, &brokerv1.SetCookiesRequest{LeaseId: id, Cookies: []*brokerv1.Cookie{{Name: "session", Value: "s3cr3t", Url: site.URL}}})
	if err != nil {
		t.Fatalf("SetCookies: %v", err)
	}
	cookies, err := b.page.GetCookies(ctx, &brokerv1.GetCookiesRequest{LeaseId: id})
	if err != nil || len(cookies.Cookies) != 1 || cookies.Cookies[0].Value != "s3cr3t" {
		t.Fatalf("GetCookies = %v, %v; want the session cookie", cookies, err)
	}

	info, err := b.admin.GetLease(ctx, &brokerv1.GetLeaseRequest{LeaseId: id})
	if err != nil || info.Lease.Labels["job"] != "flow" || info.Lease.Commands < 10 {
		t.Fatalf("GetLease = %v, %v; want label job=flow and the commands counted", info, err)
	}
	if rev := h.release(); rev.Reason != brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED {
		t.Fatalf("release: revoked %v, want RELEASED", rev)
	}
	st, err := b.admin.GetStats(ctx, &brokerv1.GetStatsRequest{})
	if err != nil || st.Active != 0 || st.GrantedTotal != 1 || st.ReclaimedTotal != 1 || !st.InvariantOk || st.BrowserContexts != 0 {
		t.Fatalf("GetStats after release = %v, %v; want nothing active, 1 granted and reclaimed, invariant ok", st, err)
	}
	_, err = b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id, Expression: "1"})
	wantCode(t, "Evaluate on a released lease", err, codes.FailedPrecondition, "RELEASED")
}

func TestLeasesAreIsolated(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 2})
	ctx := context.Background()
	a := b.acquire(t, &brokerv1.Acquire{})
	c := b.acquire(t, &brokerv1.Acquire{})
	for _, id := range []string{a.id, c.id} {
		if _, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: site.URL}); err != nil {
			t.Fatal(err)
		}
	}
	b.page.SetCookies(ctx, &brokerv1.SetCookiesRequest{LeaseId: a.id, Cookies: []*brokerv1.Cookie{{Name: "mine", Value: "a", Url: site.URL}}})
	got, err := b.page.GetCookies(ctx, &brokerv1.GetCookiesRequest{LeaseId: c.id})
	if err != nil || len(got.Cookies) != 0 {
		t.Fatalf("other lease's cookies = %v, %v; want none", got, err)
	}
	// The page appends to localStorage on each load: each lease sees its own.
	ev, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: c.id, Expression: "localStorage.getItem('seen')"})
	if err != nil || ev.ResultJson != `"x"` {
		t.Fatalf("localStorage in the second lease = %v, %v; want \"x\" (its own load only)", ev, err)
	}
}

// Each reclaim path delivers its reason, closes the context, frees the
// capacity and keeps the invariant.
func TestReclaimPaths(t *testing.T) {
	cases := []struct {
		name    string
		acquire *brokerv1.Acquire
		trigger func(t *testing.T, b *broker, h *holder)
		want    brokerv1.ReclaimReason
	}{
		{"release", &brokerv1.Acquire{}, func(t *testing.T, b *broker, h *holder) {
			h.send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}})
		}, brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED},
		{"ttl", &brokerv1.Acquire{Ttl: durationpb.New(300 * time.Millisecond)}, func(*testing.T, *broker, *holder) {},
			brokerv1.ReclaimReason_RECLAIM_REASON_TTL_EXPIRED},
		{"max lifetime", &brokerv1.Acquire{MaxLifetime: durationpb.New(500 * time.Millisecond)}, func(*testing.T, *broker, *holder) {},
			brokerv1.ReclaimReason_RECLAIM_REASON_MAX_LIFETIME},
		{"admin revoke", &brokerv1.Acquire{}, func(t *testing.T, b *broker, h *holder) {
			resp, err := b.admin.RevokeLease(context.Background(), &brokerv1.RevokeLeaseRequest{LeaseId: h.id, Message: "test"})
			if err != nil || resp.Reason != brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED {
				t.Fatalf("RevokeLease = %v, %v", resp, err)
			}
		}, brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED},
		{"shutdown", &brokerv1.Acquire{}, func(t *testing.T, b *broker, h *holder) {
			go b.leases.Close(context.Background())
		}, brokerv1.ReclaimReason_RECLAIM_REASON_SHUTDOWN},
		{"protocol error", &brokerv1.Acquire{}, func(t *testing.T, b *broker, h *holder) {
			h.send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{}}})
		}, brokerv1.ReclaimReason_RECLAIM_REASON_STREAM_CLOSED},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBroker(t, lease.Config{Capacity: 1})
			h := b.acquire(t, tc.acquire)
			if b.pool.Stats().Contexts != 1 {
				t.Fatalf("browser contexts = %d while leased, want 1", b.pool.Stats().Contexts)
			}
			tc.trigger(t, b, h)
			if tc.name == "protocol error" {
				_, err := h.stream.Recv()
				for err == nil {
					_, err = h.stream.Recv()
				}
				wantCode(t, "second acquire", err, codes.InvalidArgument, "only renew and release")
			} else if rev := h.revoked(); rev.Reason != tc.want {
				t.Fatalf("revoked %v, want %v", rev, tc.want)
			}
			waitFor(t, "the reclaim to finish", func() bool { return b.leases.Stats().Active == 0 })
			st := b.leases.Stats()
			if st.Reclaimed[lease.Reason(tc.want)] != 1 || st.InvariantErr != nil || b.pool.Stats().Contexts != 0 {
				t.Fatalf("stats %+v, contexts %d; want one %v reclaim, invariant ok, no context", st, b.pool.Stats().Contexts, tc.want)
			}
		})
	}
}

func TestStreamBreakReclaims(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 1})
	h := b.acquire(t, &brokerv1.Acquire{})
	h.cancel() // the worker goes away without a release
	waitFor(t, "STREAM_CLOSED reclaim", func() bool { return b.leases.Stats().Reclaimed[lease.StreamClosed] == 1 })
	if n := b.pool.Stats().Contexts; n != 0 {
		t.Fatalf("browser contexts = %d after the stream broke, want 0", n)
	}
	if n := b.leases.Stats().DuplicateTriggers; n != 0 {
		t.Fatalf("one broken stream counted %d duplicate triggers, want 0 (the handler must trigger once)", n)
	}
	b.acquire(t, &brokerv1.Acquire{}) // capacity is back
}

// Closing only the sending side is not a broken stream: the lease lives
// on (page commands keep it active) until its TTL.
func TestCloseSendKeepsLeaseUntilTTL(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 1, Jitter: -1})
	h := b.acquire(t, &brokerv1.Acquire{Ttl: durationpb.New(time.Second)})
	h.stream.CloseSend()
	ev, err := b.page.Evaluate(context.Background(), &brokerv1.EvaluateRequest{LeaseId: h.id, Expression: "1 + 1"})
	if err != nil || ev.ResultJson != "2" {
		t.Fatalf("Evaluate after CloseSend = %v, %v; want the lease still usable", ev, err)
	}
	if rev := h.revoked(); rev.Reason != brokerv1.ReclaimReason_RECLAIM_REASON_TTL_EXPIRED {
		t.Fatalf("after CloseSend: revoked %v, want TTL_EXPIRED", rev)
	}
}

func TestRenewKeepsLeaseAlive(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 1, Jitter: -1})
	h := b.acquire(t, &brokerv1.Acquire{Ttl: durationpb.New(400 * time.Millisecond)})
	deadline := time.Now().Add(1200 * time.Millisecond)
	for time.Now().Before(deadline) {
		h.send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Renew{Renew: &brokerv1.Renew{}}})
		resp, err := h.stream.Recv()
		if err != nil || resp.GetRenewed() == nil {
			t.Fatalf("renew answered %v, %v; want renewed", resp, err)
		}
		time.Sleep(100 * time.Millisecond) // the worker's renew cadence, well inside the TTL
	}
	if rev := h.release(); rev.Reason != brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED {
		t.Fatalf("a renewed lease ended with %v, want it alive until released", rev)
	}
}

func TestInFlightCommandEndsPromptlyOnReclaim(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 1})
	h := b.acquire(t, &brokerv1.Acquire{})
	errc := make(chan error, 1)
	go func() {
		_, err := b.page.Navigate(context.Background(), &brokerv1.NavigateRequest{LeaseId: h.id, Url: site.URL + "/hang", Timeout: durationpb.New(time.Minute)})
		errc <- err
	}()
	waitFor(t, "the navigation to start", func() bool {
		info, err := b.leases.Get(h.id)
		return err == nil && info.Commands == 1
	})
	time.Sleep(200 * time.Millisecond) // let the browser request the page
	start := time.Now()
	if _, err := b.admin.RevokeLease(context.Background(), &brokerv1.RevokeLeaseRequest{LeaseId: h.id}); err != nil {
		t.Fatal(err)
	}
	err := <-errc
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("in-flight Navigate returned %v after the revoke, want promptly", took)
	}
	wantCode(t, "in-flight Navigate", err, codes.Aborted, "REVOKED")
	if rev := h.revoked(); rev.Reason != brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED {
		t.Fatalf("revoked %v, want REVOKED", rev)
	}
}

func TestCommandTimeoutIsRealAndLeaseStaysUsable(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 1})
	h := b.acquire(t, &brokerv1.Acquire{})
	ctx := context.Background()
	_, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: h.id, Url: site.URL + "/hang", Timeout: durationpb.New(500 * time.Millisecond)})
	wantCode(t, "Navigate(/hang, 500ms)", err, codes.DeadlineExceeded, "")
	// A script that never returns: the gRPC deadline, shorter than the
	// command's timeout, wins.
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err = b.page.Evaluate(dctx, &brokerv1.EvaluateRequest{LeaseId: h.id, Expression: "new Promise(() => {})", Timeout: durationpb.New(time.Minute)})
	cancel()
	wantCode(t, "Evaluate(never resolves) under a 1s deadline", err, codes.DeadlineExceeded, "")
	ev, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: h.id, Expression: "1 + 1"})
	if err != nil || ev.ResultJson != "2" {
		t.Fatalf("Evaluate after timeouts = %v, %v; want 2 (the lease stays usable)", ev, err)
	}
	if rev := h.release(); rev.Reason != brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED {
		t.Fatalf("revoked %v", rev)
	}
}

func TestQueueGrantsInOrderAndTimesOut(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 1})
	first := b.acquire(t, &brokerv1.Acquire{})

	type result struct {
		h   *holder
		err error
	}
	second := make(chan result, 1)
	go func() {
		h, err := b.tryAcquire(t, &brokerv1.Acquire{WaitTimeout: durationpb.New(time.Minute)})
		second <- result{h, err}
	}()
	waitFor(t, "the second acquire to queue", func() bool { return b.leases.Stats().Waiting == 1 })

	// A third acquire with a short wait gives up with RESOURCE_EXHAUSTED.
	_, err := b.tryAcquire(t, &brokerv1.Acquire{WaitTimeout: durationpb.New(300 * time.Millisecond)})
	wantCode(t, "acquire with a 300ms wait on a full broker", err, codes.ResourceExhausted, "")

	first.release()
	r := <-second
	if r.err != nil {
		t.Fatalf("queued acquire = %v, want granted after the release", r.err)
	}
	if len(r.h.queued) == 0 || r.h.queued[0] != 1 {
		t.Fatalf("queued positions %v, want [1 ...]", r.h.queued)
	}
	r.h.release()
}

func TestBadInputGetsClearStatusAndHarmsNothing(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 1})
	ctx := context.Background()

	// A first message that is not acquire.
	stream, err := b.lease.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Renew{Renew: &brokerv1.Renew{}}})
	_, err = stream.Recv()
	wantCode(t, "first message renew", err, codes.InvalidArgument, "must be acquire")

	// A stream closed before any message.
	stream, err = b.lease.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	_, err = stream.Recv()
	wantCode(t, "stream closed before acquire", err, codes.InvalidArgument, "before acquire")

	for name, a := range map[string]*brokerv1.Acquire{
		"negative ttl":  {Ttl: durationpb.New(-time.Second)},
		"negative wait": {WaitTimeout: durationpb.New(-time.Second)},
		"bad viewport":  {Context: &brokerv1.ContextOptions{Viewport: &brokerv1.Viewport{Width: -1, Height: 10}}},
		"bad proxy":     {Context: &brokerv1.ContextOptions{Proxy: &brokerv1.Proxy{Server: "::nope"}}},
		"huge ttl":      {Ttl: durationpb.New(1000 * time.Hour)},
	} {
		_, err := b.tryAcquire(t, a)
		wantCode(t, "acquire with "+name, err, codes.InvalidArgument, "")
	}

	h := b.acquire(t, &brokerv1.Acquire{})
	calls := map[string]func() error{
		"malformed url": func() error {
			_, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: h.id, Url: "not a url"})
			return err
		},
		"file url": func() error {
			_, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: h.id, Url: "file:///etc/passwd"})
			return err
		},
		"empty selector": func() error {
			_, err := b.page.Click(ctx, &brokerv1.ClickRequest{LeaseId: h.id})
			return err
		},
		"bad arg json": func() error {
			_, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: h.id, Expression: "(a) => a", ArgJson: "{nope"})
			return err
		},
		"negative timeout": func() error {
			_, err := b.page.Content(ctx, &brokerv1.ContentRequest{LeaseId: h.id, Timeout: durationpb.New(-time.Second)})
			return err
		},
		"empty lease id": func() error {
			_, err := b.page.Content(ctx, &brokerv1.ContentRequest{})
			return err
		},
		"malformed selector": func() error {
			_, err := b.page.Text(ctx, &brokerv1.TextRequest{LeaseId: h.id, Selector: "div[[["})
			return err
		},
		"script throws": func() error {
			_, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: h.id, Expression: "(() => { throw new Error('boom') })()"})
			return err
		},
	}
	for name, call := range calls {
		wantCode(t, name, call(), codes.InvalidArgument, "")
	}
	_, err = b.page.Content(ctx, &brokerv1.ContentRequest{LeaseId: "l_unknown"})
	wantCode(t, "unknown lease", err, codes.NotFound, "")
	_, err = b.admin.RevokeLease(ctx, &brokerv1.RevokeLeaseRequest{LeaseId: "l_unknown"})
	wantCode(t, "revoke unknown lease", err, codes.NotFound, "")

	// The lease and the broker are unharmed.
	ev, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: h.id, Expression: "1 + 1"})
	if err != nil || ev.ResultJson != "2" {
		t.Fatalf("Evaluate after bad input = %v, %v; want 2", ev, err)
	}
	if st := b.leases.Stats(); st.GrantedTotal != 1 || st.InvariantErr != nil {
		t.Fatalf("stats after bad input: %+v", st)
	}
}

func TestPanicBecomesInternalWithoutStack(t *testing.T) {
	// An edge with no lease manager panics on use: the recovery
	// interceptor must turn that into a plain INTERNAL.
	g, _ := NewGRPCServer(New(Config{}), GRPCConfig{})
	lis := newBufListener(t, g)
	admin := brokerv1.NewAdminServiceClient(lis)
	_, err := admin.GetStats(context.Background(), &brokerv1.GetStatsRequest{})
	wantCode(t, "GetStats on a broken edge", err, codes.Internal, "")
	if msg := status.Convert(err).Message(); msg != "internal error" {
		t.Fatalf("panic message sent to the client: %q, want only \"internal error\"", msg)
	}
}

func TestConcurrentCommandsOnOneLeaseRunInOrder(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 1})
	h := b.acquire(t, &brokerv1.Acquire{})
	ctx := context.Background()
	if _, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: h.id, Url: site.URL}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: h.id,
				Expression: "(i) => { window.log = (window.log || []).concat(i); return window.log.length }", ArgJson: string(rune('0' + i%10))})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Evaluate: %v", err)
		}
	}
	ev, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: h.id, Expression: "window.log.length"})
	if err != nil || ev.ResultJson != "20" {
		t.Fatalf("commands run = %v, %v; want all 20", ev, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBrowserCrashRevokesItsLeases(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 2})
	h := b.acquire(t, &brokerv1.Acquire{})
	procs := b.pool.Processes()
	if len(procs.Browsers) == 0 {
		t.Fatalf("pool reports no browser pid: %+v", procs)
	}
	// The package's tests share one pool: its counters are compared with
	// what they were before the crash.
	before, err := b.admin.GetStats(context.Background(), &brokerv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range procs.Browsers {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill browser %d: %v", pid, err)
		}
	}
	start := time.Now()
	rev := h.revoked()
	if rev.Reason != brokerv1.ReclaimReason_RECLAIM_REASON_BROWSER_CRASHED {
		t.Fatalf("after killing the browser: revoked %v, want BROWSER_CRASHED", rev)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("crash noticed after %v, want within 2s", took)
	}
	waitFor(t, "the reclaim to finish", func() bool { return b.leases.Stats().Active == 0 })
	// The pool relaunches: the next lease works.
	h2 := b.acquire(t, &brokerv1.Acquire{})
	ev, err := b.page.Evaluate(context.Background(), &brokerv1.EvaluateRequest{LeaseId: h2.id, Expression: "1 + 1"})
	if err != nil || ev.ResultJson != "2" {
		t.Fatalf("Evaluate on a lease after the crash = %v, %v; want 2", ev, err)
	}
	if st := b.leases.Stats(); st.InvariantErr != nil || st.Reclaimed[lease.BrowserCrashed] != 1 {
		t.Fatalf("stats %+v: want one BROWSER_CRASHED reclaim and the invariant", st)
	}
	// Operators see the crash and the relaunch, in GetStats and metrics.
	gs, err := b.admin.GetStats(context.Background(), &brokerv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if gs.BrowserCrashes != before.BrowserCrashes+1 || gs.BrowserLaunches <= before.BrowserLaunches ||
		gs.PageCrashes != before.PageCrashes || gs.DriverCrashes != before.DriverCrashes {
		t.Errorf("GetStats after one browser crash: browser_crashes %d, browser_launches %d, page_crashes %d, driver_crashes %d; "+
			"want one more crash (before %d) and a relaunch (before %d launches), no other crash (before %d, %d)",
			gs.BrowserCrashes, gs.BrowserLaunches, gs.PageCrashes, gs.DriverCrashes,
			before.BrowserCrashes, before.BrowserLaunches, before.PageCrashes, before.DriverCrashes)
	}
	srv := httptest.NewServer(b.metrics.Handler())
	defer srv.Close()
	if got := scrape(t, srv.URL, `broker_browser_crashes_total{what="browser"}`); got != float64(gs.BrowserCrashes) {
		t.Errorf(`broker_browser_crashes_total{what="browser"} = %v, want GetStats' %d`, got, gs.BrowserCrashes)
	}
	if got := scrape(t, srv.URL, "broker_browser_launches_total"); got != float64(gs.BrowserLaunches) {
		t.Errorf("broker_browser_launches_total = %v, want GetStats' %d", got, gs.BrowserLaunches)
	}
	for series, want := range map[string]float64{
		"broker_driver_restarts_total": float64(gs.DriverRestarts), "broker_warm_refill_held": 0,
		"broker_warm_refill_yielding": 0, "broker_warm_refills_forced_total": float64(gs.WarmRefillsForced),
		"broker_policy_denied_requests_total": float64(gs.PolicyDeniedRequests), "broker_browsers_retiring": float64(gs.BrowsersRetiring),
	} {
		if got := scrape(t, srv.URL, series); got != want {
			t.Errorf("%s = %v, want %v (as GetStats says)", series, got, want)
		}
	}
}

func TestDrainAndUndrain(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 2})
	ctx := context.Background()
	live := b.acquire(t, &brokerv1.Acquire{})
	resp, err := b.admin.Drain(ctx, &brokerv1.DrainRequest{})
	if err != nil || resp.Active != 1 {
		t.Fatalf("Drain = %v, %v; want 1 live lease reported", resp, err)
	}
	_, err = b.tryAcquire(t, &brokerv1.Acquire{})
	wantCode(t, "acquire while draining", err, codes.Unavailable, "draining")
	if _, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: live.id, Url: site.URL}); err != nil {
		t.Fatalf("live lease while draining: %v", err)
	}
	st, _ := b.admin.GetStats(ctx, &brokerv1.GetStatsRequest{})
	if !st.GetDraining() {
		t.Fatalf("GetStats.draining = false while draining")
	}
	if _, err := b.admin.Undrain(ctx, &brokerv1.UndrainRequest{}); err != nil {
		t.Fatal(err)
	}
	b.acquire(t, &brokerv1.Acquire{}).release()
	live.release()
}
