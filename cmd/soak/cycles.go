package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// kind is one way a lease cycle ends.
type kind int

const (
	kindRelease   kind = iota // navigate, evaluate, release: RELEASED
	kindCancel                // stream cancelled while a navigation hangs: STREAM_CLOSED, the command ABORTED
	kindCloseSend             // sending side closed (half-close), lease still usable, short TTL: TTL_EXPIRED
	kindTTL                   // short idle TTL, no renew: TTL_EXPIRED
	kindRevoke                // AdminService.RevokeLease: REVOKED
	kindRace                  // release and revoke at once: one wins, the other is absorbed
	kindHang                  // a hanging page and a spinning script time out, the lease stays usable; release
	kindCrash                 // the page's renderer is killed: PAGE_CRASHED
	numKinds
)

var kindNames = [numKinds]string{"release", "cancel", "close-send", "ttl", "revoke", "release+revoke", "hang", "crash"}

func (k kind) String() string { return kindNames[k] }

// kindWeights is the mix of cycles.
var kindWeights = [numKinds]int{
	kindRelease:   3,
	kindCancel:    2,
	kindCloseSend: 1,
	kindTTL:       1,
	kindRevoke:    2,
	kindRace:      2,
	kindHang:      1,
	kindCrash:     1,
}

const (
	// shortTTL is the idle TTL of kindTTL and kindCloseSend cycles.
	shortTTL = 500 * time.Millisecond
	// hangTimeout is the time limit of the commands that never end.
	hangTimeout = 300 * time.Millisecond
	// navStopBound is how soon a timed-out navigation's request closes
	// on a machine that keeps up; navStopLimit is how long the soak waits
	// for it before calling it not stopped. The commands after it wait
	// for it, so a late stop cannot hide under them; on a machine loaded
	// far beyond its cores a stop can take longer than the bound, and is
	// reported apart.
	navStopBound = 2 * time.Second
	navStopLimit = 15 * time.Second
	// cycleTimeout bounds one cycle, queue wait included.
	cycleTimeout = 2 * time.Minute
)

// workerScript starts a dedicated worker in the page, which marks the
// page's renderer (see markedRenderer).
const workerScript = `(() => {
	window.__soak = new Worker(URL.createObjectURL(new Blob(["setInterval(() => {}, 1000)"])));
	return true;
})()`

// soaker runs lease cycles against one broker.
type soaker struct {
	site   *site
	broker *brokerProc
	leases brokerv1.LeaseServiceClient
	page   brokerv1.PageServiceClient
	admin  brokerv1.AdminServiceClient

	// crashMu serializes crash cycles from marking a renderer to its
	// lease's end, so exactly one renderer carries the mark.
	crashMu sync.Mutex

	mu        sync.Mutex
	byKind    [numKinds]int
	byReason  map[brokerv1.ReclaimReason]uint64 // what the holders were told (STREAM_CLOSED for cancels)
	errs      []string
	crashMax  time.Duration // renderer kill to revoked{PAGE_CRASHED}
	raceRes   map[string]int
	completed int
	// Hanging navigations whose request closed within navStopBound of
	// their DEADLINE_EXCEEDED, within navStopLimit, and those still
	// loading then.
	navStopped, navStoppedLate, navNotStopped int
	navStopMax                                time.Duration // slowest of the stopped ones
	navNeverSent                              int           // stopped before their request reached the site
	// Short-TTL leases that expired before a planned command arrived.
	expiredEarly int
	// Hang cycles whose lease was reclaimed (PAGE_CRASHED) because the page
	// of the cancelled script could not be replaced in time.
	pageNotReplaced int
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (s *soaker) count(n *int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*n++
}

func newSoaker(s *site, b *brokerProc, conn *grpc.ClientConn) *soaker {
	return &soaker{
		site:     s,
		broker:   b,
		leases:   brokerv1.NewLeaseServiceClient(conn),
		page:     brokerv1.NewPageServiceClient(conn),
		admin:    brokerv1.NewAdminServiceClient(conn),
		byReason: map[brokerv1.ReclaimReason]uint64{},
		raceRes:  map[string]int{},
	}
}

// run runs cycle n of kind k and records its outcome.
func (s *soaker) run(ctx context.Context, n int, k kind) {
	ctx, cancel := context.WithTimeout(ctx, cycleTimeout)
	defer cancel()
	reason, err := s.cycle(ctx, n, k)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byKind[k]++
	s.completed++
	if reason != brokerv1.ReclaimReason_RECLAIM_REASON_UNSPECIFIED {
		s.byReason[reason]++
	}
	if err != nil {
		s.errs = append(s.errs, fmt.Sprintf("cycle %d (%v): %v", n, k, err))
	}
}

func (s *soaker) done() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.completed
}

