package client

import (
	"context"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// Leases lists the live leases (closing ones included) that carry every
// label in labels, oldest first; nil or empty labels list them all.
func (c *Client) Leases(ctx context.Context, labels map[string]string) ([]*brokerv1.LeaseInfo, error) {
	resp, err := c.admin.ListLeases(ctx, &brokerv1.ListLeasesRequest{Labels: labels})
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

// Stats reports the broker's capacity, counters and lease invariant.
func (c *Client) Stats(ctx context.Context) (*brokerv1.GetStatsResponse, error) {
	return c.admin.GetStats(ctx, &brokerv1.GetStatsRequest{})
}
