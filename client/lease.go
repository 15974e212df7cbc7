package client

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// AcquireOptions describe the wanted lease. The zero value asks for the
// broker's defaults.
type AcquireOptions struct {
	// TTL is the idle TTL: the broker reclaims the lease (TTL_EXPIRED) when
	// neither a renew nor a page command arrives for this long. The Lease
	// renews on its own, so the TTL bounds how long a lease outlives a
	// client that hangs without closing its connection. Zero: the broker's
	// default (--default-ttl, 60s).
	TTL time.Duration
	// WaitTimeout bounds the wait in the broker's queue; past it Acquire
	// fails with RESOURCE_EXHAUSTED. Zero: the broker's default
	// (--default-wait, 30s).
	WaitTimeout time.Duration
	// MaxLifetime bounds the lease's whole life (MAX_LIFETIME), capped by
	// the broker's --max-lifetime. Zero: the broker's maximum.
	MaxLifetime time.Duration
	// Labels are free-form key/value pairs shown by the admin API and
	// usable as a filter in [Client.Leases].
	Labels map[string]string
	// Context configures the lease's browser context (viewport, user
	// agent, locale, time zone, extra headers, proxy, mobile emulation,
	// JavaScript, TLS errors). It is the API message itself, so fields the
	// API adds are usable at once. Nil: the broker's defaults (1280x720,
	// the browser's user agent and locale).
	Context *brokerv1.ContextOptions
	// SessionKey names a sticky session: the lease gets that session's
	// browser context (cookies, localStorage) when it is warm, else one
	// restored from its last saved state. One lease holds a session at a
	// time; Acquire waits for it under WaitTimeout. See [Lease.Generation].
	SessionKey string
	// OnQueued, if not nil, is called with the position in the broker's
	// queue (1 is next) whenever it changes while Acquire waits. It runs
	// on Acquire's goroutine, before Acquire returns.
	OnQueued func(position int)
	// RenewInterval is how often the Lease sends renew. Zero: a third of
	// the TTL the broker granted. Negative: never, so that only page
	// commands keep the lease alive and an idle worker loses it after the
	// TTL.
	RenewInterval time.Duration
}

// Acquire asks the broker for a lease and waits until it is granted.
//
// ctx bounds the wait only, not the lease: when ctx ends while the acquire
// waits in the queue, the acquire leaves the queue and Acquire returns a
// CANCELLED or DEADLINE_EXCEEDED status. Values of ctx (such as outgoing
// metadata) travel with the lease stream. A failed acquire returns the
// broker's status: RESOURCE_EXHAUSTED (no capacity within the wait timeout,
// or the queue is full), INVALID_ARGUMENT, UNAVAILABLE (broker unreachable
// or shutting down).
//
// The granted lease is held until [Lease.Release], until the broker ends it,
// or until [Client.Close].
func (c *Client) Acquire(ctx context.Context, o AcquireOptions) (*Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if !c.track() {
		return nil, errClientClosed
	}
	streamCtx, cancelStream := context.WithCancelCause(context.WithoutCancel(ctx))
	stopClose := context.AfterFunc(c.closing, func() { cancelStream(localEnd{errClientClosed}) })
	fail := func(err error) (*Lease, error) {
		cancelStream(nil)
		stopClose()
		c.streams.Done()
		return nil, err
	}

	// ctx ends the wait; the stream outlives it once granted.
	stopWait := context.AfterFunc(ctx, func() {
		cancelStream(localEnd{status.FromContextError(ctx.Err()).Err()})
	})
	granted, err := c.acquire(streamCtx, o)
	if !stopWait() {
		// ctx ended: the wait is over, also for a grant that raced with it
		// (ending the stream makes the broker reclaim that one).
		return fail(status.FromContextError(ctx.Err()).Err())
	}
	if err != nil {
		return fail(streamError(streamCtx, err, errNoGrant))
	}

	l := &Lease{
		c:            c,
		granted:      granted.granted,
		id:           granted.granted.GetLeaseId(),
		ttl:          granted.granted.GetTtl().AsDuration(),
		expiresAt:    timeOrZero(granted.granted.GetExpiresAt()),
		maxExpiresAt: timeOrZero(granted.granted.GetMaxExpiresAt()),
		stream:       granted.stream,
		streamCtx:    streamCtx,
		cancelStream: cancelStream,
		stopClose:    stopClose,
		stopRenew:    make(chan struct{}),
		renewDone:    make(chan struct{}),
		done:         make(chan struct{}),
	}
	every := o.RenewInterval
	if every == 0 {
		every = l.ttl / 3
	}
	if every > 0 {
		go l.renewEvery(every)
	} else {
		close(l.renewDone)
	}
	go l.receive()
	return l, nil
}

