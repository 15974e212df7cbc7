package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/lease"
)

// internalDetail matches what no status message may carry: Go source
// positions and stacks, file paths, the driver's files, JavaScript stack
// frames, Playwright call logs, pipe names, line breaks.
var internalDetail = regexp.MustCompile(`\.go:\d+|goroutine |/tmp/|/home/|/root/|/usr/|node_modules|` +
	`at .*\(.*:\d+:\d+\)|at <anonymous>|Call log|\|\d+|\n`)

func TestClientMessage(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"at most 32 labels, got 40", "at most 32 labels, got 40"},
		{"navigate: net::ERR_CONNECTION_REFUSED at http://127.0.0.1:1/a/b?c=d", "navigate: net::ERR_CONNECTION_REFUSED at http://127.0.0.1:1/a/b?c=d"},
		{"click: Timeout 500ms exceeded.\nCall log:\n  - waiting for locator('#x')\n", "click: Timeout 500ms exceeded."},
		{"evaluate: Error: boom\nsecond line\n    at inner (<anonymous>:1:30)\n    at outer (http://x/app.js:2:5)", "evaluate: Error: boom second line"},
		{"launch: Failed to launch: /usr/bin/chromium --user-data-dir=/tmp/playwright_chromiumdev_profile-X1 exited", "launch: Failed to launch: … --user-data-dir=… exited"},
		{"panic at main.go:12 in /home/u/src/x.go:40", "panic at … in …"},
		{"browser crashed: remote browser ws://10.0.0.5:3000/abc disconnected", "browser crashed: remote browser … disconnected"},
		{"could not send message: write |1: broken pipe", "could not send message: write pipe: broken pipe"},
		{"text: strict mode violation: locator('//div') resolved to 3 elements", "text: strict mode violation: locator('//div') resolved to 3 elements"},
		{"Error: thrown at f (http://x/app.js:1:2) inline", "Error: thrown … inline"},
	} {
		if got := clientMessage(c.in); got != c.want {
			t.Errorf("clientMessage(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := clientMessage(strings.Repeat("é", 1000)); len(got) > maxClientMessage+len("…") || !strings.HasSuffix(got, "…") {
		t.Errorf("clientMessage(2000 bytes) = %d bytes, want at most %d and cut", len(got), maxClientMessage)
	}
}

// TestErrorMessagesCarryNoInternalDetail makes many kinds of failure
// happen through the API and checks that no message tells more than the
// client needs: no stack, file path, call log or internal address.
func TestErrorMessagesCarryNoInternalDetail(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 2})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/app.js":
			w.Header().Set("Content-Type", "text/javascript")
			fmt.Fprint(w, "function appInner() { throw new Error('from the app') }\nfunction appThrow() { appInner() }\n")
		default:
			fmt.Fprint(w, `<!doctype html><title>app</title><script src="/app.js"></script><h1>app</h1><input id=q>`)
		}
	}))
	defer app.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String() + "/"
	closed.Close()

	ctx := context.Background()
	h := b.acquire(t, &brokerv1.Acquire{})
	id := h.id
	if _, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: app.URL}); err != nil {
		t.Fatalf("Navigate(app) = %v", err)
	}
	short := durationpb.New(300 * time.Millisecond)
	evaluate := func(expr string) func() error {
		return func() error {
			_, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id, Expression: expr, Timeout: short})
			return err
		}
	}
	failures := []struct {
		name string
		code codes.Code
		call func() error
	}{
		{"malformed selector", codes.InvalidArgument, func() error {
			_, err := b.page.Click(ctx, &brokerv1.ClickRequest{LeaseId: id, Selector: "div[[[", Timeout: short})
			return err
		}},
		{"unknown selector engine", codes.InvalidArgument, func() error {
			_, err := b.page.Text(ctx, &brokerv1.TextRequest{LeaseId: id, Selector: "nope=x"})
			return err
		}},
		{"click times out", codes.DeadlineExceeded, func() error {
			_, err := b.page.Click(ctx, &brokerv1.ClickRequest{LeaseId: id, Selector: "#missing", Timeout: short})
			return err
		}},
		{"wait times out", codes.DeadlineExceeded, func() error {
			_, err := b.page.WaitForSelector(ctx, &brokerv1.WaitForSelectorRequest{LeaseId: id, Selector: "#missing", Timeout: short})
			return err
		}},
		{"fill a heading", codes.InvalidArgument, func() error {
			_, err := b.page.Fill(ctx, &brokerv1.FillRequest{LeaseId: id, Selector: "h1", Value: "x", Timeout: durationpb.New(2 * time.Second)})
			return err
		}},
		// Playwright retries an unknown key until the time limit.
		{"unknown key", codes.DeadlineExceeded, func() error {
			_, err := b.page.Press(ctx, &brokerv1.PressRequest{LeaseId: id, Selector: "#q", Key: "NoSuchKey", Timeout: short})
			return err
		}},
		{"script throws from its own functions", codes.InvalidArgument,
			evaluate(`(() => { function inner() { throw new Error("boom\nsecond line") } function outer() { inner() } outer() })()`)},
		{"script throws from the page's script", codes.InvalidArgument, evaluate(`appThrow()`)},
		{"script throws a non-error", codes.InvalidArgument, evaluate(`(() => { throw {code: 42} })()`)},
		{"script rejects", codes.InvalidArgument, evaluate(`Promise.reject(new TypeError("async boom"))`)},
		{"script does not compile", codes.InvalidArgument, evaluate(`function (`)},
		{"script names nothing", codes.InvalidArgument, evaluate(`noSuchVariable.x`)},
		{"script never ends", codes.DeadlineExceeded, evaluate(`new Promise(() => {})`)},
		{"navigation times out", codes.DeadlineExceeded, func() error {
			_, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: site.URL + "/hang", Timeout: short})
			return err
		}},
		{"navigation to a closed port", codes.Unavailable, func() error {
			_, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: closedURL})
			return err
		}},
		{"page closed by its script", codes.Unknown, func() error {
			if _, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id, Expression: "window.close()"}); err != nil {
				return err
			}
			_, err := b.page.Content(ctx, &brokerv1.ContentRequest{LeaseId: id})
			return err
		}},
		{"bad time zone", codes.InvalidArgument, func() error {
			h, err := b.tryAcquire(t, &brokerv1.Acquire{Context: &brokerv1.ContextOptions{TimezoneId: "Not/A_Zone"}})
			if err == nil {
				h.release()
			}
			return err
		}},
		{"unknown lease", codes.NotFound, func() error {
			_, err := b.page.Content(ctx, &brokerv1.ContentRequest{LeaseId: "l_nope"})
			return err
		}},
	}
	var msgs []string
	for _, f := range failures {
		err := f.call()
		// Codes.Unknown stands for "any failure": those calls' outcome
		// depends on the browser; only their message matters here.
		if err == nil && f.code != codes.Unknown {
			t.Errorf("%s: no error, want %v", f.name, f.code)
			continue
		}
		if f.code != codes.Unknown && status.Code(err) != f.code {
			t.Errorf("%s: %v, want %v", f.name, err, f.code)
		}
		if err != nil {
			msgs = append(msgs, f.name+": "+status.Convert(err).Message())
		}
	}
	// A lease reclaimed while a command runs, and a late command on it.
	running := make(chan error, 1)
	go func() {
		_, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id, Expression: "new Promise(() => {})"})
		running <- err
	}()
	time.Sleep(200 * time.Millisecond)
	if _, err := b.admin.RevokeLease(ctx, &brokerv1.RevokeLeaseRequest{LeaseId: id, Message: "maintenance"}); err != nil {
		t.Fatalf("RevokeLease = %v", err)
	}
	rev := h.revoked()
	_, late := b.page.Content(ctx, &brokerv1.ContentRequest{LeaseId: id})
	msgs = append(msgs, "in flight at the revoke: "+status.Convert(<-running).Message(),
		"after the revoke: "+status.Convert(late).Message(), "revoked: "+rev.GetMessage())

	for _, m := range msgs {
		t.Log(m)
		if loc := internalDetail.FindStringIndex(m); loc != nil {
			t.Errorf("message carries internal detail %q: %q", m[loc[0]:loc[1]], m)
		}
	}
	for _, want := range []string{"boom second line", "from the app", "async boom", "ERR_CONNECTION_REFUSED"} {
		if !strings.Contains(strings.Join(msgs, "\n"), want) {
			t.Errorf("no message says %q: the user's own error text must stay", want)
		}
	}
}
