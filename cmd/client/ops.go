package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// leaseServiceName is the health service name that turns NOT_SERVING while
// the broker drains or stops: what readiness probes check.
var leaseServiceName = brokerv1.LeaseService_ServiceDesc.ServiceName

func (c *cli) drain(ctx context.Context, args []string) error {
	return c.setDrain(ctx, "drain", args, func(ctx context.Context, admin brokerv1.AdminServiceClient) (proto.Message, error) {
		return admin.Drain(ctx, &brokerv1.DrainRequest{})
	})
}

func (c *cli) undrain(ctx context.Context, args []string) error {
	return c.setDrain(ctx, "undrain", args, func(ctx context.Context, admin brokerv1.AdminServiceClient) (proto.Message, error) {
		return admin.Undrain(ctx, &brokerv1.UndrainRequest{})
	})
}

// setDrain runs drain or undrain, and says what it did.
func (c *cli) setDrain(ctx context.Context, verb string, args []string, call func(context.Context, brokerv1.AdminServiceClient) (proto.Message, error)) error {
	if err := c.noArguments(verb, args); err != nil {
		return err
	}
	conn, err := c.dialConn()
	if err != nil {
		return err
	}
	defer conn.Close()
	admin := brokerv1.NewAdminServiceClient(conn)
	resp, err := callUnary(ctx, c.timeout, func(ctx context.Context) (proto.Message, error) { return call(ctx, admin) })
	if err != nil {
		return rpcError(verb, err)
	}
	if c.json {
		return writeJSON(c.stdout, resp)
	}
	if d, ok := resp.(*brokerv1.DrainResponse); ok {
		fmt.Fprintf(c.stdout, "draining: new acquires fail with UNAVAILABLE; %s still active\n", leaseCount(d.GetActive()))
	} else {
		fmt.Fprintln(c.stdout, "undrained: granting leases again")
	}
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
	rest, err := c.parse(fs, args, true)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("wait-idle: unexpected argument %q", rest[0])
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
	var last *brokerv1.GetStatsResponse
	report := func(idle bool) error {
		r := idleReport{Idle: idle, WaitedSeconds: time.Since(start).Seconds()}
		if last != nil {
			r.Active, r.Opening, r.Draining = last.GetActive(), last.GetOpening(), last.GetDraining()
		}
		if c.json {
			return writeJSON(c.stdout, r)
		}
		if idle {
			fmt.Fprintf(c.stdout, "idle: no lease active (waited %v)\n", time.Since(start).Round(time.Millisecond))
		}
		return nil
	}
	timedOut := func() error {
		if err := report(false); err != nil {
			return err
		}
		return &exitError{code: exitNotReady, msg: fmt.Sprintf("client: wait-idle: %s still active after %v",
			leaseCount(last.GetActive()+last.GetOpening()), c.timeout)}
	}
	for {
		st, err := cl.Stats(waitCtx)
		if err != nil {
			// A poll cut short by our own deadline is a timeout, once we
			// know the broker answers; anything else is the call's failure.
			// The status can arrive (from the broker, which got the
			// deadline too) a moment before waitCtx reports it.
			if last != nil && ownDeadline && ctx.Err() == nil &&
				(waitCtx.Err() != nil || status.Code(err) == codes.DeadlineExceeded) {
				return timedOut()
			}
			return rpcError("wait-idle", err)
		}
		busy := st.GetActive() + st.GetOpening()
		if busy == 0 {
			last = st
			return report(true)
		}
		if !c.json {
			if last == nil && !st.GetDraining() {
				fmt.Fprintln(c.stderr, "client: wait-idle: the broker is not draining, so new leases may keep it busy (run drain first)")
			}
			if last == nil || last.GetActive()+last.GetOpening() != busy {
				fmt.Fprintf(c.stdout, "%s active, waiting (%v left)\n", leaseCount(busy),
					time.Until(start.Add(c.timeout)).Round(time.Second))
			}
		}
		last = st
		select {
		case <-waitCtx.Done():
			if ctx.Err() != nil {
				return rpcError("wait-idle", ctx.Err())
			}
			return timedOut()
		case <-time.After(interval):
		}
	}
}

// health checks the standard gRPC health service. It needs no credentials
// (the broker leaves health open), but sends the token and TLS settings of
// the global flags like any other command.
func (c *cli) health(ctx context.Context, args []string) error {
	service := leaseServiceName
	fs := c.flagSet("health")
	fs.StringVar(&service, "service", service, "health service name")
	rest, err := c.parse(fs, args, true)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("health: unexpected argument %q", rest[0])
	}
	conn, err := c.dialConn()
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	resp, err := callUnary(ctx, c.timeout, func(ctx context.Context) (*healthpb.HealthCheckResponse, error) {
		return hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	})
	what := fmt.Sprintf("health %q", service)
	if err != nil {
		return rpcError(what, err)
	}
	if c.json {
		if err := writeJSON(c.stdout, resp); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.stdout, "%q: %s\n", service, resp.GetStatus())
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return &exitError{code: exitNotReady, msg: fmt.Sprintf("client: %s: %s", what, resp.GetStatus())}
	}
	return nil
}

// noArguments parses the flags of a command that takes no argument.
func (c *cli) noArguments(name string, args []string) error {
	rest, err := c.parse(c.flagSet(name), args, true)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("%s: unexpected argument %q", name, rest[0])
	}
	return nil
}

// leaseCount is "1 lease" or "N leases".
func leaseCount(n int32) string {
	if n == 1 {
		return "1 lease"
	}
	return fmt.Sprintf("%d leases", n)
}
