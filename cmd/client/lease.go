package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// leaseOptions are the flags of `client lease`.
type leaseOptions struct {
	url        string
	waitFor    string
	texts      stringsFlag
	evals      stringsFlag
	screenshot string
	fullPage   bool
	ttl        time.Duration // zero: the broker's default
	wait       time.Duration // zero: the broker's default
	labels     labelsFlag
	userAgent  string
	viewport   viewportFlag
}

// leaseResult is the --json document of `client lease`.
type leaseResult struct {
	LeaseID        string            `json:"lease_id"`
	QueuePositions []int32           `json:"queue_positions"`
	Granted        json.RawMessage   `json:"granted,omitempty"`
	Navigate       json.RawMessage   `json:"navigate,omitempty"`
	WaitFor        *waitForResult    `json:"wait_for,omitempty"`
	Texts          []textResult      `json:"texts,omitempty"`
	Evals          []evalResult      `json:"evals,omitempty"`
	Screenshot     *screenshotResult `json:"screenshot,omitempty"`
	Revoked        json.RawMessage   `json:"revoked,omitempty"`
	Error          string            `json:"error,omitempty"`
}

type waitForResult struct {
	Selector string `json:"selector"`
	Found    bool   `json:"found"`
}

type textResult struct {
	Selector string   `json:"selector"`
	Texts    []string `json:"texts"`
}

type evalResult struct {
	Expression string          `json:"expression"`
	Result     json.RawMessage `json:"result"`
}

type screenshotResult struct {
	Path  string `json:"path"`
	Bytes int    `json:"bytes"`
}

func (c *cli) lease(ctx context.Context, args []string) error {
	o := leaseOptions{labels: labelsFlag{}}
	fs := c.flagSet("lease")
	fs.StringVar(&o.url, "url", "", "page to load")
	fs.StringVar(&o.waitFor, "wait-for", "", "selector to wait for")
	fs.Var(&o.texts, "text", "selector whose inner texts to print")
	fs.Var(&o.evals, "eval", "JavaScript expression to evaluate")
	fs.StringVar(&o.screenshot, "screenshot", "", "PNG file to write")
	fs.BoolVar(&o.fullPage, "full-page", false, "screenshot the whole page")
	fs.DurationVar(&o.ttl, "ttl", 0, "idle TTL")
	fs.DurationVar(&o.wait, "wait", 0, "longest wait in the queue")
	fs.Var(o.labels, "label", "k=v label")
	fs.StringVar(&o.userAgent, "user-agent", "", "User-Agent")
	fs.Var(&o.viewport, "viewport", "WIDTHxHEIGHT")
	rest, err := c.parse(fs, args, true)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usageErrorf("lease: unexpected argument %q", rest[0])
	case o.url == "":
		return usageErrorf("lease: --url is required")
	case o.ttl < 0 || o.wait < 0:
		return usageErrorf("lease: --ttl and --wait must not be negative")
	case o.fullPage && o.screenshot == "":
		return usageErrorf("lease: --full-page needs --screenshot")
	}

	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	s := &leaseSession{
		c:      c,
		opts:   o,
		leases: brokerv1.NewLeaseServiceClient(conn),
		page:   brokerv1.NewPageServiceClient(conn),
		result: leaseResult{QueuePositions: []int32{}},
	}
	return s.run(ctx)
}

// leaseSession is one run of `client lease`: one lease stream and the page
// commands sent under it.
type leaseSession struct {
	c      *cli
	opts   leaseOptions
	leases brokerv1.LeaseServiceClient
	page   brokerv1.PageServiceClient

	stream grpc.BidiStreamingClient[brokerv1.LeaseRequest, brokerv1.LeaseResponse]
	// sendMu serialises Send between the main goroutine and the renewer;
	// grpc allows one sender at a time (and one receiver beside it).
	sendMu sync.Mutex
	result leaseResult
}

// leaseWatch is the receiver of the lease stream after the grant. Its fields
// are written before done closes and may be read only after.
type leaseWatch struct {
	done    chan struct{}
	revoked *brokerv1.Revoked
	err     error
}

