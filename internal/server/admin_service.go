package server

import (
	"context"
	"slices"
	"strings"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/lease"
)

type adminService struct {
	brokerv1.UnimplementedAdminServiceServer
	s *Server
}

// admin fails unless the caller has the admin role. The interceptor
// checks it first; this keeps AdminService closed if it ever runs without.
func (s *Server) admin(ctx context.Context) error {
	p, err := s.caller(ctx)
	if err != nil {
		return err
	}
	if p.Role != RoleAdmin {
		return status.Errorf(codes.PermissionDenied, "AdminService needs the admin role; principal %q has the %s role", p.Name, p.Role)
	}
	return nil
}

func (as *adminService) ListLeases(ctx context.Context, req *brokerv1.ListLeasesRequest) (*brokerv1.ListLeasesResponse, error) {
	if err := as.s.admin(ctx); err != nil {
		return nil, err
	}
	if fleet, err := as.s.fleetScope(req.GetScope()); fleet || err != nil {
		if err != nil {
			return nil, err
		}
		return as.s.fleetListLeases(ctx, req)
	}
	infos := as.s.leases.List(lease.Filter{Labels: req.GetLabels(), SessionKey: req.GetSessionKey(), Principal: req.GetPrincipal()})
	out := make([]*brokerv1.LeaseInfo, len(infos))
	for i, info := range infos {
		out[i] = leaseInfo(info)
		out[i].BrokerId = as.s.brokerID()
	}
	return &brokerv1.ListLeasesResponse{Leases: out}, nil
}

func (as *adminService) GetLease(ctx context.Context, req *brokerv1.GetLeaseRequest) (*brokerv1.GetLeaseResponse, error) {
	if err := as.s.admin(ctx); err != nil {
		return nil, err
	}
	if req.GetLeaseId() == "" {
		return nil, invalid("lease_id must not be empty")
	}
	info, err := as.s.leases.Get(req.GetLeaseId())
	if err != nil {
		return nil, toStatus(as.s.log, err)
	}
	li := leaseInfo(info)
	li.BrokerId = as.s.brokerID()
	return &brokerv1.GetLeaseResponse{Lease: li}, nil
}

func (as *adminService) RevokeLease(ctx context.Context, req *brokerv1.RevokeLeaseRequest) (*brokerv1.RevokeLeaseResponse, error) {
	if err := as.s.admin(ctx); err != nil {
		return nil, err
	}
	if req.GetLeaseId() == "" {
		return nil, invalid("lease_id must not be empty")
	}
	if len(req.GetMessage()) > 1024 {
		return nil, invalid("message longer than 1024 bytes")
	}
	msg := req.GetMessage()
	if msg == "" {
		msg = "revoked by an operator"
	}
	r, err := as.s.leases.Reclaim(req.GetLeaseId(), lease.Revoked, msg)
	if err != nil {
		return nil, toStatus(as.s.log, err)
	}
	as.s.log.Info("lease revoked by admin", zap.String("lease_id", req.GetLeaseId()), zap.Stringer("reason", r))
	return &brokerv1.RevokeLeaseResponse{Reason: reason(r)}, nil
}

func (as *adminService) GetStats(ctx context.Context, req *brokerv1.GetStatsRequest) (*brokerv1.GetStatsResponse, error) {
	if err := as.s.admin(ctx); err != nil {
		return nil, err
	}
	if fleet, err := as.s.fleetScope(req.GetScope()); fleet || err != nil {
		if err != nil {
			return nil, err
		}
		return as.s.fleetStats(ctx)
	}
	st := as.s.leases.Stats()
	out := &brokerv1.GetStatsResponse{
		BrokerId:            as.s.brokerID(),
		Capacity:            int32(st.Capacity),
		Active:              int32(st.Active),
		Waiting:             int32(st.Waiting),
		Opening:             int32(st.Opening),
		GrantedTotal:        st.GrantedTotal,
		ReclaimedTotal:      st.ReclaimedTotal,
		DuplicateTriggers:   st.DuplicateTriggers,
		BrowserContexts:     int32(st.BackendLive),
		InvariantOk:         st.InvariantErr == nil,
		InvariantViolations: st.InvariantViolations,
		AcquireFailures:     st.AcquireFailures,
		OrphansClosed:       st.OrphansClosed,
		Draining:            st.Draining,
		Uptime:              durationpb.New(st.Uptime),
		OldestWait:          durationpb.New(st.OldestWait),
		SessionsHeld:        int32(st.SessionsHeld),
		SessionsWarm:        int32(st.SessionsWarm),
		MemoryLow:           st.MemoryLow,
	}
	if as.s.cfg.MemoryAvailable != nil {
		out.MemoryAvailableBytes = as.s.cfg.MemoryAvailable()
	}
	for _, r := range lease.Reasons() {
		out.Reclaimed = append(out.Reclaimed, &brokerv1.ReasonCount{Reason: reason(r), Count: st.Reclaimed[r]})
	}
	if as.s.cfg.Browsers != nil {
		bs := as.s.cfg.Browsers.Stats()
		out.Browsers = int32(bs.Browsers)
		out.WarmContexts = int32(bs.Warm)
		out.WarmHits = bs.WarmHits
		out.WarmMisses = bs.WarmMisses
		out.BrowsersRetired = bs.Retired
		out.BrowsersRetiring = int32(bs.Retiring)
		for _, src := range bs.Sources {
			out.Sources = append(out.Sources, &brokerv1.BrowserSource{Name: src.Name, Connected: src.Connected,
				Browsers: int32(src.Browsers), Contexts: int32(src.Contexts), Disconnects: src.Disconnects, LastError: src.LastError})
		}
		out.BlockedRequests = bs.Blocked
		out.BrowserLaunches = bs.Launches
		out.BrowserCrashes, out.PageCrashes, out.DriverCrashes = bs.BrowserCrashes, bs.PageCrashes, bs.DriverCrashes
		out.DriverRestarts = bs.DriverRestarts
		out.WarmHeld, out.WarmRefillYielding, out.WarmRefillsForced = bs.WarmHeld, bs.WarmRefillYielding, bs.WarmRefillsForced
		out.PolicyDeniedRequests = bs.PolicyDenied
	}
	return out, nil
}

