package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/fleet"
	"github.com/browserbroker/broker/internal/lease"
)

// forwardedBy marks a call one broker makes to another on a client's
// behalf. A marked call is always served where it lands, so a call is
// forwarded at most once. A client that sets it only gives up forwarding.
const forwardedBy = "x-browserbroker-forwarded-by"

// Fleet is what the edge needs of the fleet (fleet.Fleet).
type Fleet interface {
	ID() string
	Members(ctx context.Context) ([]fleet.Member, error)
	Lookup(ctx context.Context, id string) (fleet.Member, error)
	PickFree(ctx context.Context, maxAge time.Duration) (fleet.Member, bool, error)
	ClaimSession(ctx context.Context, key string) (owner string, err error)
	SessionOwner(ctx context.Context, key string) (owner string, err error)
}

// peers keeps one client connection per other broker.
type peers struct {
	dial []grpc.DialOption
	mu   sync.Mutex
	conn map[string]*grpc.ClientConn
}

func (p *peers) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conn[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, p.dial...)
	if err != nil {
		return nil, err
	}
	if p.conn == nil {
		p.conn = map[string]*grpc.ClientConn{}
	}
	p.conn[addr] = c
	return c, nil
}

func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, c := range p.conn {
		c.Close()
		delete(p.conn, addr)
	}
}

// Close closes the connections to the other brokers of the fleet.
func (s *Server) Close() { s.peers.close() }

func forwarded(ctx context.Context) bool {
	return len(metadata.ValueFromIncomingContext(ctx, forwardedBy)) > 0
}

// errCertNotForwarded: a principal known by its client certificate alone
// cannot be vouched for to another broker (that broker would see this
// broker's certificate), so its calls are not forwarded.
var errCertNotForwarded = status.Error(codes.FailedPrecondition,
	"this needs another broker of the fleet, and calls authenticated by a client certificate alone are not forwarded: send a bearer token too, or call that broker")

// forwardable says whether the caller's credentials can go with a call to
// another broker: none are needed, or they are a bearer token.
func (s *Server) forwardable(ctx context.Context) bool {
	return s.cfg.Auth == nil || len(metadata.ValueFromIncomingContext(ctx, "authorization")) > 0
}

// outgoing carries the caller's credentials to another broker, which
// authenticates the call again: a principal is the same on every broker
// that shares the tokens file.
func (s *Server) outgoing(ctx context.Context) context.Context {
	md := metadata.Pairs(forwardedBy, s.cfg.Fleet.ID())
	if a := metadata.ValueFromIncomingContext(ctx, "authorization"); len(a) > 0 {
		md.Set("authorization", a...)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// peerErr passes another broker's answer through; a failure to reach it
// at all is UNAVAILABLE naming the broker.
func peerErr(m fleet.Member, err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unavailable && st.Code() != codes.Unknown {
		return err
	}
	return status.Errorf(codes.Unavailable, "broker %s could not be reached: %s", m.ID, status.Convert(err).Message())
}

// fleetErr says what a fleet failure means to the client.
func fleetErr(err error, what string) error {
	switch {
	case errors.Is(err, fleet.ErrUnavailable):
		return status.Errorf(codes.Unavailable, "%s needs the fleet, and Redis is unreachable: try again, or ask the broker that holds it", what)
	case err != nil:
		return status.Errorf(codes.Unavailable, "%s: %v", what, err)
	}
	return nil
}

type leaseIDRequest interface{ GetLeaseId() string }

// routeByLease serves a call that names a lease of another broker by
// forwarding it there: the lease id names its owner. Calls for this
// broker's leases, calls already forwarded, and calls without a fleet run
// here.
func (s *Server) routeByLease(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if s.cfg.Fleet == nil {
		return handler(ctx, req)
	}
	var owner, what string
	switch r := req.(type) {
	case leaseIDRequest:
		id := r.GetLeaseId()
		if strings.HasPrefix(id, s.ownIDs) { // this broker's: the common case, at no cost
			return handler(ctx, req)
		}
		owner, what = fleet.OwnerOf(id), "lease "+id
	case *brokerv1.DeleteSessionRequest:
		if forwarded(ctx) {
			break
		}
		// The session's context may be open on its owner: delete it there
		// (the saved state in Redis goes either way).
		o, err := s.cfg.Fleet.SessionOwner(ctx, r.GetSessionKey())
		if err != nil {
			return nil, fleetErr(err, "DeleteSession")
		}
		owner, what = o, "session "+r.GetSessionKey()
	}
	if owner == "" || owner == s.cfg.Fleet.ID() || forwarded(ctx) {
		return handler(ctx, req)
	}
	if !s.forwardable(ctx) {
		return nil, errCertNotForwarded
	}
	m, err := s.cfg.Fleet.Lookup(ctx, owner)
	if errors.Is(err, fleet.ErrUnknownBroker) {
		if _, ok := req.(leaseIDRequest); ok {
			// Its broker is gone, and its leases with it: as any unknown id.
			return nil, status.Errorf(codes.NotFound, "%s not found", what)
		}
		return handler(ctx, req) // a session whose broker died: saved state only
	}
	if err != nil {
		return nil, fleetErr(err, what+" of broker "+owner)
	}
	resp, err := newResponse(info.FullMethod)
	if err != nil {
		return nil, err
	}
	conn, err := s.peers.get(m.Address)
	if err != nil {
		return nil, peerErr(m, err)
	}
	if err := conn.Invoke(s.outgoing(ctx), info.FullMethod, req, resp); err != nil {
		return nil, peerErr(m, err)
	}
	return resp, nil
}

// newResponse makes an empty response message of a method of this API.
func newResponse(fullMethod string) (proto.Message, error) {
	svc, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "internal error")
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok || sd.Methods().ByName(protoreflect.Name(method)) == nil {
		return nil, status.Errorf(codes.Internal, "internal error")
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(sd.Methods().ByName(protoreflect.Name(method)).Output().FullName())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "internal error")
	}
	return mt.New().Interface(), nil
}

