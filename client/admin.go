package client

import (
	"context"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// Leases lists the live leases (closing ones included) that carry every
// label in labels, oldest first; nil or empty labels list them all.
func (c *Client) Leases(ctx context.Context, labels map[string]string) ([]*brokerv1.LeaseInfo, error) {
	return c.listLeases(ctx, brokerv1.Scope_SCOPE_BROKER, labels)
}

// FleetLeases is [Client.Leases] for every broker of the broker's fleet,
// each lease with its broker_id. It fails with UNAVAILABLE when a broker
// cannot be asked (or Redis is away) rather than answer for part of the
// fleet; a broker outside any fleet answers for itself.
func (c *Client) FleetLeases(ctx context.Context, labels map[string]string) ([]*brokerv1.LeaseInfo, error) {
	return c.listLeases(ctx, brokerv1.Scope_SCOPE_FLEET, labels)
}

func (c *Client) listLeases(ctx context.Context, scope brokerv1.Scope, labels map[string]string) ([]*brokerv1.LeaseInfo, error) {
	resp, err := c.admin.ListLeases(ctx, &brokerv1.ListLeasesRequest{Labels: labels, Scope: scope})
	if err != nil {
		return nil, err
	}
	return resp.GetLeases(), nil
}

// LeaseInfo describes one live lease; NOT_FOUND when there is none by that
// id.
func (c *Client) LeaseInfo(ctx context.Context, id string) (*brokerv1.LeaseInfo, error) {
	resp, err := c.admin.GetLease(ctx, &brokerv1.GetLeaseRequest{LeaseId: id})
	if err != nil {
		return nil, err
	}
	return resp.GetLease(), nil
}

// Revoke reclaims a lease with reason REVOKED; its holder receives the
// reason and message (empty: the broker's "revoked by an operator"). It
// returns once the lease's browser context is closed, with the reason the
// lease ended for: REVOKED, or the reason of a reclaim already under way.
// An unknown id is NOT_FOUND.
func (c *Client) Revoke(ctx context.Context, id, message string) (brokerv1.ReclaimReason, error) {
	resp, err := c.admin.RevokeLease(ctx, &brokerv1.RevokeLeaseRequest{LeaseId: id, Message: message})
	if err != nil {
		return brokerv1.ReclaimReason_RECLAIM_REASON_UNSPECIFIED, err
	}
	return resp.GetReason(), nil
}

// Sessions lists the broker's sticky sessions: those held by a lease or
// warm between leases, and those only saved (under --state-dir, or in a
// fleet's Redis), by key.
func (c *Client) Sessions(ctx context.Context) ([]*brokerv1.SessionInfo, error) {
	resp, err := c.admin.ListSessions(ctx, &brokerv1.ListSessionsRequest{})
	if err != nil {
		return nil, err
	}
	return resp.GetSessions(), nil
}

// DeleteSession ends a sticky session for good: the lease holding it (if
// any) is revoked, its browser context closed and its saved state removed;
// its generations go on from where they were if the key is used again. It
// returns the reason the holding lease ended for (UNSPECIFIED when none
// held it). An unknown key is NOT_FOUND.
func (c *Client) DeleteSession(ctx context.Context, key string) (brokerv1.ReclaimReason, error) {
	resp, err := c.admin.DeleteSession(ctx, &brokerv1.DeleteSessionRequest{SessionKey: key})
	if err != nil {
		return brokerv1.ReclaimReason_RECLAIM_REASON_UNSPECIFIED, err
	}
	return resp.GetLeaseReason(), nil
}

// Stats reports the broker's capacity, counters and lease invariant.
func (c *Client) Stats(ctx context.Context) (*brokerv1.GetStatsResponse, error) {
	return c.admin.GetStats(ctx, &brokerv1.GetStatsRequest{})
}

// FleetStats is [Client.Stats] summed over every broker of the broker's
// fleet, with each broker's registration in members; as FleetLeases, it
// fails rather than answer for part of the fleet.
func (c *Client) FleetStats(ctx context.Context) (*brokerv1.GetStatsResponse, error) {
	return c.admin.GetStats(ctx, &brokerv1.GetStatsRequest{Scope: brokerv1.Scope_SCOPE_FLEET})
}

// Drain stops the broker granting leases, before a restart: new and queued
// acquires fail with UNAVAILABLE, live leases go on until they end, and the
// health status of browserbroker.v1.LeaseService turns NOT_SERVING (see
// [Client.Health]). It returns the number of leases still live, which
// [Client.WaitIdle] waits for. Draining a draining broker is no error.
// Like every AdminService call, it needs the admin role when the broker
// authenticates (PERMISSION_DENIED otherwise).
func (c *Client) Drain(ctx context.Context) (active int, err error) {
	resp, err := c.admin.Drain(ctx, &brokerv1.DrainRequest{})
	if err != nil {
		return 0, err
	}
	return int(resp.GetActive()), nil
}

// Undrain reverses [Client.Drain]: the broker grants leases again and
// browserbroker.v1.LeaseService reports SERVING. Undraining a broker that
// does not drain is no error.
func (c *Client) Undrain(ctx context.Context) error {
	_, err := c.admin.Undrain(ctx, &brokerv1.UndrainRequest{})
	return err
}

// Health asks the broker's standard gRPC health service
// (grpc.health.v1.Health/Check) for the status of service. The broker
// registers "" (the broker as a whole, SERVING until it shuts down: for
// liveness probes), "browserbroker.v1.LeaseService"
// (brokerv1.LeaseService_ServiceDesc.ServiceName; also NOT_SERVING while it
// drains: for readiness probes), "browserbroker.v1.PageService" and
// "browserbroker.v1.AdminService"; any other name is NOT_FOUND. Health
// needs no token or role.
func (c *Client) Health(ctx context.Context, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN, err
	}
	return resp.GetStatus(), nil
}

// WaitIdle polls [Client.Stats] every poll (zero or less: every second)
// until no lease is active or opening, and returns the stats that showed
// the broker idle. It does not drain: call [Client.Drain] first, or new
// leases may keep the broker busy. onBusy, unless nil, is called with the
// stats of every poll that found the broker busy, before the next wait.
//
// When ctx ends or a poll fails, WaitIdle returns the last stats it got
// (nil if the broker never answered) with the error, a gRPC status:
// DEADLINE_EXCEEDED or CANCELLED when ctx ended. Bound the wait with a
// deadline on ctx.
func (c *Client) WaitIdle(ctx context.Context, poll time.Duration, onBusy func(*brokerv1.GetStatsResponse)) (*brokerv1.GetStatsResponse, error) {
	if poll <= 0 {
		poll = time.Second
	}
	var last *brokerv1.GetStatsResponse
	for {
		st, err := c.Stats(ctx)
		if err != nil {
			return last, err
		}
		last = st
		if st.GetActive()+st.GetOpening() == 0 {
			return st, nil
		}
		if onBusy != nil {
			onBusy(st)
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return last, status.FromContextError(ctx.Err()).Err()
		case <-t.C:
		}
	}
}
