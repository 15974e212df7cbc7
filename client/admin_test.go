package client_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/browserbroker/broker/client"
	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/lease"
)

const (
	serving    = healthpb.HealthCheckResponse_SERVING
	notServing = healthpb.HealthCheckResponse_NOT_SERVING
)

// leaseService is the health service name of readiness probes.
var leaseService = brokerv1.LeaseService_ServiceDesc.ServiceName

func checkHealth(tb testing.TB, c *client.Client, service string, want healthpb.HealthCheckResponse_ServingStatus) {
	tb.Helper()
	if got, err := c.Health(tb.Context(), service); got != want || err != nil {
		tb.Errorf("Health(%q) = %v, %v; want %v", service, got, err, want)
	}
}

// Drain refuses new and queued acquires and turns readiness NOT_SERVING
// while the lease goes on; WaitIdle returns once it is released; Undrain
// makes the broker serve again.
func TestDrainWaitIdleUndrain(t *testing.T) {
	b := startBroker(t, lease.Config{Capacity: 1})
	c := dial(t, b.addr)
	ctx := t.Context()

	for _, service := range []string{"", leaseService,
		brokerv1.PageService_ServiceDesc.ServiceName, brokerv1.AdminService_ServiceDesc.ServiceName} {
		checkHealth(t, c, service, serving)
	}
	if got, err := c.Health(ctx, "no.such.Service"); status.Code(err) != codes.NotFound {
		t.Errorf("Health(no.such.Service) = %v, %v; want NOT_FOUND", got, err)
	}

	holder := acquire(t, c, client.AcquireOptions{TTL: time.Minute})
	queued := make(chan struct{})
	queuedErr := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctx, client.AcquireOptions{WaitTimeout: time.Minute, OnQueued: func(int) { close(queued) }})
		queuedErr <- err
	}()
	select {
	case <-queued:
	case <-time.After(guard):
		t.Fatal("second Acquire on a full broker was not queued")
	}

	if active, err := c.Drain(ctx); active != 1 || err != nil {
		t.Fatalf("Drain() with one lease held = %d, %v; want 1, nil", active, err)
	}
	select {
	case err := <-queuedErr:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("Acquire queued when the broker drained = %v, want UNAVAILABLE", err)
		}
	case <-time.After(guard):
		t.Fatal("Acquire queued when the broker drained did not return")
	}
	// Capacity is full: without the drain this would wait and end RESOURCE_EXHAUSTED.
	if _, err := c.Acquire(ctx, client.AcquireOptions{WaitTimeout: time.Second}); status.Code(err) != codes.Unavailable {
		t.Errorf("Acquire() while draining = %v, want UNAVAILABLE", err)
	}
	if active, err := c.Drain(ctx); active != 1 || err != nil {
		t.Errorf("Drain() again = %d, %v; want 1, nil", active, err)
	}
	checkHealth(t, c, leaseService, notServing)
	checkHealth(t, c, "", serving)
	if _, err := holder.Text(ctx, "body"); err != nil {
		t.Errorf("Text() on a lease held while draining = %v, want it to go on", err)
	}

	// Still busy when the deadline passes: the last stats and the deadline.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	busyPolls := 0
	st, err := c.WaitIdle(short, 20*time.Millisecond, func(*brokerv1.GetStatsResponse) { busyPolls++ })
	if status.Code(err) != codes.DeadlineExceeded || st.GetActive() != 1 || !st.GetDraining() || busyPolls == 0 {
		t.Errorf("WaitIdle(300ms) with a lease held = active %d, draining %v, %v after %d busy polls; want 1, true, DEADLINE_EXCEEDED after some",
			st.GetActive(), st.GetDraining(), err, busyPolls)
	}

	// Released once WaitIdle saw it busy: idle.
	var releaseErr error
	busyPolls = 0
	st, err = c.WaitIdle(ctx, 20*time.Millisecond, func(*brokerv1.GetStatsResponse) {
		if busyPolls++; busyPolls == 1 {
			_, releaseErr = holder.Release(ctx)
		}
	})
	if err != nil || st.GetActive() != 0 || st.GetOpening() != 0 || busyPolls == 0 {
		t.Fatalf("WaitIdle() while the lease is released = active %d, opening %d, %v after %d busy polls; want 0, 0, nil after some",
			st.GetActive(), st.GetOpening(), err, busyPolls)
	}
	if releaseErr != nil {
		t.Errorf("Release() = %v", releaseErr)
	}

	if err := c.Undrain(ctx); err != nil {
		t.Fatalf("Undrain() = %v", err)
	}
	checkHealth(t, c, leaseService, serving)
	if st := stats(t, c); st.GetDraining() {
		t.Error("Stats().Draining after Undrain = true, want false")
	}
	l := acquire(t, c, client.AcquireOptions{})
	if reason, err := l.Release(ctx); reason != brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED || err != nil {
		t.Errorf("Release() after Undrain = %v, %v; want RELEASED", reason, err)
	}
}