func (s *leaseSession) run(ctx context.Context) error {
	// Ending this context ends the stream, on every return path: without a
	// release the broker reclaims the lease with STREAM_CLOSED.
	streamCtx, cancelStream := context.WithCancel(ctx)
	defer cancelStream()
	stream, err := s.leases.Lease(streamCtx)
	if err != nil {
		return rpcError("acquire", err)
	}
	s.stream = stream
	acquire := &brokerv1.Acquire{
		Labels: s.opts.labels,
		Context: &brokerv1.ContextOptions{
			Viewport:  s.opts.viewport.v,
			UserAgent: s.opts.userAgent,
		},
	}
	if s.opts.ttl > 0 {
		acquire.Ttl = durationpb.New(s.opts.ttl)
	}
	if s.opts.wait > 0 {
		acquire.WaitTimeout = durationpb.New(s.opts.wait)
	}
	if err := s.send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: acquire}}); err != nil {
		return s.sendError("acquire", err)
	}
	granted, err := s.awaitGrant()
	if err != nil {
		return err
	}

	err = s.hold(ctx, cancelStream, granted)
	if s.c.json {
		if err != nil {
			s.result.Error = strings.TrimPrefix(err.Error(), "client: ")
		}
		if werr := writeJSON(s.c.stdout, &s.result); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

func (s *leaseSession) send(req *brokerv1.LeaseRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.stream.Send(req)
}

// sendError reports a failed Send. Send says only io.EOF when the stream has
// ended; the status comes from Recv.
func (s *leaseSession) sendError(what string, err error) error {
	for errors.Is(err, io.EOF) {
		_, err = s.stream.Recv()
	}
	if err == nil || errors.Is(err, io.EOF) {
		return &exitError{code: exitFailure, msg: fmt.Sprintf("client: %s: lease stream ended", what)}
	}
	return rpcError(what, err)
}

// awaitGrant reads the stream until `granted`, reporting queue positions.
func (s *leaseSession) awaitGrant() (*brokerv1.Granted, error) {
	for {
		msg, err := s.stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, &exitError{code: exitFailure, msg: "client: acquire: lease stream ended without a grant"}
		}
		if err != nil {
			return nil, rpcError("acquire", err)
		}
		switch m := msg.GetMsg().(type) {
		case *brokerv1.LeaseResponse_Queued:
			pos := m.Queued.GetPosition()
			s.result.QueuePositions = append(s.result.QueuePositions, pos)
			if !s.c.json {
				fmt.Fprintf(s.c.stderr, "queued: position %d\n", pos)
			}
		case *brokerv1.LeaseResponse_Granted:
			return m.Granted, nil
		case *brokerv1.LeaseResponse_Revoked:
			return nil, &exitError{
				code: exitLeaseEnd,
				msg:  "client: acquire: lease ended before the grant: " + describeRevoked(m.Revoked),
			}
		}
	}
}

// hold runs the steps under a granted lease, then releases it and waits for
// the broker's `revoked`.
func (s *leaseSession) hold(ctx context.Context, cancelStream context.CancelFunc, granted *brokerv1.Granted) error {
	id := granted.GetLeaseId()
	s.result.LeaseID = id
	s.result.Granted = protoJSON(granted)
	if !s.c.json {
		if ttl := granted.GetTtl().AsDuration(); ttl > 0 {
			fmt.Fprintf(s.c.stderr, "lease %s granted (idle TTL %v)\n", id, ttl)
		} else {
			fmt.Fprintf(s.c.stderr, "lease %s granted\n", id)
		}
	}

	// A `revoked` mid-run cancels the step in flight and skips the rest.
	cmdCtx, cancelCmds := context.WithCancel(ctx)
	defer cancelCmds()
	w := s.watch(cancelCmds)
	stopRenew := s.renewEvery(granted.GetTtl().AsDuration() / 3)
	defer func() {
		stopRenew()
		cancelStream()
		<-w.done
	}()

	workErr := s.work(cmdCtx, id)
	stopRenew()
	if ctx.Err() != nil {
		// Interrupted: returning ends the stream and the broker reclaims.
		return rpcError("lease "+id, ctx.Err())
	}
	// Give the lease back, also after a failed step. After a revoke the
	// stream is over and this send fails harmlessly.
	if err := s.send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}}); err == nil {
		_ = s.stream.CloseSend()
	}
	revoked, endErr := s.awaitEnd(ctx, w)
	if revoked != nil {
		s.result.Revoked = protoJSON(revoked)
		if !s.c.json {
			fmt.Fprintf(s.c.stdout, "lease %s ended: %s\n", id, describeRevoked(revoked))
		}
		if revoked.GetReason() != brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED {
			return &exitError{
				code: exitLeaseEnd,
				msg:  fmt.Sprintf("client: lease %s ended early: %s", id, describeRevoked(revoked)),
			}
		}
	}
	if workErr != nil {
		return workErr
	}
	return endErr
}

// watch receives from the stream until `revoked` or its end, then calls
// onEnd.
func (s *leaseSession) watch(onEnd func()) *leaseWatch {
	w := &leaseWatch{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer onEnd()
		for {
			msg, err := s.stream.Recv()
			if err != nil {
				w.err = err
				return
			}
			if rv := msg.GetRevoked(); rv != nil {
				w.revoked = rv
				return
			}
		}
	}()
	return w
}

// renewEvery sends `renew` every d, so a long step (a slow page, a long
// wait-for) does not look idle. The returned stop waits for the renewer.
func (s *leaseSession) renewEvery(d time.Duration) (stop func()) {
	if d <= 0 {
		return func() {}
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		renew := &brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Renew{Renew: &brokerv1.Renew{}}}
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				if err := s.send(renew); err != nil {
					return
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			<-done
		})
	}
}