// fleetAcquire decides where an acquire is served in a fleet. A sticky
// session is served by the broker that owns its key (this one, when it
// claims a key nobody owns); without Redis, sticky acquires are refused,
// since two brokers could otherwise both hold one session. An acquire this
// broker cannot grant at once goes to the broker with the most room, or
// waits here when none has room or Redis is away. handled is false when
// this broker serves it.
func (s *Server) fleetAcquire(stream brokerv1.LeaseService_LeaseServer, first *brokerv1.LeaseRequest, sessionKey string) (handled bool, err error) {
	ctx := stream.Context()
	if sessionKey != "" {
		owner, err := s.cfg.Fleet.ClaimSession(ctx, sessionKey)
		switch {
		case err != nil:
			return true, fleetErr(err, "a sticky session")
		case owner == s.cfg.Fleet.ID():
			return false, nil
		case forwarded(ctx):
			return true, status.Errorf(codes.Unavailable, "the session moved to broker %s meanwhile: try again", owner)
		case !s.forwardable(ctx):
			return true, errCertNotForwarded
		}
		m, err := s.cfg.Fleet.Lookup(ctx, owner)
		if errors.Is(err, fleet.ErrUnknownBroker) {
			return true, status.Errorf(codes.Unavailable, "the session's broker %s is gone; another takes the session over within the fleet TTL: try again", owner)
		}
		if err != nil {
			return true, fleetErr(err, "a sticky session")
		}
		started, err := s.proxyLease(stream, first, m, "session")
		if !started {
			return true, peerErr(m, err)
		}
		return true, err
	}
	if s.leases.Free() > 0 || forwarded(ctx) || !s.forwardable(ctx) {
		return false, nil
	}
	m, ok, err := s.cfg.Fleet.PickFree(ctx, 0)
	if err != nil || !ok {
		// No room elsewhere either, or no Redis: queue here.
		s.log.Debug("acquire not forwarded: no broker of the fleet has room", zap.Error(err))
		return false, nil
	}
	started, err := s.proxyLease(stream, first, m, "full")
	if !started {
		// It filled up meanwhile, or is gone: serve here after all.
		s.log.Debug("forwarded acquire refused", zap.String("broker_id", m.ID), zap.Error(err))
		return false, nil
	}
	return true, err
}

// hopEvery is how often an acquire waiting in this broker's queue looks for
// room on the other brokers, and how old the fleet's view of their load
// may be when it does.
const hopEvery = 250 * time.Millisecond

