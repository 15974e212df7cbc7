// Package client is the Go client of the browser-lease broker, for workers
// that lease a headless Chromium page and drive it.
//
// A [Client] wraps one gRPC connection. [Client.Acquire] opens a lease
// stream, waits in the broker's queue if need be, and returns a [Lease]
// once the broker granted it. The Lease owns the stream: it renews the idle
// TTL on its own (at a third of the TTL the broker granted), notices when
// the broker ends the lease (revoked, TTL expired, browser crashed, broker
// shutting down, …) and then closes [Lease.Done]. Its page methods
// ([Lease.Navigate], [Lease.Text], [Lease.Evaluate], …) drive the page;
// [Lease.Release] gives the lease back.
//
//	c, err := client.Dial("localhost:7070")
//	if err != nil {
//		return err
//	}
//	defer c.Close()
//
//	l, err := c.Acquire(ctx, client.AcquireOptions{TTL: time.Minute})
//	if err != nil {
//		return err // a gRPC status: RESOURCE_EXHAUSTED when no capacity in time
//	}
//	defer l.Release(context.WithoutCancel(ctx))
//
//	if _, err := l.Navigate(ctx, "https://example.com/"); err != nil {
//		return err
//	}
//	titles, err := l.Text(ctx, "h1")
//
// # Errors
//
// Errors that come from the broker are gRPC status errors, unchanged:
// [google.golang.org/grpc/status.FromError] and status.Code work on them
// (NOT_FOUND, FAILED_PRECONDITION, ABORTED, DEADLINE_EXCEEDED, … as the
// API documents). A context that ends before the broker answered gives a
// CANCELLED or DEADLINE_EXCEEDED status.
//
// Once a lease ended, its page methods fail at once, without a round trip,
// with [Lease.Err]: a [*RevokedError] naming the broker's reason, which also
// carries the FAILED_PRECONDITION status the broker would have answered. A
// command in flight when the lease ends is cancelled and returns the same
// error.
//
// # Operating a broker
//
// With the admin role, a Client also inspects and steers the broker:
// [Client.Leases], [Client.LeaseInfo], [Client.Revoke], [Client.Stats],
// and, before a restart, [Client.Drain], [Client.WaitIdle] and
// [Client.Undrain]. [Client.Health] needs no role: it reads the standard
// gRPC health service, as readiness and liveness probes do.
//
// # Goroutines
//
// Each held lease runs two goroutines: one receives from its stream, one
// renews it. Both have ended when [Lease.Done] is closed, which happens at
// the latest when [Lease.Release] or [Client.Close] returns.
package client
