package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/browserbroker/broker/client"
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
	sessionKey string
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
	fs.StringVar(&o.sessionKey, "session-key", "", "sticky session: reuse this session's cookies and localStorage")
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

	cl, err := c.dial()
	if err != nil {
		return err
	}
	// Close ends the lease stream on every path; without a release (after
	// Ctrl-C) the broker reclaims the lease with STREAM_CLOSED.
	defer cl.Close()
	s := &leaseSession{
		c:      c,
		opts:   o,
		client: cl,
		result: leaseResult{QueuePositions: []int32{}},
	}
	return s.run(ctx)
}

// leaseSession is one run of `client lease`: one lease and the page
// commands sent under it.
type leaseSession struct {
	c      *cli
	opts   leaseOptions
	client *client.Client
	result leaseResult
}

func (s *leaseSession) run(ctx context.Context) error {
	l, err := s.client.Acquire(ctx, client.AcquireOptions{
		TTL:         s.opts.ttl,
		WaitTimeout: s.opts.wait,
		Labels:      s.opts.labels,
		SessionKey:  s.opts.sessionKey,
		Context: &brokerv1.ContextOptions{
			Viewport:  s.opts.viewport.v,
			UserAgent: s.opts.userAgent,
		},
		OnQueued: func(pos int) {
			s.result.QueuePositions = append(s.result.QueuePositions, int32(pos))
			if !s.c.json {
				fmt.Fprintf(s.c.stderr, "queued: position %d\n", pos)
			}
		},
	})
	if err != nil {
		var re *client.RevokedError
		if errors.As(err, &re) {
			return &exitError{
				code: exitLeaseEnd,
				msg:  "client: acquire: lease ended before the grant: " + describeEnd(re.Reason, re.Message),
			}
		}
		return callError("acquire", err)
	}

	err = s.hold(ctx, l)
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

// hold runs the steps under a granted lease (which renews itself), then
// releases it and waits for the broker's answer. A lease that ends mid-run
// cancels the step in flight, and the rest fail at once.
func (s *leaseSession) hold(ctx context.Context, l *client.Lease) error {
	id := l.ID()
	s.result.LeaseID = id
	s.result.Granted = protoJSON(grantedMessage(l))
	if !s.c.json {
		if ttl := l.TTL(); ttl > 0 {
			fmt.Fprintf(s.c.stderr, "lease %s granted (idle TTL %v)\n", id, ttl)
		} else {
			fmt.Fprintf(s.c.stderr, "lease %s granted\n", id)
		}
	}

	workErr := s.work(ctx, l)
	if ctx.Err() != nil {
		// Interrupted: returning ends the stream and the broker reclaims.
		return rpcError("lease "+id, ctx.Err())
	}
	// Give the lease back, also after a failed step. After the lease ended
	// Release only reports why.
	relCtx, cancel := context.WithTimeout(ctx, s.c.timeout)
	defer cancel()
	reason, endErr := l.Release(relCtx)
	if endErr == nil {
		_, message := l.Reason()
		s.result.Revoked = protoJSON(&brokerv1.Revoked{Reason: reason, Message: message})
		if !s.c.json {
			fmt.Fprintf(s.c.stdout, "lease %s ended: %s\n", id, describeEnd(reason, message))
		}
		if reason != brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED {
			return &exitError{
				code: exitLeaseEnd,
				msg:  fmt.Sprintf("client: lease %s ended early: %s", id, describeEnd(reason, message)),
			}
		}
	}
	if workErr != nil {
		return workErr
	}
	switch {
	case endErr == nil:
		return nil
	case ctx.Err() != nil:
		return rpcError("release", ctx.Err())
	case relCtx.Err() != nil:
		return &exitError{
			code: exitRPC + int(codes.DeadlineExceeded),
			msg:  fmt.Sprintf("client: release: DEADLINE_EXCEEDED: no revoked within %v", s.c.timeout),
		}
	default:
		return callError("release", endErr)
	}
}

// grantedMessage is the broker's grant, for the --json document.
func grantedMessage(l *client.Lease) *brokerv1.Granted {
	g := proto.Clone(l.Granted()).(*brokerv1.Granted)
	if t := l.ExpiresAt(); !t.IsZero() {
		g.ExpiresAt = timestamppb.New(t) // as of the latest renew
	}
	return g
}

// callError reports a failed call: its gRPC status by the convention of
// rpcError, or (for a broker that ended a stream without a word) exit 1.
func callError(what string, err error) error {
	if _, ok := status.FromError(err); ok {
		return rpcError(what, err)
	}
	return &exitError{code: exitFailure, msg: fmt.Sprintf("client: %s: %v", what, err)}
}

// work runs the steps in their fixed order and stops at the first failure.
func (s *leaseSession) work(ctx context.Context, l *client.Lease) error {
	o := s.opts
	out := s.c.stdout
	human := !s.c.json
	timeout := s.c.timeout

	nav, err := callUnary(ctx, timeout, func(ctx context.Context) (*brokerv1.NavigateResponse, error) {
		return l.Navigate(ctx, o.url)
	})
	if err != nil {
		return rpcError("navigate "+o.url, err)
	}
	s.result.Navigate = protoJSON(nav)
	if human {
		fmt.Fprintf(out, "navigate: %s (status %d, title %q)\n", nav.GetUrl(), nav.GetStatus(), nav.GetTitle())
	}

	if o.waitFor != "" {
		found, err := callUnary(ctx, timeout, func(ctx context.Context) (bool, error) {
			return l.WaitForSelector(ctx, o.waitFor)
		})
		if err != nil {
			return rpcError("wait-for "+o.waitFor, err)
		}
		s.result.WaitFor = &waitForResult{Selector: o.waitFor, Found: found}
		if human {
			what := "found"
			if !found {
				what = "not found"
			}
			fmt.Fprintf(out, "wait-for %s: %s\n", o.waitFor, what)
		}
	}

	for _, sel := range o.texts {
		texts, err := callUnary(ctx, timeout, func(ctx context.Context) ([]string, error) {
			return l.Text(ctx, sel)
		})
		if err != nil {
			return rpcError("text "+sel, err)
		}
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
		raw, err := callUnary(ctx, timeout, func(ctx context.Context) (json.RawMessage, error) {
			return l.Evaluate(ctx, expr, nil)
		})
		if err != nil {
			return rpcError("eval "+expr, err)
		}
		value := raw
		if !json.Valid(value) {
			value, _ = json.Marshal(string(raw))
		}
		s.result.Evals = append(s.result.Evals, evalResult{Expression: expr, Result: value})
		if human {
			fmt.Fprintf(out, "eval %s: %s\n", expr, raw)
		}
	}

	if o.screenshot != "" {
		data, err := callUnary(ctx, timeout, func(ctx context.Context) ([]byte, error) {
			return l.Screenshot(ctx, client.ScreenshotOptions{FullPage: o.fullPage})
		})
		if err != nil {
			return rpcError("screenshot", err)
		}
		if err := os.WriteFile(o.screenshot, data, 0o644); err != nil {
			return &exitError{code: exitFailure, msg: fmt.Sprintf("client: screenshot: %v", err)}
		}
		s.result.Screenshot = &screenshotResult{Path: o.screenshot, Bytes: len(data)}
		if human {
			fmt.Fprintf(out, "screenshot: %s (%d bytes)\n", o.screenshot, len(data))
		}
	}
	return nil
}

// describeEnd is "REASON: message", or "REASON" without a message.
func describeEnd(reason brokerv1.ReclaimReason, message string) string {
	if message == "" {
		return enumName(reason)
	}
	return enumName(reason) + ": " + message
}