// mayHop says whether an acquire waiting here may move to another broker
// (acquireOrHop): in a fleet, not for a sticky session (it lives on its
// owner), not when forwarded here already (a call is forwarded once), and
// only with credentials that can go along.
func (s *Server) mayHop(ctx context.Context, req lease.AcquireRequest) bool {
	return s.cfg.Fleet != nil && req.SessionKey == "" && !forwarded(ctx) && s.forwardable(ctx)
}

// acquireOrHop waits for a lease in this broker's queue, as Acquire does,
// and once it is in line looks every hopEvery for room on the other
// brokers: when one has room for this waiter (at least its position in
// line, so the head of the line moves first), the waiter is withdrawn from
// the queue and the acquire forwarded there with what is left of its
// wait_timeout. So a fleet whose brokers were all full when the acquire
// came serves it from whichever frees up first. hopped reports that the
// acquire went elsewhere; err is then how the forwarded stream ended. A
// lease granted here meanwhile is kept; when the other broker refuses (its
// room went), the acquire waits here again, at the back of the line. An
// acquire granted without waiting costs nothing more than Acquire.
func (s *Server) acquireOrHop(stream brokerv1.LeaseService_LeaseServer, first *brokerv1.LeaseRequest, req lease.AcquireRequest,
	queued func(int)) (l *lease.Lease, hopped bool, err error) {
	ctx := stream.Context()
	wait := s.leases.WaitTimeout(req.Wait)
	deadline := time.Now().Add(wait)
	for {
		w := &hopWatch{s: s, ctx: ctx, withdraw: make(chan struct{})}
		req.Withdraw = w.withdraw
		l, err := s.leases.Acquire(ctx, req, func(p int) { w.queued(p); queued(p) })
		to := w.stop()
		left := time.Until(deadline)
		switch {
		case !errors.Is(err, lease.ErrWithdrawn):
			return l, false, err // granted here (perhaps as it was withdrawn), or failed
		case left <= 0:
			return nil, false, fmt.Errorf("%w (waited %v)", lease.ErrNoCapacity, wait)
		}
		fwd := proto.Clone(first).(*brokerv1.LeaseRequest)
		fwd.GetAcquire().WaitTimeout = durationpb.New(left)
		s.log.Debug("queued acquire moves to another broker", zap.String("broker_id", to.ID), zap.Int64("position", w.pos.Load()))
		started, err := s.proxyLease(stream, fwd, to, "queued")
		if started {
			return nil, true, err
		}
		s.log.Debug("moved acquire refused; waiting here again", zap.String("broker_id", to.ID), zap.Error(err))
		req.Wait = left
	}
}

// hopWatch looks for room elsewhere for one acquire while it waits in the
// queue: started by the first position in line the acquire hears, it
// closes withdraw once a broker has room for it.
type hopWatch struct {
	s        *Server
	ctx      context.Context
	withdraw chan struct{}
	pos      atomic.Int64 // the last position in line heard
	started  bool         // queued runs on Acquire's goroutine only
	done     chan struct{}
	stopped  chan struct{}
	to       fleet.Member // where to go, once withdraw is closed
}

func (w *hopWatch) queued(p int) {
	w.pos.Store(int64(p))
	if w.started {
		return
	}
	w.started = true
	w.done, w.stopped = make(chan struct{}), make(chan struct{})
	go w.watch()
}

func (w *hopWatch) watch() {
	defer close(w.stopped)
	tick := time.NewTicker(hopEvery)
	defer tick.Stop()
	for {
		select {
		case <-w.done:
			return
		case <-tick.C:
		}
		m, ok, err := w.s.cfg.Fleet.PickFree(w.ctx, hopEvery)
		if err == nil && ok && int64(m.Load.Free) >= w.pos.Load() {
			w.to = m
			close(w.withdraw)
			return
		}
	}
}

// stop ends the watch, once Acquire has returned, and says where the
// acquire is to go if it was withdrawn.
func (w *hopWatch) stop() fleet.Member {
	if !w.started {
		return fleet.Member{}
	}
	close(w.done)
	<-w.stopped
	return w.to
}

