package main

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// --min-free-memory above what any machine has: new leases wait in the
// queue and time out saying memory is low; GetStats reports it.
func TestMemoryAdmissionHoldsNewLeases(t *testing.T) {
	p := startBroker(t, "--max-leases", "2", "--min-free-memory", "1000TiB")
	conn := dial(t, p.addr)
	st, err := brokerv1.NewAdminServiceClient(conn).GetStats(context.Background(), &brokerv1.GetStatsRequest{})
	if err != nil || !st.MemoryLow || st.MemoryAvailableBytes == 0 {
		t.Fatalf("GetStats = %v, %v; want memory_low and the available bytes", st, err)
	}
	s, err := brokerv1.NewLeaseServiceClient(conn).Lease(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{WaitTimeout: durationpb.New(500_000_000)}}})
	var queued bool
	for {
		resp, err := s.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "memory is low") || !queued {
				t.Fatalf("acquire under low memory ended %v (queued %v), want RESOURCE_EXHAUSTED saying memory is low, after queued", err, queued)
			}
			return
		}
		if resp.GetGranted() != nil {
			t.Fatal("granted a lease with memory under --min-free-memory")
		}
		queued = queued || resp.GetQueued() != nil
	}
}
