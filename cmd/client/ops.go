package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/browserbroker/broker/client"
	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// leaseServiceName is the health service name that turns NOT_SERVING while
// the broker drains or stops: what readiness probes check.
var leaseServiceName = brokerv1.LeaseService_ServiceDesc.ServiceName

func (c *cli) drain(ctx context.Context, args []string) error {
	if err := c.noArguments(c.flagSet("drain"), args); err != nil {
		return err
	}
	active, err := adminCall(ctx, c, "drain", func(ctx context.Context, cl *client.Client) (int, error) {
		return cl.Drain(ctx)
	})
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.stdout, &brokerv1.DrainResponse{Active: int32(active)})
	}
	fmt.Fprintf(c.stdout, "draining: new acquires fail with UNAVAILABLE; %s still active\n", leaseCount(active))
	return nil
}

func (c *cli) undrain(ctx context.Context, args []string) error {
	if err := c.noArguments(c.flagSet("undrain"), args); err != nil {
		return err
	}
	_, err := adminCall(ctx, c, "undrain", func(ctx context.Context, cl *client.Client) (struct{}, error) {
		return struct{}{}, cl.Undrain(ctx)
	})
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.stdout, &brokerv1.UndrainResponse{})
	}
	fmt.Fprintln(c.stdout, "undrained: granting leases again")
	return nil
}

// idleReport is wait-idle's --json document.
type idleReport struct {
	Idle          bool    `json:"idle"`
	Active        int32   `json:"active"`
	Opening       int32   `json:"opening"`
	Draining      bool    `json:"draining"`
	WaitedSeconds float64 `json:"waited_seconds"`
}

// waitIdle polls GetStats until no lease is active or opening. The global
// --timeout bounds the whole wait (each poll included), so that a preStop
// hook's `wait-idle --timeout 50s` ends within its grace period.
func (c *cli) waitIdle(ctx context.Context, args []string) error {
	interval := time.Second
	fs := c.flagSet("wait-idle")
	fs.DurationVar(&interval, "interval", interval, "time between polls")
	if err := c.noArguments(fs, args); err != nil {
		return err
	}
	if interval <= 0 {
		return usageErrorf("wait-idle: --interval must be positive, not %v", interval)
	}
	cl, err := c.dial()
	if err != nil {
		return err
	}
	defer cl.Close()

	start := time.Now()
	waitCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// A deadline of the caller's that comes first is not ours to report
	// as a timeout.
	parentDeadline, ok := ctx.Deadline()
	ownDeadline := !ok || !parentDeadline.Before(start.Add(c.timeout))
	var prev *brokerv1.GetStatsResponse // the previous busy poll
	progress := func(st *brokerv1.GetStatsResponse) {
		if !c.json {
			if prev == nil && !st.GetDraining() {
				fmt.Fprintln(c.stderr, "client: wait-idle: the broker is not draining, so new leases may keep it busy (run drain first)")
			}
			if busy := busyLeases(st); prev == nil || busyLeases(prev) != busy {
				fmt.Fprintf(c.stdout, "%s active, waiting (%v left)\n", leaseCount(busy),
					time.Until(start.Add(c.timeout)).Round(time.Second))
			}
		}
		prev = st
	}
	last, err := cl.WaitIdle(waitCtx, interval, progress)
	// A wait cut short by our own deadline is a timeout, once we know the
	// broker answers; anything else is the call's failure. A poll's status
	// can arrive (from the broker, which got the deadline too) a moment
	// before waitCtx reports it.
	timedOut := err != nil && last != nil && ownDeadline && ctx.Err() == nil &&
		(waitCtx.Err() != nil || status.Code(err) == codes.DeadlineExceeded)
	if err != nil && !timedOut {
		return rpcError("wait-idle", err)
	}
	if c.json {
		r := idleReport{Idle: !timedOut, Active: last.GetActive(), Opening: last.GetOpening(),
			Draining: last.GetDraining(), WaitedSeconds: time.Since(start).Seconds()}
		if err := writeJSON(c.stdout, r); err != nil {
			return err
		}
	}
	if timedOut {
		return &exitError{code: exitNotReady, msg: fmt.Sprintf("client: wait-idle: %s still active after %v",
			leaseCount(busyLeases(last)), c.timeout)}
	}
	if !c.json {
		fmt.Fprintf(c.stdout, "idle: no lease active (waited %v)\n", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// busyLeases counts the leases that keep the broker from being idle.
func busyLeases(st *brokerv1.GetStatsResponse) int {
	return int(st.GetActive() + st.GetOpening())
}

// health checks the standard gRPC health service. It needs no credentials
// (the broker leaves health open), but sends the token and TLS settings of
// the global flags like any other command.
func (c *cli) health(ctx context.Context, args []string) error {
	service := leaseServiceName
	fs := c.flagSet("health")
	fs.StringVar(&service, "service", service, "health service name")
	if err := c.noArguments(fs, args); err != nil {
		return err
	}
	what := fmt.Sprintf("health %q", service)
	st, err := adminCall(ctx, c, what, func(ctx context.Context, cl *client.Client) (healthpb.HealthCheckResponse_ServingStatus, error) {
		return cl.Health(ctx, service)
	})
	if err != nil {
		return err
	}
	if c.json {
		if err := writeJSON(c.stdout, &healthpb.HealthCheckResponse{Status: st}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.stdout, "%q: %s\n", service, st)
	}
	if st != healthpb.HealthCheckResponse_SERVING {
		return &exitError{code: exitNotReady, msg: fmt.Sprintf("client: %s: %s", what, st)}
	}
	return nil
}

// noArguments parses the flags fs of a command that takes no argument.
func (c *cli) noArguments(fs *flag.FlagSet, args []string) error {
	rest, err := c.parse(fs, args, true)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("%s: unexpected argument %q", fs.Name(), rest[0])
	}
	return nil
}

// leaseCount is "1 lease" or "N leases".
func leaseCount(n int) string {
	if n == 1 {
		return "1 lease"
	}
	return fmt.Sprintf("%d leases", n)
}