// SetDraining drains the broker (true: no new leases, the lease service
// reports NOT_SERVING to health checks, live leases go on) or undrains it.
// AdminService.Drain and Undrain, and the dashboard, call it.
func (s *Server) SetDraining(on bool) {
	s.leases.Drain(on)
	s.setLeaseServing(!on)
}

func (as *adminService) Drain(ctx context.Context, req *brokerv1.DrainRequest) (*brokerv1.DrainResponse, error) {
	if err := as.s.admin(ctx); err != nil {
		return nil, err
	}
	as.s.SetDraining(true)
	return &brokerv1.DrainResponse{Active: int32(as.s.leases.Stats().Active)}, nil
}

func (as *adminService) Undrain(ctx context.Context, req *brokerv1.UndrainRequest) (*brokerv1.UndrainResponse, error) {
	if err := as.s.admin(ctx); err != nil {
		return nil, err
	}
	as.s.SetDraining(false)
	return &brokerv1.UndrainResponse{}, nil
}

func (as *adminService) ListSessions(ctx context.Context, req *brokerv1.ListSessionsRequest) (*brokerv1.ListSessionsResponse, error) {
	if err := as.s.admin(ctx); err != nil {
		return nil, err
	}
	byKey := make(map[string]*brokerv1.SessionInfo)
	var out []*brokerv1.SessionInfo
	if store := as.s.cfg.Sessions; store != nil {
		recs, err := store.List()
		if err != nil {
			// A corrupt record must not hide the others; it is logged.
			as.s.log.Error("listing saved sessions", zap.Error(err))
		}
		for _, r := range recs {
			si := &brokerv1.SessionInfo{SessionKey: r.Key, State: brokerv1.SessionState_SESSION_STATE_SAVED,
				Generation: r.Generation, SavedAt: timestamp(r.SavedAt)}
			byKey[r.Key] = si
			out = append(out, si)
		}
	}
	for _, s := range as.s.leases.Sessions() {
		si := byKey[s.Key]
		if si == nil {
			si = &brokerv1.SessionInfo{SessionKey: s.Key, State: brokerv1.SessionState_SESSION_STATE_SAVED}
			out = append(out, si)
		}
		si.Generation = max(si.Generation, s.Generation)
		si.Waiting = int32(s.Waiting)
		switch s.State {
		case lease.SessionHeld:
			si.State, si.LeaseId = brokerv1.SessionState_SESSION_STATE_HELD, s.LeaseID
		case lease.SessionWarm:
			si.State, si.ClosesAt = brokerv1.SessionState_SESSION_STATE_WARM, timestamp(s.ClosesAt)
		}
	}
	slices.SortFunc(out, func(a, b *brokerv1.SessionInfo) int { return strings.Compare(a.SessionKey, b.SessionKey) })
	return &brokerv1.ListSessionsResponse{Sessions: out}, nil
}

func (as *adminService) DeleteSession(ctx context.Context, req *brokerv1.DeleteSessionRequest) (*brokerv1.DeleteSessionResponse, error) {
	if err := as.s.admin(ctx); err != nil {
		return nil, err
	}
	if req.GetSessionKey() == "" {
		return nil, invalid("session_key must not be empty")
	}
	r, err := as.s.leases.DeleteSession(ctx, req.GetSessionKey())
	if err != nil {
		return nil, toStatus(as.s.log, err)
	}
	return &brokerv1.DeleteSessionResponse{LeaseReason: reason(r)}, nil
}