// cycle runs one lease from acquire to its end. It returns the reason the
// broker must have counted for it (UNSPECIFIED when the lease was never
// granted) and what went wrong.
func (s *soaker) cycle(ctx context.Context, n int, k kind) (brokerv1.ReclaimReason, error) {
	ttl := time.Duration(0)
	if k == kindTTL || k == kindCloseSend {
		ttl = shortTTL
	}
	h, err := s.acquire(ctx, ttl)
	if err != nil {
		return 0, err
	}
	defer h.cancel()
	c := strconv.Itoa(n)
	pageURL := s.site.URL + "/page/" + c

	sent := time.Now()
	if k != kindCancel {
		_, err := s.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: h.id, Url: pageURL})
		if (k == kindTTL || k == kindCloseSend) && expiredByTTL(err) {
			return s.expiredEarlyCycle(ctx, h)
		}
		if err != nil {
			return h.endReason(ctx, fmt.Errorf("Navigate(%s) = %w", pageURL, err))
		}
	}
	switch k {
	case kindRelease:
		r, err := s.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: h.id, Expression: "document.title"})
		if err != nil || r.GetResultJson() != strconv.Quote("page "+c) {
			return h.endReason(ctx, fmt.Errorf("Evaluate(document.title) = %v, %v; want %q", r, err, "page "+c))
		}
		return h.release(ctx, brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED)

	case kindCancel:
		arrived := s.site.hang(c).arrived
		defer s.site.forget(c)
		nav := make(chan error, 1)
		go func() {
			_, err := s.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: h.id, Url: s.site.URL + "/hang?c=" + c})
			nav <- err
		}()
		select {
		case <-arrived:
		case err := <-nav:
			return h.endReason(ctx, fmt.Errorf("Navigate(/hang) = %v, want it to hang", err))
		case <-ctx.Done():
			return h.endReason(ctx, errors.New("Navigate(/hang) never reached the site"))
		}
		h.cancel()
		select {
		case err := <-nav:
			if status.Code(err) != codes.Aborted {
				return brokerv1.ReclaimReason_RECLAIM_REASON_STREAM_CLOSED, fmt.Errorf("Navigate running when the stream was cancelled = %v, want ABORTED", err)
			}
		case <-time.After(10 * time.Second):
			return brokerv1.ReclaimReason_RECLAIM_REASON_STREAM_CLOSED, errors.New("Navigate running when the stream was cancelled still runs 10s later")
		}
		return brokerv1.ReclaimReason_RECLAIM_REASON_STREAM_CLOSED, nil

	case kindCloseSend:
		// A half-close ends nothing (README, STREAM_CLOSED): the lease
		// lives on, usable by page commands, until its TTL.
		if err := h.stream.CloseSend(); err != nil {
			return h.endReason(ctx, fmt.Errorf("CloseSend() = %w", err))
		}
		lastSent := time.Now()
		if err := s.onePlusOne(ctx, h.id, "after a half-close"); err != nil {
			if expiredByTTL(errors.Unwrap(err)) {
				return s.expiredEarlyCycle(ctx, h)
			}
			return h.endReason(ctx, err)
		}
		reason, err := h.want(ctx, brokerv1.ReclaimReason_RECLAIM_REASON_TTL_EXPIRED)
		if err == nil && h.endAt.Sub(lastSent) < shortTTL {
			err = fmt.Errorf("TTL_EXPIRED %v after the last command was sent, want at least the TTL %v", h.endAt.Sub(lastSent), shortTTL)
		}
		return reason, err

	case kindTTL:
		// The broker's last activity is the end of the Navigate, which came
		// after we sent it.
		reason, err := h.want(ctx, brokerv1.ReclaimReason_RECLAIM_REASON_TTL_EXPIRED)
		if err == nil && h.endAt.Sub(sent) < shortTTL {
			err = fmt.Errorf("TTL_EXPIRED %v after the last command was sent, want at least the TTL %v", h.endAt.Sub(sent), shortTTL)
		}
		return reason, err

	case kindRevoke:
		r, err := s.admin.RevokeLease(ctx, &brokerv1.RevokeLeaseRequest{LeaseId: h.id, Message: "soak"})
		if err != nil || r.GetReason() != brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED {
			return h.endReason(ctx, fmt.Errorf("RevokeLease() = %v, %v; want REVOKED", r, err))
		}
		return h.want(ctx, brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED)

	case kindRace:
		revoked := make(chan string, 1)
		go func() {
			r, err := s.admin.RevokeLease(ctx, &brokerv1.RevokeLeaseRequest{LeaseId: h.id, Message: "soak race"})
			switch {
			case err == nil:
				revoked <- "revoke answered " + reasonName(r.GetReason())
			case status.Code(err) == codes.NotFound || status.Code(err) == codes.FailedPrecondition:
				revoked <- "revoke answered " + status.Code(err).String()
			default:
				revoked <- "error: " + err.Error()
			}
		}()
		sendErr := h.stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}})
		res := <-revoked
		end := h.wait(ctx)
		s.mu.Lock()
		s.raceRes[res]++
		s.mu.Unlock()
		switch {
		case sendErr != nil:
			return end.reason(), fmt.Errorf("send release: %w", sendErr)
		case strings.HasPrefix(res, "error:"):
			return end.reason(), fmt.Errorf("RevokeLease racing a release: %s", res)
		case end.err != nil:
			return end.reason(), end.err
		}
		if r := end.reason(); r != brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED && r != brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED {
			return r, fmt.Errorf("release racing a revoke ended %v, want RELEASED or REVOKED", end.revoked)
		}
		return end.reason(), nil

	case kindHang:
		defer s.site.forget(c)
		_, err := s.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: h.id, Url: s.site.URL + "/hang?c=" + c, Timeout: durationpb.New(hangTimeout)})
		if status.Code(err) != codes.DeadlineExceeded {
			return h.endReason(ctx, fmt.Errorf("Navigate(/hang, timeout %v) = %v, want DEADLINE_EXCEEDED", hangTimeout, err))
		}
		// The README promises the command is stopped in the browser: the
		// page's request for /hang must close, before any other command
		// could close it by the way. A navigation stopped before its
		// request reached the site is stopped too, unless it arrives late.
		hr := s.site.hang(c)
		timedOut := time.Now()
		stopped := false
		select {
		case <-hr.ended:
			stopped = true
		case <-time.After(navStopLimit):
		}
		took := time.Since(timedOut)
		s.mu.Lock()
		switch {
		case stopped && took > navStopBound:
			s.navStoppedLate++
			s.navStopMax = max(s.navStopMax, took)
		case stopped:
			s.navStopped++
			s.navStopMax = max(s.navStopMax, took)
		case isClosed(hr.arrived):
			s.navNotStopped++
		default:
			s.navNeverSent++
		}
		s.mu.Unlock()
		if err := s.onePlusOne(ctx, h.id, "after the hanging navigation"); err != nil {
			return h.endReason(ctx, err)
		}
		_, err = s.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: h.id, Expression: "(() => { while (true) {} })()", Timeout: durationpb.New(hangTimeout)})
		if pageNotReplaced(err) {
			return s.pageNotReplacedCycle(ctx, h)
		}
		if status.Code(err) != codes.DeadlineExceeded {
			return h.endReason(ctx, fmt.Errorf("Evaluate(while (true) {}, timeout %v) = %v, want DEADLINE_EXCEEDED", hangTimeout, err))
		}
		if err := s.onePlusOne(ctx, h.id, "after the spinning script"); err != nil {
			if pageNotReplaced(errors.Unwrap(err)) {
				return s.pageNotReplacedCycle(ctx, h)
			}
			return h.endReason(ctx, err)
		}
		if !stopped && !isClosed(hr.arrived) && isClosed(s.site.hang(c).arrived) {
			return h.endReason(ctx, errors.New("the timed-out Navigate(/hang) reached the site later, under the next commands"))
		}
		return h.release(ctx, brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED)

	case kindCrash:
		s.crashMu.Lock()
		defer s.crashMu.Unlock()
		r, err := s.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: h.id, Expression: workerScript})
		if err != nil || r.GetResultJson() != "true" {
			return h.endReason(ctx, fmt.Errorf("Evaluate(start a worker) = %v, %v", r, err))
		}
		pid, err := markedRenderer(s.broker.pid(), 10*time.Second)
		if err != nil {
			return h.endReason(ctx, err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return h.endReason(ctx, fmt.Errorf("kill renderer %d: %w", pid, err))
		}
		killed := time.Now()
		reason, err := h.want(ctx, brokerv1.ReclaimReason_RECLAIM_REASON_PAGE_CRASHED)
		if err == nil {
			s.mu.Lock()
			s.crashMax = max(s.crashMax, h.endAt.Sub(killed))
			s.mu.Unlock()
		}
		return reason, err
	}
	return h.endReason(ctx, fmt.Errorf("unknown kind %d", k))
}

