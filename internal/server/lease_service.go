package server

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/lease"
)

type leaseService struct {
	brokerv1.UnimplementedLeaseServiceServer
	s *Server
}

// Lease holds one lease for the life of the stream. Every way the stream
// can end goes to the lease manager as a reclaim trigger; the manager
// decides, once, why the lease ended, and this handler reports that.
func (ls *leaseService) Lease(stream brokerv1.LeaseService_LeaseServer) error {
	s := ls.s
	ctx := stream.Context()
	caller, err := s.caller(ctx)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	switch {
	case errors.Is(err, io.EOF):
		return invalid("the stream ended before acquire")
	case err != nil:
		if _, ok := status.FromError(err); ok {
			return err
		}
		return status.FromContextError(err).Err()
	}
	acq := first.GetAcquire()
	if acq == nil {
		return invalid("the first message of a lease stream must be acquire")
	}
	req, err := acquireRequest(acq)
	if err != nil {
		return err
	}
	if err := ownSessionKey(&req, caller.Name); err != nil {
		return err
	}
	req.Principal = caller.Name
	// The rate limit is charged first, on every broker the acquire comes
	// to: one a principal floods must not spend its Redis round trips and
	// peer calls on the excess before refusing it.
	if err := s.acquires.allow(caller.Name); err != nil {
		return toStatus(s.log, err)
	}
	// In a fleet, a sticky session is served by the broker that owns it,
	// and an acquire this broker cannot grant at once goes to one that can.
	if s.cfg.Fleet != nil {
		if handled, err := s.fleetAcquire(stream, first, req.SessionKey); handled {
			return err
		}
	}
	asked := time.Now()
	queued := func(pos int) {
		// A failed send means the stream is gone; Acquire sees ctx end.
		_ = stream.Send(&brokerv1.LeaseResponse{Msg: &brokerv1.LeaseResponse_Queued{
			Queued: &brokerv1.Queued{Position: int32(pos)}}})
	}
	var l *lease.Lease
	if s.mayHop(ctx, req) {
		var hopped bool
		if l, hopped, err = s.acquireOrHop(stream, first, req, queued); hopped {
			return err
		}
	} else {
		l, err = s.leases.Acquire(ctx, req, queued)
	}
	if err != nil {
		return toStatus(s.log, err)
	}
	s.cfg.Metrics.observeGrant(time.Since(asked))
	err = stream.Send(&brokerv1.LeaseResponse{Msg: &brokerv1.LeaseResponse_Granted{Granted: &brokerv1.Granted{
		LeaseId:      l.ID(),
		ExpiresAt:    timestamppb.New(l.ExpiresAt()),
		MaxExpiresAt: timestamppb.New(l.MaxDeadline()),
		Ttl:          durationpb.New(l.TTL()),
		Generation:   l.Generation(),
		SessionWarm:  l.WarmSession(),
		SessionRestored: func() bool {
			r, ok := l.Session().(interface{ Restored() bool })
			return ok && r.Restored()
		}(),
	}}})
	if err != nil {
		l.Reclaim(lease.StreamClosed, "could not send the grant: "+err.Error())
		return err
	}

	// Recv runs in its own goroutine (Send stays on this one).
	msgs := make(chan *brokerv1.LeaseRequest)
	recvErr := make(chan error, 1)
	handlerDone := make(chan struct{})
	defer close(handlerDone)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-handlerDone:
				return
			}
		}
	}()

	// Each case ends in one trigger at most; the manager decides the
	// reason, and the holder hears it in a last revoked message.
	for {
		select {
		case <-l.Done():
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				// The client closed its sending side only: nothing more
				// will come (not even renew), but the stream lives and so
				// does the lease, until its TTL or the stream's end.
				recvErr = nil
				continue
			}
			why := "stream closed by the client"
			if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
				why = "stream ended: " + st.Code().String()
			}
			l.Reclaim(lease.StreamClosed, why)
		case <-ctx.Done():
			l.Reclaim(lease.StreamClosed, "stream ended: "+status.FromContextError(ctx.Err()).Code().String())
		case m := <-msgs:
			switch m.GetMsg().(type) {
			case *brokerv1.LeaseRequest_Renew:
				exp, err := l.Renew()
				if err != nil {
					continue // reclaimed: Done reports it
				}
				if err := stream.Send(&brokerv1.LeaseResponse{Msg: &brokerv1.LeaseResponse_Renewed{
					Renewed: &brokerv1.Renewed{ExpiresAt: timestamppb.New(exp)}}}); err != nil {
					l.Reclaim(lease.StreamClosed, "could not send renewed: "+err.Error())
					break
				}
				continue
			case *brokerv1.LeaseRequest_Release:
				l.Reclaim(lease.Released, "released by the holder")
			default:
				r := l.Reclaim(lease.StreamClosed, "protocol error: only renew and release may follow acquire")
				s.log.Info("lease stream protocol error", zap.String("lease_id", l.ID()), zap.Stringer("reason", r))
				return invalid("only renew and release may follow acquire; the lease was reclaimed")
			}
		}
		r, msg := l.Reason() // waits until the reclaim is complete
		// The stream may be gone already; the lease is reclaimed either way.
		_ = stream.Send(&brokerv1.LeaseResponse{Msg: &brokerv1.LeaseResponse_Revoked{
			Revoked: &brokerv1.Revoked{Reason: reason(r), Message: clientMessage(msg)}}})
		return nil
	}
}

// ownSessionKey makes a sticky session's key the principal's own, so that
// two principals naming the same key get two sessions, and one cannot
// take over another's cookies and storage: the key is prefixed with the
// quoted principal name (`"alice"shop-1`), which is how AdminService
// shows and takes it. The anonymous principal's keys stay as they are.
func ownSessionKey(req *lease.AcquireRequest, principal string) error {
	if principal == "" || req.SessionKey == "" {
		return nil
	}
	prefix := strconv.Quote(principal)
	if len(prefix)+len(req.SessionKey) > lease.MaxSessionKey {
		return invalid(fmt.Sprintf("session_key is %d bytes, over the %d left to principal %s (%d in all, with the principal's name)",
			len(req.SessionKey), lease.MaxSessionKey-len(prefix), prefix, lease.MaxSessionKey))
	}
	req.SessionKey = prefix + req.SessionKey
	if spec, ok := req.Spec.(sessionSpec); ok {
		spec.Key = req.SessionKey
		req.Spec = spec
	}
	return nil
}