type grant struct {
	stream  grpc.BidiStreamingClient[brokerv1.LeaseRequest, brokerv1.LeaseResponse]
	granted *brokerv1.Granted
}

// acquire opens the stream, sends acquire and reads until granted.
func (c *Client) acquire(ctx context.Context, o AcquireOptions) (grant, error) {
	stream, err := c.leases.Lease(ctx)
	if err != nil {
		return grant{}, err
	}
	acq := &brokerv1.Acquire{
		Ttl:         durationOrNil(o.TTL),
		WaitTimeout: durationOrNil(o.WaitTimeout),
		MaxLifetime: durationOrNil(o.MaxLifetime),
		Labels:      o.Labels,
		Context:     o.Context,
		SessionKey:  o.SessionKey,
	}
	if err := stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: acq}}); err != nil {
		// Send reports only io.EOF once the stream has ended; the status
		// comes from Recv.
		if !errors.Is(err, io.EOF) {
			return grant{}, err
		}
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			return grant{}, err
		}
		switch m := msg.GetMsg().(type) {
		case *brokerv1.LeaseResponse_Queued:
			if o.OnQueued != nil {
				o.OnQueued(int(m.Queued.GetPosition()))
			}
		case *brokerv1.LeaseResponse_Granted:
			return grant{stream: stream, granted: m.Granted}, nil
		case *brokerv1.LeaseResponse_Revoked:
			return grant{}, &RevokedError{Reason: m.Revoked.GetReason(), Message: m.Revoked.GetMessage()}
		}
	}
}

// Errors for a broker that ends a lease stream with OK at the wrong time.
var (
	errNoGrant  = errors.New("lease stream ended without a grant")
	errNoReason = errors.New("lease stream ended without a reason")
)

// localEnd is the cause with which this package cancels a lease stream, so
// that the lease reports why (client closed, release timed out, acquire
// context ended) instead of the stream's CANCELLED.
type localEnd struct{ err error }

func (e localEnd) Error() string { return e.err.Error() }

// streamError is the error of a lease stream that ended with err: the cause
// this package cancelled it with, else err (ifEOF for an OK end).
func streamError(streamCtx context.Context, err, ifEOF error) error {
	var le localEnd
	if errors.As(context.Cause(streamCtx), &le) {
		return le.err
	}
	if errors.Is(err, io.EOF) {
		return ifEOF
	}
	return err
}

// Lease is a granted lease on one browser context with one page. Give it
// back with [Lease.Release] when done; [Client.Close] ends leases still
// held. Its methods are safe for concurrent use; the broker runs a lease's
// page commands one at a time, in arrival order.
type Lease struct {
	c            *Client
	granted      *brokerv1.Granted
	id           string
	ttl          time.Duration
	maxExpiresAt time.Time

	stream grpc.BidiStreamingClient[brokerv1.LeaseRequest, brokerv1.LeaseResponse]
	// streamCtx is cancelled when the lease ends, and only then; page
	// commands in flight watch it.
	streamCtx    context.Context
	cancelStream context.CancelCauseFunc
	stopClose    func() bool
	// sendMu serialises Send between the renewer and Release: a gRPC
	// stream allows one sender at a time (and one receiver beside it).
	sendMu sync.Mutex

	stopRenewOnce sync.Once
	stopRenew     chan struct{} // closed to stop the renewer
	renewDone     chan struct{} // closed when the renewer returned

	releaseOnce sync.Once

	mu        sync.Mutex
	expiresAt time.Time // guarded by mu

	done chan struct{}
	err  error // written before done is closed; read after
}

