package main

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/browserbroker/broker/client"
	"github.com/browserbroker/broker/internal/lease"
	"github.com/browserbroker/broker/internal/server"
)

// fakeBackend opens sessions that are only a counter: with it, a lease
// cycle costs what the lease core, gRPC and the client cost, and nothing of
// a browser.
type fakeBackend struct{ live atomic.Int64 }

var _ lease.Backend = (*fakeBackend)(nil)

func (b *fakeBackend) Open(context.Context, any) (lease.Session, error) {
	b.live.Add(1)
	return &fakeSession{b: b}, nil
}

func (b *fakeBackend) Live() int { return int(b.live.Load()) }

type fakeSession struct {
	b      *fakeBackend
	closed atomic.Bool
}

// neverLost is the Lost channel of every fake session: fake sessions do
// not die.
var neverLost = make(chan struct{})

func (s *fakeSession) Close(context.Context) error {
	if s.closed.CompareAndSwap(false, true) {
		s.b.live.Add(-1)
	}
	return nil
}

func (s *fakeSession) Lost() <-chan struct{} { return neverLost }

func (s *fakeSession) LostReason() (lease.Reason, string) { return lease.ReasonUnspecified, "" }

// runCore measures acquire+release cycles through the lease manager and
// the broker's gRPC edge over the fake backend, served on loopback TCP and
// driven by the Go client: capacity = concurrency, so no acquire queues.
func runCore(ctx context.Context, concurrency, cycles int) (Throughput, error) {
	m := lease.New(&fakeBackend{}, lease.Config{Capacity: concurrency})
	srv := server.New(server.Config{Leases: m})
	g, _ := server.NewGRPCServer(srv, server.GRPCConfig{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Throughput{}, err
	}
	served := make(chan struct{})
	go func() {
		_ = g.Serve(lis)
		close(served)
	}()
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.Close(closeCtx)
		g.Stop()
		<-served
	}()
	c, err := client.Dial(lis.Addr().String())
	if err != nil {
		return Throughput{}, err
	}
	defer c.Close()

	// Warm the connection, the manager and the runtime up.
	if _, err := runChurn(ctx, c, concurrency, min(cycles, 20*concurrency)); err != nil {
		return Throughput{}, err
	}
	t, err := runChurn(ctx, c, concurrency, cycles)
	if err != nil {
		return Throughput{}, err
	}
	st := m.Stats()
	if st.InvariantErr != nil || st.Active != 0 || st.BackendLive != 0 {
		return Throughput{}, fmt.Errorf("after the core churn: active %d, live sessions %d, invariant %v; want 0, 0, ok",
			st.Active, st.BackendLive, st.InvariantErr)
	}
	return t, nil
}
