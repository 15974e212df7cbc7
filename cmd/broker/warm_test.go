package main

import (
	"context"
	"testing"
	"time"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// --warm: acquires with default options take a context made ahead; the
// pool refills; GetStats reports it.
func TestWarmPoolServesDefaultAcquires(t *testing.T) {
	p := startBroker(t, "--max-leases", "3", "--warm", "2")
	conn := dial(t, p.addr)
	admin := brokerv1.NewAdminServiceClient(conn)
	stats := func() *brokerv1.GetStatsResponse {
		t.Helper()
		st, err := admin.GetStats(context.Background(), &brokerv1.GetStatsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	waitWarm := func(n int32) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for stats().WarmContexts != n {
			if time.Now().After(deadline) {
				t.Fatalf("warm contexts = %d after 30s, want %d", stats().WarmContexts, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitWarm(2)
	leases := brokerv1.NewLeaseServiceClient(conn)
	for range 2 {
		s, err := leases.Lease(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{}}})
		resp, err := s.Recv()
		if err != nil || resp.GetGranted() == nil {
			t.Fatalf("acquire: %v, %v", resp, err)
		}
		s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}})
		for {
			if _, err := s.Recv(); err != nil {
				break
			}
		}
	}
	st := stats()
	if st.WarmHits != 2 || st.WarmMisses != 0 || !st.InvariantOk || st.Active != 0 {
		t.Fatalf("stats %v: want 2 warm hits, no miss, invariant ok, nothing active", st)
	}
	waitWarm(2) // refilled after the leases
}