// awaitEnd waits, at most --timeout, for the stream's last message.
func (s *leaseSession) awaitEnd(ctx context.Context, w *leaseWatch) (*brokerv1.Revoked, error) {
	timer := time.NewTimer(s.c.timeout)
	defer timer.Stop()
	select {
	case <-w.done:
	case <-ctx.Done():
		return nil, rpcError("release", ctx.Err())
	case <-timer.C:
		return nil, &exitError{
			code: exitRPC + 4, // DEADLINE_EXCEEDED
			msg:  fmt.Sprintf("client: release: DEADLINE_EXCEEDED: no revoked within %v", s.c.timeout),
		}
	}
	switch {
	case w.revoked != nil:
		return w.revoked, nil
	case errors.Is(w.err, io.EOF):
		return nil, &exitError{code: exitFailure, msg: "client: release: lease stream ended without a reason"}
	default:
		return nil, rpcError("release", w.err)
	}
}

// work runs the steps in their fixed order and stops at the first failure.
func (s *leaseSession) work(ctx context.Context, id string) error {
	o := s.opts
	out := s.c.stdout
	human := !s.c.json
	timeout := s.c.timeout

	nav, err := callUnary(ctx, timeout, func(ctx context.Context) (*brokerv1.NavigateResponse, error) {
		return s.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: o.url})
	})
	if err != nil {
		return rpcError("navigate "+o.url, err)
	}
	s.result.Navigate = protoJSON(nav)
	if human {
		fmt.Fprintf(out, "navigate: %s (status %d, title %q)\n", nav.GetUrl(), nav.GetStatus(), nav.GetTitle())
	}

	if o.waitFor != "" {
		resp, err := callUnary(ctx, timeout, func(ctx context.Context) (*brokerv1.WaitForSelectorResponse, error) {
			return s.page.WaitForSelector(ctx, &brokerv1.WaitForSelectorRequest{LeaseId: id, Selector: o.waitFor})
		})
		if err != nil {
			return rpcError("wait-for "+o.waitFor, err)
		}
		s.result.WaitFor = &waitForResult{Selector: o.waitFor, Found: resp.GetFound()}
		if human {
			found := "found"
			if !resp.GetFound() {
				found = "not found"
			}
			fmt.Fprintf(out, "wait-for %s: %s\n", o.waitFor, found)
		}
	}

	for _, sel := range o.texts {
		resp, err := callUnary(ctx, timeout, func(ctx context.Context) (*brokerv1.TextResponse, error) {
			return s.page.Text(ctx, &brokerv1.TextRequest{LeaseId: id, Selector: sel})
		})
		if err != nil {
			return rpcError("text "+sel, err)
		}
		texts := resp.GetTexts()
		if texts == nil {
			texts = []string{}
		}
		s.result.Texts = append(s.result.Texts, textResult{Selector: sel, Texts: texts})
		if human {
			if len(texts) == 0 {
				fmt.Fprintf(out, "text %s: no match\n", sel)
			}
			for _, t := range texts {
				fmt.Fprintf(out, "text %s: %s\n", sel, t)
			}
		}
	}

	for _, expr := range o.evals {
		resp, err := callUnary(ctx, timeout, func(ctx context.Context) (*brokerv1.EvaluateResponse, error) {
			return s.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id, Expression: expr})
		})
		if err != nil {
			return rpcError("eval "+expr, err)
		}
		value := json.RawMessage(resp.GetResultJson())
		if !json.Valid(value) {
			value, _ = json.Marshal(resp.GetResultJson())
		}
		s.result.Evals = append(s.result.Evals, evalResult{Expression: expr, Result: value})
		if human {
			fmt.Fprintf(out, "eval %s: %s\n", expr, resp.GetResultJson())
		}
	}

	if o.screenshot != "" {
		resp, err := callUnary(ctx, timeout, func(ctx context.Context) (*brokerv1.ScreenshotResponse, error) {
			return s.page.Screenshot(ctx, &brokerv1.ScreenshotRequest{LeaseId: id, FullPage: o.fullPage})
		})
		if err != nil {
			return rpcError("screenshot", err)
		}
		if err := os.WriteFile(o.screenshot, resp.GetData(), 0o644); err != nil {
			return &exitError{code: exitFailure, msg: fmt.Sprintf("client: screenshot: %v", err)}
		}
		s.result.Screenshot = &screenshotResult{Path: o.screenshot, Bytes: len(resp.GetData())}
		if human {
			fmt.Fprintf(out, "screenshot: %s (%d bytes)\n", o.screenshot, len(resp.GetData()))
		}
	}
	return nil
}

// describeRevoked is "REASON: message", or "REASON" without a message.
func describeRevoked(rv *brokerv1.Revoked) string {
	if rv.GetMessage() == "" {
		return enumName(rv.GetReason())
	}
	return enumName(rv.GetReason()) + ": " + rv.GetMessage()
}