// ID names the lease in the broker's API and logs.
func (l *Lease) ID() string { return l.id }

// Granted is the broker's grant message, for fields this package has no
// method for. Do not modify it.
func (l *Lease) Granted() *brokerv1.Granted { return l.granted }

// Generation is a sticky session's fencing number: one more than the
// session's previous grant, across broker restarts too. Pass it along with
// writes made on the session's behalf, and refuse writes with a lower one:
// they come from a holder that lost the session. 0 without a SessionKey.
func (l *Lease) Generation() uint64 { return l.granted.GetGeneration() }

// TTL is the idle TTL the broker granted: the requested one or its default.
func (l *Lease) TTL() time.Duration { return l.ttl }

// ExpiresAt is when the broker expires the lease unless renewed or used, as
// of the grant or the latest renew. The broker adds a small random jitter to
// the TTL, so this is the real deadline.
func (l *Lease) ExpiresAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.expiresAt
}

// MaxExpiresAt is when the lease ends at the latest, whatever the activity.
func (l *Lease) MaxExpiresAt() time.Time { return l.maxExpiresAt }

// Done is closed when the lease has ended: the broker said why (revoked,
// released, TTL expired, …) or the stream broke. The lease's goroutines
// have returned by then. [Lease.Err] and [Lease.Reason] say why.
func (l *Lease) Done() <-chan struct{} { return l.done }

// Err is nil while the lease is held. Once [Lease.Done] is closed it is a
// [*RevokedError] when the broker ended the lease (also after a release:
// then its Reason is RELEASED), or else the gRPC status the stream broke
// with (such as UNAVAILABLE when the connection was lost, or CANCELLED
// after [Client.Close]).
func (l *Lease) Err() error {
	select {
	case <-l.done:
		return l.err
	default:
		return nil
	}
}

// Reason is the broker's reason for ending the lease and its message, once
// [Lease.Done] is closed. It is RECLAIM_REASON_UNSPECIFIED while the lease
// is held, and when the stream broke without the broker saying why. Treat
// values this package does not name (added to the API later) as "ended for
// another reason".
func (l *Lease) Reason() (brokerv1.ReclaimReason, string) {
	var re *RevokedError
	if errors.As(l.Err(), &re) {
		return re.Reason, re.Message
	}
	return brokerv1.ReclaimReason_RECLAIM_REASON_UNSPECIFIED, ""
}

// Release gives the lease back and waits for the broker to confirm, which
// it does once the browser context is closed. It returns the reason the
// lease ended: RELEASED, or the reason it had already ended for (such as
// REVOKED or TTL_EXPIRED), with a nil error. The error is non-nil only when
// the broker's answer did not arrive: the stream broke (its status is
// returned), or ctx ended (then the stream is cut and the broker reclaims
// the lease on its own).
//
// Release is idempotent and safe to call concurrently and after
// [Lease.Done]: every call returns the same outcome. When it returns, the
// lease's goroutines have returned too.
func (l *Lease) Release(ctx context.Context) (brokerv1.ReclaimReason, error) {
	l.releaseOnce.Do(func() {
		l.stopRenewer()
		select {
		case <-l.done:
			return
		default:
		}
		// A failed send means the stream is over; receive reports why.
		_ = l.send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}})
	})
	select {
	case <-l.done:
	case <-ctx.Done():
		l.cancelStream(localEnd{status.FromContextError(ctx.Err()).Err()})
		<-l.done
	}
	var re *RevokedError
	if errors.As(l.err, &re) {
		return re.Reason, nil
	}
	return brokerv1.ReclaimReason_RECLAIM_REASON_UNSPECIFIED, l.err
}

