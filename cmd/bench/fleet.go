package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/browserbroker/broker/client"
	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/fleet"
	"github.com/browserbroker/broker/internal/testredis"
)

// FleetResult is what "any door works" costs in a fleet of two brokers on
// a local redis-server: a lease of b2 driven through b2 and through b1
// (which routes the call by the lease id), and acquires granted by b2
// directly or forwarded to it by b1, which is full.
type FleetResult struct {
	Method         string  `json:"method"`
	EvaluateDirect Latency `json:"evaluate_direct"`
	EvaluateRouted Latency `json:"evaluate_routed"`
	// RoutedOverheadP50Ms is routed minus direct, at p50.
	RoutedOverheadP50Ms float64 `json:"routed_overhead_p50_ms"`
	GrantDirect         Latency `json:"grant_direct"`
	GrantForwarded      Latency `json:"grant_forwarded"`
	// ForwardOverheadP50Ms is forwarded minus direct, at p50.
	ForwardOverheadP50Ms float64 `json:"forward_overhead_p50_ms"`
}

// runFleet measures the fleet section: evals Evaluate("1") calls per
// path and grants acquires per path, interleaved.
func runFleet(ctx context.Context, brokerBin, driverDir, chromium, url string, evals, grants int, progress func(string)) (FleetResult, error) {
	res := FleetResult{Method: "redis-server and two brokers on loopback: b1 (--max-leases 1, held by a lease) and b2 (--max-leases 3), " +
		"--fleet-ttl 3s. Evaluate(\"1\") on a loaded page of a b2 lease, called on b2 and on b1 (routed by the lease id); " +
		"acquire → granted (cold context) sent to b2, and to b1 (full: forwarded to b2), each released at once; interleaved"}
	dir, err := os.MkdirTemp("", "redis-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	r, err := testredis.Run(dir)
	if err != nil {
		return res, fmt.Errorf("redis-server (make setup installs it): %w", err)
	}
	defer r.Stop()
	progress("fleet: starting brokers b1 and b2 on " + r.URL())
	var conns [2]*grpc.ClientConn
	var clients [2]*client.Client
	for i, capacity := range []string{"1", "3"} {
		b, err := startBroker(ctx, brokerBin, driverDir, chromium, nil, "--max-leases", capacity,
			"--redis", r.URL(), "--broker-id", fmt.Sprintf("b%d", i+1), "--fleet-ttl", "3s")
		if err != nil {
			return res, err
		}
		defer b.stop()
		if conns[i], err = grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			return res, err
		}
		defer conns[i].Close()
		clients[i] = client.New(conns[i])
		defer clients[i].Close()
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st, err := clients[0].FleetStats(ctx)
		if err == nil && len(st.GetMembers()) == 2 {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("b1 does not see b2 after 30s: %v, %v", st.GetMembers(), err)
		}
	}
	acquire := func(c *client.Client, want string) (*client.Lease, error) {
		l, err := c.Acquire(ctx, client.AcquireOptions{TTL: time.Minute, Context: coldContext()})
		if err != nil {
			return nil, err
		}
		if o := fleet.OwnerOf(l.ID()); o != want {
			l.Release(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("lease %s lives on %q, want %s", l.ID(), o, want)
		}
		return l, nil
	}
	hold, err := acquire(clients[0], "b1") // b1 full from now on
	if err != nil {
		return res, fmt.Errorf("b1's own lease: %w", err)
	}
	defer hold.Release(context.WithoutCancel(ctx))

	progress(fmt.Sprintf("fleet: %d Evaluate calls on b2 and through b1", evals))
	l, err := acquire(clients[1], "b2")
	if err != nil {
		return res, err
	}
	if _, err := l.Navigate(ctx, url); err != nil {
		l.Release(context.WithoutCancel(ctx))
		return res, err
	}
	const warmup = 5
	var direct, routed []time.Duration
	for i := range warmup + evals {
		for k := range 2 {
			via := (i + k) % 2 // 0: b1, routed; 1: b2, direct
			start := time.Now()
			resp, err := brokerv1.NewPageServiceClient(conns[via]).Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: l.ID(), Expression: "1"})
			took := time.Since(start)
			if err != nil || resp.GetResultJson() != "1" {
				l.Release(context.WithoutCancel(ctx))
				return res, fmt.Errorf("Evaluate(1) through b%d = %v, %v", via+1, resp, err)
			}
			if i >= warmup {
				if via == 0 {
					routed = append(routed, took)
				} else {
					direct = append(direct, took)
				}
			}
		}
	}
	if _, err := l.Release(ctx); err != nil {
		return res, err
	}
	res.EvaluateDirect, res.EvaluateRouted = summarize(direct), summarize(routed)
	res.RoutedOverheadP50Ms = round(res.EvaluateRouted.P50Ms - res.EvaluateDirect.P50Ms)

	progress(fmt.Sprintf("fleet: %d acquires on b2 and through b1", grants))
	var grantDirect, grantForwarded []time.Duration
	for i := range 2 + grants {
		for k := range 2 {
			via := (i + k) % 2
			start := time.Now()
			l, err := acquire(clients[via], "b2")
			took := time.Since(start)
			if err != nil {
				return res, fmt.Errorf("acquire through b%d: %w", via+1, err)
			}
			if _, err := l.Release(ctx); err != nil {
				return res, err
			}
			if i >= 2 {
				if via == 0 {
					grantForwarded = append(grantForwarded, took)
				} else {
					grantDirect = append(grantDirect, took)
				}
			}
		}
	}
	res.GrantDirect, res.GrantForwarded = summarize(grantDirect), summarize(grantForwarded)
	res.ForwardOverheadP50Ms = round(res.GrantForwarded.P50Ms - res.GrantDirect.P50Ms)
	return res, nil
}