// proxyLease sends an acquire to another broker and, once that broker
// answers, proxies the lease stream both ways until it ends. The lease
// lives on that broker alone, which reclaims it exactly once whichever
// side breaks: the client's stream ending here cancels the forwarded
// stream (STREAM_CLOSED there), and the owner's revoked comes back
// through. started is false when the broker refused the acquire (or could
// not be reached) before answering anything: err says why. why is the
// forward's kind in the metrics: "session" (to the sticky session's
// owner), "full" (this broker had no room), "queued" (moved from the
// queue, acquireOrHop).
func (s *Server) proxyLease(stream brokerv1.LeaseService_LeaseServer, first *brokerv1.LeaseRequest, m fleet.Member, why string) (started bool, err error) {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	conn, err := s.peers.get(m.Address)
	if err != nil {
		return false, err
	}
	up, err := brokerv1.NewLeaseServiceClient(conn).Lease(s.outgoing(ctx))
	if err != nil {
		return false, err
	}
	if err := up.Send(first); err != nil {
		_, err = up.Recv() // the stream's status says why
		return false, err
	}
	resp, err := up.Recv()
	if err != nil {
		return false, err
	}
	s.log.Debug("acquire forwarded", zap.String("broker_id", m.ID), zap.String("why", why))
	s.cfg.Metrics.observeForward(why)
	if err := stream.Send(resp); err != nil {
		return true, err // cancel ends the forwarded stream: STREAM_CLOSED there
	}
	go func() {
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				up.CloseSend() // a half-close, passed on as it is
				return
			}
			if err != nil {
				cancel()
				return
			}
			if up.Send(msg) != nil {
				return
			}
		}
	}()
	for {
		resp, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			return true, peerErr(m, err)
		}
		if err := stream.Send(resp); err != nil {
			return true, err
		}
	}
}

// fleetListLeases asks every live broker for its leases.
func (s *Server) fleetListLeases(ctx context.Context, req *brokerv1.ListLeasesRequest) (*brokerv1.ListLeasesResponse, error) {
	local := proto.Clone(req).(*brokerv1.ListLeasesRequest)
	local.Scope = brokerv1.Scope_SCOPE_BROKER
	if !s.forwardable(ctx) {
		return nil, errCertNotForwarded
	}
	ms, err := s.cfg.Fleet.Members(ctx)
	if err != nil {
		return nil, fleetErr(err, "ListLeases of the fleet")
	}
	out := &brokerv1.ListLeasesResponse{}
	err = s.eachMemberOf(ctx, ms, "ListLeases", func(ctx context.Context, c brokerv1.AdminServiceClient) error {
		r, err := c.ListLeases(ctx, local)
		if err == nil {
			out.Leases = append(out.Leases, r.GetLeases()...)
		}
		return err
	}, func() {
		r, _ := (&adminService{s: s}).ListLeases(ctx, local)
		out.Leases = append(out.Leases, r.GetLeases()...)
	})
	return out, err
}

// fleetStats sums every live broker's stats, and lists the brokers.
func (s *Server) fleetStats(ctx context.Context) (*brokerv1.GetStatsResponse, error) {
	if !s.forwardable(ctx) {
		return nil, errCertNotForwarded
	}
	ms, err := s.cfg.Fleet.Members(ctx)
	if err != nil {
		return nil, fleetErr(err, "GetStats of the fleet")
	}
	sum := &brokerv1.GetStatsResponse{InvariantOk: true}
	local := &brokerv1.GetStatsRequest{Scope: brokerv1.Scope_SCOPE_BROKER}
	err = s.eachMemberOf(ctx, ms, "GetStats", func(ctx context.Context, c brokerv1.AdminServiceClient) error {
		r, err := c.GetStats(ctx, local)
		if err == nil {
			addStats(sum, r)
		}
		return err
	}, func() {
		r, _ := (&adminService{s: s}).GetStats(ctx, local)
		addStats(sum, r)
	})
	if err != nil {
		return nil, err
	}
	sum.BrokerId = s.cfg.Fleet.ID()
	for _, m := range ms {
		sum.Members = append(sum.Members, &brokerv1.FleetMember{BrokerId: m.ID, Address: m.Address,
			Capacity: int32(m.Load.Capacity), Active: int32(m.Load.Active), Free: int32(m.Load.Free),
			Waiting: int32(m.Load.Waiting), Draining: m.Load.Draining, HeartbeatAt: timestamppb.New(m.At)})
	}
	return sum, nil
}