func (s *soaker) onePlusOne(ctx context.Context, id, when string) error {
	r, err := s.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id, Expression: "1+1"})
	if err != nil {
		return fmt.Errorf("Evaluate(1+1) %s: %w", when, err)
	}
	if r.GetResultJson() != "2" {
		return fmt.Errorf("Evaluate(1+1) %s = %v; want 2", when, r)
	}
	return nil
}

// expiredByTTL reports whether a page command failed because its lease
// had already expired by its idle TTL.
func expiredByTTL(err error) bool {
	return status.Code(err) == codes.FailedPrecondition && strings.Contains(err.Error(), "TTL_EXPIRED")
}

// pageNotReplaced reports whether a command failed because its lease was
// reclaimed when the page of a cancelled script could not be replaced in
// time (README, "Page commands"): on a machine loaded far beyond its cores
// a new page can take longer than --close-timeout to open.
func pageNotReplaced(err error) bool {
	c := status.Code(err)
	return (c == codes.Aborted || c == codes.FailedPrecondition) &&
		strings.Contains(err.Error(), "PAGE_CRASHED") && strings.Contains(err.Error(), "could not replace the page")
}

// pageNotReplacedCycle ends a cycle whose lease was reclaimed that way, as
// documented: the holder must be told PAGE_CRASHED.
func (s *soaker) pageNotReplacedCycle(ctx context.Context, h *held) (brokerv1.ReclaimReason, error) {
	s.count(&s.pageNotReplaced)
	return h.want(ctx, brokerv1.ReclaimReason_RECLAIM_REASON_PAGE_CRASHED)
}

