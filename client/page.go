package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// CommandOption configures a page command. [WithCommandTimeout] is one.
type CommandOption interface {
	applyCommand(*commandConfig)
}

// NavigateOption configures [Lease.Navigate]: [WithWaitUntil],
// [WithReferer] and [WithCommandTimeout].
type NavigateOption interface {
	applyNavigate(*brokerv1.NavigateRequest)
}

// WaitOption configures [Lease.WaitForSelector]: [WithState] and
// [WithCommandTimeout].
type WaitOption interface {
	applyWait(*brokerv1.WaitForSelectorRequest)
}

// WithCommandTimeout's option applies to every command.
var (
	_ CommandOption  = TimeoutOption{}
	_ NavigateOption = TimeoutOption{}
	_ WaitOption     = TimeoutOption{}
)

type commandConfig struct {
	timeout *durationpb.Duration
}

func commandOptions(opts []CommandOption) commandConfig {
	var c commandConfig
	for _, o := range opts {
		o.applyCommand(&c)
	}
	return c
}

// TimeoutOption is the option [WithCommandTimeout] returns; it applies to
// every page command.
type TimeoutOption struct{ d time.Duration }

// WithCommandTimeout sets the time limit the broker gives the command,
// capped by its --max-command-timeout. When it passes the broker stops the
// command in the browser and answers DEADLINE_EXCEEDED; the lease stays
// usable. Default: the broker's --command-timeout (30s). A shorter deadline
// on the call's context wins.
func WithCommandTimeout(d time.Duration) TimeoutOption { return TimeoutOption{d} }

func (o TimeoutOption) applyCommand(c *commandConfig) { c.timeout = durationOrNil(o.d) }

func (o TimeoutOption) applyNavigate(r *brokerv1.NavigateRequest) { r.Timeout = durationOrNil(o.d) }

func (o TimeoutOption) applyWait(r *brokerv1.WaitForSelectorRequest) { r.Timeout = durationOrNil(o.d) }

type navigateOptionFunc func(*brokerv1.NavigateRequest)

func (f navigateOptionFunc) applyNavigate(r *brokerv1.NavigateRequest) { f(r) }

// WithWaitUntil says when a navigation counts as done. Default: LOAD.
func WithWaitUntil(w brokerv1.WaitUntil) NavigateOption {
	return navigateOptionFunc(func(r *brokerv1.NavigateRequest) { r.WaitUntil = w })
}

// WithReferer sets the Referer header of the navigation.
func WithReferer(referer string) NavigateOption {
	return navigateOptionFunc(func(r *brokerv1.NavigateRequest) { r.Referer = referer })
}

type waitOptionFunc func(*brokerv1.WaitForSelectorRequest)

func (f waitOptionFunc) applyWait(r *brokerv1.WaitForSelectorRequest) { f(r) }

// WithState sets the element state WaitForSelector waits for. Default:
// VISIBLE.
func WithState(s brokerv1.ElementState) WaitOption {
	return waitOptionFunc(func(r *brokerv1.WaitForSelectorRequest) { r.State = s })
}

// errLeaseEnded cancels a page command whose lease ended while it ran.
var errLeaseEnded = errors.New("lease ended")

// do runs one page command, failing at once when the lease has ended and
// cancelling the command when the lease ends while it runs; in both cases
// the error is Err's.
func (l *Lease) do(ctx context.Context, call func(ctx context.Context) error) error {
	select {
	case <-l.done:
		return l.err
	default:
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(l.streamCtx, func() { cancel(errLeaseEnded) })
	defer stop()
	err := call(ctx)
	if err != nil && errors.Is(context.Cause(ctx), errLeaseEnded) {
		<-l.done // close behind: the stream is cut
		return l.err
	}
	return err
}

// Navigate loads an absolute http or https URL in the lease's page and
// returns the HTTP status of the main resource (0 when there was none),
// the URL after redirects and the page's title. A network failure is
// UNAVAILABLE; an HTTP error status is not an error.
func (l *Lease) Navigate(ctx context.Context, url string, opts ...NavigateOption) (*brokerv1.NavigateResponse, error) {
	req := &brokerv1.NavigateRequest{LeaseId: l.id, Url: url}
	for _, o := range opts {
		o.applyNavigate(req)
	}
	var resp *brokerv1.NavigateResponse
	err := l.do(ctx, func(ctx context.Context) (err error) {
		resp, err = l.c.page.Navigate(ctx, req)
		return err
	})
	return resp, err
}

// Click clicks the first element matching selector, waiting for it to be
// visible, stable and enabled within the command's time limit.
func (l *Lease) Click(ctx context.Context, selector string, opts ...CommandOption) error {
	cfg := commandOptions(opts)
	return l.do(ctx, func(ctx context.Context) error {
		_, err := l.c.page.Click(ctx, &brokerv1.ClickRequest{LeaseId: l.id, Selector: selector, Timeout: cfg.timeout})
		return err
	})
}

// Fill sets the value of the input matching selector.
func (l *Lease) Fill(ctx context.Context, selector, value string, opts ...CommandOption) error {
	cfg := commandOptions(opts)
	return l.do(ctx, func(ctx context.Context) error {
		_, err := l.c.page.Fill(ctx, &brokerv1.FillRequest{LeaseId: l.id, Selector: selector, Value: value, Timeout: cfg.timeout})
		return err
	})
}

// Press presses a key, such as "Enter", "ArrowDown" or "Control+A", on the
// element matching selector.
func (l *Lease) Press(ctx context.Context, selector, key string, opts ...CommandOption) error {
	cfg := commandOptions(opts)
	return l.do(ctx, func(ctx context.Context) error {
		_, err := l.c.page.Press(ctx, &brokerv1.PressRequest{LeaseId: l.id, Selector: selector, Key: key, Timeout: cfg.timeout})
		return err
	})
}

// WaitForSelector waits until an element matching selector reaches a state
// (default VISIBLE, see [WithState]) and says whether one matched when the
// wait ended: false after DETACHED or HIDDEN was reached by absence. Not
// reaching the state in time is DEADLINE_EXCEEDED.
func (l *Lease) WaitForSelector(ctx context.Context, selector string, opts ...WaitOption) (bool, error) {
	req := &brokerv1.WaitForSelectorRequest{LeaseId: l.id, Selector: selector}
	for _, o := range opts {
		o.applyWait(req)
	}
	var found bool
	err := l.do(ctx, func(ctx context.Context) error {
		resp, err := l.c.page.WaitForSelector(ctx, req)
		found = resp.GetFound()
		return err
	})
	return found, err
}

// Evaluate runs a JavaScript expression in the page and returns its value
// as JSON ("null" for undefined; a promise is awaited). When expr is a
// function, such as "(sel) => document.querySelectorAll(sel).length", it is
// called with arg, encoded as JSON (a json.RawMessage is sent as it is);
// nil passes no argument. A script that throws is INVALID_ARGUMENT. See
// [EvaluateAs] to decode the value.
func (l *Lease) Evaluate(ctx context.Context, expr string, arg any, opts ...CommandOption) (json.RawMessage, error) {
	req := &brokerv1.EvaluateRequest{LeaseId: l.id, Expression: expr, Timeout: commandOptions(opts).timeout}
	if arg != nil {
		b, err := json.Marshal(arg)
		if err != nil {
			return nil, fmt.Errorf("evaluate: encode argument: %w", err)
		}
		req.ArgJson = string(b)
	}
	var result json.RawMessage
	err := l.do(ctx, func(ctx context.Context) error {
		resp, err := l.c.page.Evaluate(ctx, req)
		if err == nil {
			result = json.RawMessage(resp.GetResultJson())
		}
		return err
	})
	return result, err
}

// EvaluateAs is [Lease.Evaluate] with the value decoded into a T by
// encoding/json.
func EvaluateAs[T any](ctx context.Context, l *Lease, expr string, arg any, opts ...CommandOption) (T, error) {
	var v T
	raw, err := l.Evaluate(ctx, expr, arg, opts...)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("evaluate: decode %.100s as %T: %w", raw, v, err)
	}
	return v, nil
}