// WaitIdle returns at once on an idle broker, and fails with the call's
// status when the broker cannot be reached, with no stats.
func TestWaitIdleFails(t *testing.T) {
	b := startBroker(t, lease.Config{})
	c := dial(t, b.addr)
	if st, err := c.WaitIdle(t.Context(), 0, func(*brokerv1.GetStatsResponse) { t.Error("onBusy called on an idle broker") }); err != nil || st == nil {
		t.Errorf("WaitIdle() on an idle broker = %v, %v; want stats, nil", st, err)
	}
	b.grpc.Stop()
	if st, err := c.WaitIdle(t.Context(), 0, nil); status.Code(err) != codes.Unavailable || st != nil {
		t.Errorf("WaitIdle() on a stopped broker = %v, %v; want nil, UNAVAILABLE", st, err)
	}
}

// Sessions lists a sticky session held, then warm; DeleteSession of a held
// one revokes its lease, of a warm one closes it, and an unknown key is
// NOT_FOUND.
func TestSessionsAndDeleteSession(t *testing.T) {
	b := startBroker(t, lease.Config{Capacity: 2, SessionIdleTTL: time.Minute})
	c := dial(t, b.addr)
	ctx := t.Context()

	held := acquire(t, c, client.AcquireOptions{SessionKey: "shop-1", TTL: time.Minute})
	ss, err := c.Sessions(ctx)
	if err != nil || len(ss) != 1 || ss[0].GetSessionKey() != "shop-1" ||
		ss[0].GetState() != brokerv1.SessionState_SESSION_STATE_HELD || ss[0].GetLeaseId() != held.ID() || ss[0].GetGeneration() != 1 {
		t.Fatalf("Sessions() with shop-1 held = %v, %v; want it HELD by %s, generation 1", ss, err, held.ID())
	}
	if _, err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if ss, err = c.Sessions(ctx); err != nil || len(ss) != 1 || ss[0].GetState() != brokerv1.SessionState_SESSION_STATE_WARM {
		t.Fatalf("Sessions() after the release = %v, %v; want shop-1 WARM", ss, err)
	}
	if reason, err := c.DeleteSession(ctx, "shop-1"); err != nil || reason != brokerv1.ReclaimReason_RECLAIM_REASON_UNSPECIFIED {
		t.Fatalf("DeleteSession(warm shop-1) = %v, %v; want no lease reason", reason, err)
	}
	if ss, err = c.Sessions(ctx); err != nil || len(ss) != 0 {
		t.Fatalf("Sessions() after the delete = %v, %v; want none", ss, err)
	}

	again := acquire(t, c, client.AcquireOptions{SessionKey: "shop-1", TTL: time.Minute})
	if reason, err := c.DeleteSession(ctx, "shop-1"); err != nil || reason != brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED {
		t.Fatalf("DeleteSession(held shop-1) = %v, %v; want its lease REVOKED", reason, err)
	}
	select {
	case <-again.Done():
	case <-time.After(guard):
		t.Fatal("the holder of a deleted session was not told")
	}
	if r, _ := again.Reason(); r != brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED {
		t.Errorf("the holder of a deleted session saw %v, want REVOKED", r)
	}
	if _, err := c.DeleteSession(ctx, "nope"); status.Code(err) != codes.NotFound {
		t.Errorf("DeleteSession(nope) = %v, want NOT_FOUND", err)
	}
}