// expiredEarlyCycle ends a short-TTL cycle whose lease expired before a
// command the cycle planned: on a machine loaded far beyond its cores the
// short TTL can pass between two commands (or the grant and the first).
// The lease expired as it should, only earlier than the cycle planned; the
// holder must still be told TTL_EXPIRED.
func (s *soaker) expiredEarlyCycle(ctx context.Context, h *held) (brokerv1.ReclaimReason, error) {
	s.count(&s.expiredEarly)
	return h.want(ctx, brokerv1.ReclaimReason_RECLAIM_REASON_TTL_EXPIRED)
}

// held is a granted lease and its stream.
type held struct {
	id     string
	stream brokerv1.LeaseService_LeaseClient
	cancel context.CancelFunc
	end    chan streamEnd
	endAt  time.Time // when revoked came (set by wait)
}

// streamEnd is how a lease stream ended.
type streamEnd struct {
	revoked *brokerv1.Revoked // nil when none came
	at      time.Time
	err     error // nil: the stream ended OK
}

func (e streamEnd) reason() brokerv1.ReclaimReason { return e.revoked.GetReason() }

func (s *soaker) acquire(ctx context.Context, ttl time.Duration) (*held, error) {
	sctx, cancel := context.WithCancel(ctx)
	stream, err := s.leases.Lease(sctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("Lease() = %w", err)
	}
	acq := &brokerv1.Acquire{WaitTimeout: durationpb.New(cycleTimeout / 2)}
	if ttl > 0 {
		acq.Ttl = durationpb.New(ttl)
	}
	if err := stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: acq}}); err != nil {
		cancel()
		return nil, fmt.Errorf("send acquire: %w", err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			cancel()
			return nil, fmt.Errorf("acquire ended with %w, want granted", err)
		}
		if g := resp.GetGranted(); g != nil {
			h := &held{id: g.GetLeaseId(), stream: stream, cancel: cancel, end: make(chan streamEnd, 1)}
			go h.receive()
			return h, nil
		}
	}
}

