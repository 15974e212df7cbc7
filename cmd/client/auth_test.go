package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// startRecordingBroker serves f and records the authorization metadata of
// each unary call.
func startRecordingBroker(t *testing.T, f *fakeBroker) (addr string, seen func() []string) {
	t.Helper()
	var mu sync.Mutex
	var auths []string
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		mu.Lock()
		auths = append(auths, strings.Join(md.Get("authorization"), "|"))
		mu.Unlock()
		return h(ctx, req)
	}))
	brokerv1.RegisterAdminServiceServer(srv, f)
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-served })
	return lis.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), auths...)
	}
}

func TestTokenFromFlagOrEnvironment(t *testing.T) {
	f := newFakeBroker()
	f.stats = &brokerv1.GetStatsResponse{Capacity: 1}
	addr, seen := startRecordingBroker(t, f)
	if r := runClient(t, t.Context(), "--addr", addr, "stats"); r.code != 0 {
		t.Fatalf("stats without a token = %v", r)
	}
	if r := runClient(t, t.Context(), "--addr", addr, "--token", "flag-token-0123456789", "stats"); r.code != 0 {
		t.Fatalf("stats --token = %v", r)
	}
	t.Setenv("BROKER_TOKEN", "env-token-0123456789")
	if r := runClient(t, t.Context(), "--addr", addr, "stats"); r.code != 0 {
		t.Fatalf("stats with BROKER_TOKEN = %v", r)
	}
	if r := runClient(t, t.Context(), "stats", "--addr", addr, "--token", "flag-wins-0123456789"); r.code != 0 {
		t.Fatalf("stats with BROKER_TOKEN and --token = %v", r)
	}
	want := []string{"", "Bearer flag-token-0123456789", "Bearer env-token-0123456789", "Bearer flag-wins-0123456789"}
	if got := seen(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("authorization metadata the broker saw = %q, want %q", got, want)
	}
}

func TestTLSFlagErrors(t *testing.T) {
	t.Parallel()
	if r := runClient(t, t.Context(), "--tls-cert", "c.pem", "stats"); r.code != exitUsage || !strings.Contains(r.stderr, "--tls-cert and --tls-key go together") {
		t.Errorf("stats --tls-cert without --tls-key = %v, want a usage error", r)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	if r := runClient(t, t.Context(), "--tls-ca", missing, "stats"); r.code != exitFailure || !strings.Contains(r.stderr, "--tls-ca") {
		t.Errorf("stats --tls-ca MISSING = %v, want exit 1 naming --tls-ca", r)
	}
}