// eachMemberOf runs self for this broker and remote for each other one,
// one after another. A broker that cannot be reached fails the call: a
// partial answer would look whole.
func (s *Server) eachMemberOf(ctx context.Context, ms []fleet.Member, what string, remote func(context.Context, brokerv1.AdminServiceClient) error, self func()) error {
	for _, m := range ms {
		if m.ID == s.cfg.Fleet.ID() {
			self()
			continue
		}
		conn, err := s.peers.get(m.Address)
		if err == nil {
			err = remote(s.outgoing(ctx), brokerv1.NewAdminServiceClient(conn))
		}
		if err != nil {
			return status.Errorf(codes.Unavailable, "%s of the fleet: broker %s: %s", what, m.ID, status.Convert(err).Message())
		}
	}
	return nil
}

// addStats adds one broker's stats to a fleet's sum: counts and gauges
// add up, per-reason counts by reason, the invariant holds only if it
// holds everywhere, flags are true if true anywhere, durations take the
// longest, and browser sources are listed by broker.
func addStats(sum, one *brokerv1.GetStatsResponse) {
	if one == nil {
		return
	}
	sr, or := sum.ProtoReflect(), one.ProtoReflect()
	fields := sr.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		v := or.Get(fd)
		switch {
		case fd.IsList() || fd.Kind() == protoreflect.StringKind:
			// reclaimed, sources, members and broker_id: below.
		case fd.Kind() == protoreflect.Int32Kind:
			sr.Set(fd, protoreflect.ValueOfInt32(int32(sr.Get(fd).Int()+v.Int())))
		case fd.Kind() == protoreflect.Uint64Kind:
			sr.Set(fd, protoreflect.ValueOfUint64(sr.Get(fd).Uint()+v.Uint()))
		case fd.Kind() == protoreflect.BoolKind && fd.Name() == "invariant_ok":
			sr.Set(fd, protoreflect.ValueOfBool(sr.Get(fd).Bool() && v.Bool()))
		case fd.Kind() == protoreflect.BoolKind:
			sr.Set(fd, protoreflect.ValueOfBool(sr.Get(fd).Bool() || v.Bool()))
		case fd.Message() != nil && fd.Message().FullName() == "google.protobuf.Duration":
			d := v.Message().Interface().(*durationpb.Duration).AsDuration()
			if !sr.Has(fd) || d > sr.Get(fd).Message().Interface().(*durationpb.Duration).AsDuration() {
				sr.Set(fd, protoreflect.ValueOfMessage(durationpb.New(d).ProtoReflect()))
			}
		default:
			panic(fmt.Sprintf("server: addStats: field %s of kind %v has no rule", fd.Name(), fd.Kind()))
		}
	}
	for _, rc := range one.GetReclaimed() {
		found := false
		for _, s := range sum.Reclaimed {
			if s.Reason == rc.GetReason() {
				s.Count += rc.GetCount()
				found = true
			}
		}
		if !found {
			sum.Reclaimed = append(sum.Reclaimed, &brokerv1.ReasonCount{Reason: rc.GetReason(), Count: rc.GetCount()})
		}
	}
	for _, src := range one.GetSources() {
		src = proto.Clone(src).(*brokerv1.BrowserSource)
		if one.GetBrokerId() != "" {
			src.Name = one.GetBrokerId() + "/" + src.Name
		}
		sum.Sources = append(sum.Sources, src)
	}
}

// fleetScope says whether an admin call asks for the fleet; asking a
// broker outside any fleet is FAILED_PRECONDITION.
func (s *Server) fleetScope(sc brokerv1.Scope) (bool, error) {
	switch sc {
	case brokerv1.Scope_SCOPE_UNSPECIFIED, brokerv1.Scope_SCOPE_BROKER:
		return false, nil
	case brokerv1.Scope_SCOPE_FLEET:
		if s.cfg.Fleet == nil {
			return false, status.Error(codes.FailedPrecondition, "scope FLEET: this broker is in no fleet (start it with --redis)")
		}
		return true, nil
	}
	return false, invalid(fmt.Sprintf("unknown scope %v", sc))
}

// brokerID is this broker's id in its fleet; "" without one.
func (s *Server) brokerID() string {
	if s.cfg.Fleet == nil {
		return ""
	}
	return s.cfg.Fleet.ID()
}