func (h *held) receive() {
	var e streamEnd
	for {
		resp, err := h.stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				e.err = err
			}
			h.end <- e
			return
		}
		if r := resp.GetRevoked(); r != nil {
			e.revoked, e.at = r, time.Now()
		}
	}
}

// wait waits for the stream to end.
func (h *held) wait(ctx context.Context) streamEnd {
	select {
	case e := <-h.end:
		h.endAt = e.at
		return e
	case <-ctx.Done():
		return streamEnd{err: fmt.Errorf("lease %s: stream still open at the cycle's deadline", h.id)}
	}
}

// want waits for the stream's end and checks it ended with revoked{reason}
// and OK.
func (h *held) want(ctx context.Context, reason brokerv1.ReclaimReason) (brokerv1.ReclaimReason, error) {
	e := h.wait(ctx)
	switch {
	case e.revoked == nil:
		return 0, fmt.Errorf("lease %s: stream ended with %v and no revoked, want revoked{%v}", h.id, e.err, reason)
	case e.err != nil:
		return e.reason(), fmt.Errorf("lease %s: stream ended with %v after %v, want OK", h.id, e.err, e.revoked)
	case e.reason() != reason:
		return e.reason(), fmt.Errorf("lease %s: revoked %v, want %v", h.id, e.revoked, reason)
	}
	return reason, nil
}

func (h *held) release(ctx context.Context, want brokerv1.ReclaimReason) (brokerv1.ReclaimReason, error) {
	if err := h.stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}}); err != nil {
		return h.endReason(ctx, fmt.Errorf("send release: %w", err))
	}
	return h.want(ctx, want)
}

// endReason ends a cycle that went wrong: it releases the lease, and
// returns the reason the broker reports for it with the error.
// If the release gets no answer within 10s (the stream is half-closed, or
// the broker is stuck), it cancels the stream.
func (h *held) endReason(ctx context.Context, cause error) (brokerv1.ReclaimReason, error) {
	_ = h.stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if e := h.wait(wctx); e.revoked != nil {
		return e.reason(), cause
	}
	h.cancel()
	return brokerv1.ReclaimReason_RECLAIM_REASON_STREAM_CLOSED, cause
}