func (l *Lease) send(req *brokerv1.LeaseRequest) error {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	return l.stream.Send(req)
}

// receive reads the stream until the broker's revoked or the stream's end,
// then ends the lease.
func (l *Lease) receive() {
	defer l.c.streams.Done()
	var err error
	for err == nil {
		msg, rerr := l.stream.Recv()
		if rerr != nil {
			err = streamError(l.streamCtx, rerr, errNoReason)
			break
		}
		switch m := msg.GetMsg().(type) {
		case *brokerv1.LeaseResponse_Renewed:
			if t := timeOrZero(m.Renewed.GetExpiresAt()); !t.IsZero() {
				l.mu.Lock()
				l.expiresAt = t
				l.mu.Unlock()
			}
		case *brokerv1.LeaseResponse_Revoked:
			// The broker's last message; the stream ends with OK after it.
			err = &RevokedError{LeaseID: l.id, Reason: m.Revoked.GetReason(), Message: m.Revoked.GetMessage()}
		}
	}
	// The lease is over: cut the stream (a no-op when it ended already),
	// which also cancels page commands in flight.
	l.cancelStream(nil)
	l.stopClose()
	l.stopRenewer()
	l.err = err
	close(l.done)
}

// renewEvery sends renew every d until stopped or a send fails (the stream
// has ended; receive reports why).
func (l *Lease) renewEvery(d time.Duration) {
	defer close(l.renewDone)
	t := time.NewTicker(d)
	defer t.Stop()
	renew := &brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Renew{Renew: &brokerv1.Renew{}}}
	for {
		select {
		case <-l.stopRenew:
			return
		case <-t.C:
			if err := l.send(renew); err != nil {
				return
			}
		}
	}
}

// stopRenewer stops the renewer and waits for it.
func (l *Lease) stopRenewer() {
	l.stopRenewOnce.Do(func() { close(l.stopRenew) })
	<-l.renewDone
}

// RevokedError says that the broker ended a lease, and why. It is what
// [Lease.Err] returns once the broker ended the lease, and what page methods
// return after that. It carries the FAILED_PRECONDITION status the broker
// gives commands on a reclaimed lease, so status.Code works on it too.
type RevokedError struct {
	// LeaseID names the lease; empty when the broker ended the stream
	// before the grant.
	LeaseID string
	// Reason is the broker's reason: RELEASED after a release, else the
	// first trigger that ended the lease.
	Reason brokerv1.ReclaimReason
	// Message is the broker's human-readable detail.
	Message string
}

// Error is "lease ID ended: REASON: message".
func (e *RevokedError) Error() string {
	var b strings.Builder
	if e.LeaseID == "" {
		b.WriteString("lease ended before the grant: ")
	} else {
		b.WriteString("lease " + e.LeaseID + " ended: ")
	}
	b.WriteString(reasonName(e.Reason))
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	return b.String()
}

// status.FromError and status.Code see a RevokedError's status.
var _ interface{ GRPCStatus() *status.Status } = (*RevokedError)(nil)

// GRPCStatus is FAILED_PRECONDITION with the error's text, what the broker
// answers a command on a reclaimed lease.
func (e *RevokedError) GRPCStatus() *status.Status {
	return status.New(codes.FailedPrecondition, e.Error())
}

// reasonName is a reclaim reason without its enum prefix: "REVOKED" for
// RECLAIM_REASON_REVOKED, and the number for a value this package does not
// know.
func reasonName(r brokerv1.ReclaimReason) string {
	return strings.TrimPrefix(r.String(), "RECLAIM_REASON_")
}

func durationOrNil(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}