// Content returns the page's HTML.
func (l *Lease) Content(ctx context.Context, opts ...CommandOption) (string, error) {
	cfg := commandOptions(opts)
	var html string
	err := l.do(ctx, func(ctx context.Context) error {
		resp, err := l.c.page.Content(ctx, &brokerv1.ContentRequest{LeaseId: l.id, Timeout: cfg.timeout})
		html = resp.GetHtml()
		return err
	})
	return html, err
}

// Text returns the inner text of every element matching selector, in
// document order; none when nothing matches.
func (l *Lease) Text(ctx context.Context, selector string, opts ...CommandOption) ([]string, error) {
	cfg := commandOptions(opts)
	var texts []string
	err := l.do(ctx, func(ctx context.Context) error {
		resp, err := l.c.page.Text(ctx, &brokerv1.TextRequest{LeaseId: l.id, Selector: selector, Timeout: cfg.timeout})
		texts = resp.GetTexts()
		return err
	})
	return texts, err
}

// ScreenshotOptions configure [Lease.Screenshot]. The zero value takes a
// PNG of the viewport.
type ScreenshotOptions struct {
	// FullPage captures the whole scrollable page, not only the viewport.
	FullPage bool
	// Format is the encoding. Zero: PNG.
	Format brokerv1.ImageFormat
	// Quality is the JPEG quality, 1-100. Zero: the browser's default.
	// Only for JPEG.
	Quality int
	// Timeout is the command's time limit, as [WithCommandTimeout].
	Timeout time.Duration
}

// Screenshot captures the page and returns the encoded image.
func (l *Lease) Screenshot(ctx context.Context, opts ScreenshotOptions) ([]byte, error) {
	req := &brokerv1.ScreenshotRequest{
		LeaseId:  l.id,
		FullPage: opts.FullPage,
		Format:   opts.Format,
		Quality:  int32(opts.Quality),
		Timeout:  durationOrNil(opts.Timeout),
	}
	var data []byte
	err := l.do(ctx, func(ctx context.Context) error {
		resp, err := l.c.page.Screenshot(ctx, req)
		data = resp.GetData()
		return err
	})
	return data, err
}

// Cookies returns the cookies of the lease's browser context: those that
// would be sent to the given URLs, or all of them when none is given.
func (l *Lease) Cookies(ctx context.Context, urls ...string) ([]*brokerv1.Cookie, error) {
	var cookies []*brokerv1.Cookie
	err := l.do(ctx, func(ctx context.Context) error {
		resp, err := l.c.page.GetCookies(ctx, &brokerv1.GetCookiesRequest{LeaseId: l.id, Urls: urls})
		cookies = resp.GetCookies()
		return err
	})
	return cookies, err
}

// SetCookies adds cookies to the lease's browser context. Each cookie names
// either a Url, or a Domain (with a Path).
func (l *Lease) SetCookies(ctx context.Context, cookies ...*brokerv1.Cookie) error {
	return l.do(ctx, func(ctx context.Context) error {
		_, err := l.c.page.SetCookies(ctx, &brokerv1.SetCookiesRequest{LeaseId: l.id, Cookies: cookies})
		return err
	})
}

func timeOrZero(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}
