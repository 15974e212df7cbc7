package client_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/browserbroker/broker/client"
	"github.com/browserbroker/broker/internal/lease"
	"github.com/browserbroker/broker/internal/server"
	"github.com/browserbroker/broker/internal/testcert"
)

// WithTLS and WithToken reach a broker that serves TLS and wants tokens;
// the lease is the token's principal's.
func TestWithTLSAndToken(t *testing.T) {
	const token = "worker-token-0123456789"
	ca := testcert.NewCA(t, "test CA")
	cert, roots := ca.Server(t, "127.0.0.1").TLS, ca.Pool
	tokens, err := server.ParseTokens(strings.NewReader(token + " worker-7 admin\n"))
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	leases := lease.New(server.BrowserBackend{Pool: pool}, lease.Config{Capacity: 1, Logger: log})
	g, _ := server.NewGRPCServer(server.New(server.Config{Leases: leases, Browsers: pool, Logger: log,
		Auth: server.NewAuth(server.AuthConfig{Tokens: tokens})}),
		server.GRPCConfig{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); g.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		leases.Close(ctx)
		g.Stop()
		<-served
	})
	ctx := context.Background()
	dial := func(opts ...client.Option) *client.Client {
		c, err := client.Dial(lis.Addr().String(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	if _, err := dial(client.WithTLS(&tls.Config{RootCAs: roots})).Stats(ctx); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Stats over TLS without a token = %v, want UNAUTHENTICATED", err)
	}
	if _, err := dial(client.WithToken(token)).Stats(ctx); status.Code(err) != codes.Unavailable {
		t.Fatalf("Stats with a token over plaintext to a TLS broker = %v, want UNAVAILABLE", err)
	}
	c := dial(client.WithTLS(&tls.Config{RootCAs: roots}), client.WithToken(token))
	l, err := c.Acquire(ctx, client.AcquireOptions{})
	if err != nil {
		t.Fatalf("Acquire with TLS and a token: %v", err)
	}
	infos, err := c.Leases(ctx, nil)
	if err != nil || len(infos) != 1 || infos[0].GetPrincipal() != "worker-7" {
		t.Fatalf("Leases = %v, %v; want one lease of worker-7", infos, err)
	}
	if _, err := l.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
}
