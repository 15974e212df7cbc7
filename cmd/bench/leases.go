package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/browserbroker/broker/client"
	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// coldViewport is the viewport cold acquires ask for: any context option
// makes an acquire non-default, and only default acquires take a warm
// context, so these always open a new context even on a broker with --warm.
// One pixel taller than the broker's default 1280x720, so the page is the
// same size on every path.
var coldViewport = &brokerv1.Viewport{Width: 1280, Height: 721}

// coldContext are the context options of a cold acquire.
func coldContext() *brokerv1.ContextOptions {
	return &brokerv1.ContextOptions{Viewport: coldViewport}
}

// warmFull polls GetStats every 10ms until the warm pool holds want
// contexts, and returns the stats that showed it.
func warmFull(ctx context.Context, c *client.Client, want int) (*brokerv1.GetStatsResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		st, err := c.Stats(ctx)
		if err != nil {
			return nil, fmt.Errorf("GetStats: %w", err)
		}
		if int(st.GetWarmContexts()) == want {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("warm pool holds %d contexts, want %d: %w", st.GetWarmContexts(), want, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// runGrants times n cold and n warm acquires on a broker started with
// --warm warm, one at a time and interleaved (cold, warm, cold, ...), each
// released, untimed, before the next: acquire sent → granted received.
// Before every acquire it waits until the warm pool is full again, so no
// refill runs during a timed acquire and every warm acquire can hit. Cold
// acquires ask for a non-default viewport (they bypass the pool); warm
// ones ask for nothing. The run fails unless warm_hits rose by exactly the
// number of warm acquires and the cold ones left the pool's counters alone.
func runGrants(ctx context.Context, c *client.Client, n, warm int) (GrantResult, error) {
	grant := func(opts *brokerv1.ContextOptions) (time.Duration, error) {
		if _, err := warmFull(ctx, c, warm); err != nil {
			return 0, err
		}
		start := time.Now()
		l, err := c.Acquire(ctx, client.AcquireOptions{TTL: time.Minute, Context: opts})
		took := time.Since(start)
		if err != nil {
			return 0, fmt.Errorf("acquire: %w", err)
		}
		if _, err := l.Release(ctx); err != nil {
			return 0, fmt.Errorf("release: %w", err)
		}
		return took, nil
	}
	// The first cold acquire warms the connection up, untimed.
	if _, err := grant(coldContext()); err != nil {
		return GrantResult{}, fmt.Errorf("warm-up acquire: %w", err)
	}
	before, err := warmFull(ctx, c, warm)
	if err != nil {
		return GrantResult{}, err
	}
	var cold, hot []time.Duration
	for i := range n {
		d, err := grant(coldContext())
		if err != nil {
			return GrantResult{}, fmt.Errorf("cold acquire %d: %w", i, err)
		}
		cold = append(cold, d)
		if d, err = grant(nil); err != nil {
			return GrantResult{}, fmt.Errorf("warm acquire %d: %w", i, err)
		}
		hot = append(hot, d)
	}
	after, err := warmFull(ctx, c, warm)
	if err != nil {
		return GrantResult{}, err
	}
	hits := after.GetWarmHits() - before.GetWarmHits()
	misses := after.GetWarmMisses() - before.GetWarmMisses()
	if hits != uint64(n) || misses != 0 {
		return GrantResult{}, fmt.Errorf("%d warm acquires made %d warm hits and %d misses, want %d and 0 "+
			"(the cold acquires must bypass the pool, every warm one hit it)", n, hits, misses, n)
	}
	return GrantResult{
		Method: fmt.Sprintf("client.Acquire one at a time on an otherwise idle broker started with --warm %d, cold and warm acquires interleaved, "+
			"each lease released before the next; before every acquire GetStats is polled until warm_contexts == %d, "+
			"so no refill runs during a timed acquire", warm, warm),
		ColdMethod: fmt.Sprintf("context option viewport %dx%d (not the default), which bypasses the warm pool: "+
			"every grant opens a new browser context and page on the running Chromium", coldViewport.Width, coldViewport.Height),
		WarmMethod:   "no context options (the defaults), served from the warm pool: the grant hands out a context and page made ahead",
		Cold:         summarize(cold),
		WarmPoolHit:  summarize(hot),
		WarmPoolSize: warm,
		WarmHits:     hits,
		WarmMisses:   misses,
	}, nil
}

// runChurn runs acquire+release cycles in a closed loop: concurrency
// workers on one client, cycles in all (after a warm-up of one cycle per
// worker).
func runChurn(ctx context.Context, c *client.Client, concurrency, cycles int) (Throughput, error) {
	cycle := func() (time.Duration, error) {
		start := time.Now()
		l, err := c.Acquire(ctx, client.AcquireOptions{TTL: time.Minute})
		if err != nil {
			return 0, fmt.Errorf("acquire: %w", err)
		}
		if _, err := l.Release(ctx); err != nil {
			return 0, fmt.Errorf("release: %w", err)
		}
		return time.Since(start), nil
	}
	loop := func(total int) ([]time.Duration, time.Duration, error) {
		var next atomic.Int64
		samples := make([][]time.Duration, concurrency)
		errs := make([]error, concurrency)
		var wg sync.WaitGroup
		start := time.Now()
		for w := range concurrency {
			wg.Go(func() {
				for next.Add(1) <= int64(total) {
					d, err := cycle()
					if err != nil {
						errs[w] = err
						next.Store(int64(total)) // stop the others
						return
					}
					samples[w] = append(samples[w], d)
				}
			})
		}
		wg.Wait()
		wall := time.Since(start)
		var all []time.Duration
		for _, s := range samples {
			all = append(all, s...)
		}
		return all, wall, errors.Join(errs...)
	}
	if _, _, err := loop(concurrency); err != nil {
		return Throughput{}, err
	}
	all, wall, err := loop(cycles)
	if err != nil {
		return Throughput{}, err
	}
	return Throughput{
		Concurrency: concurrency,
		Cycles:      len(all),
		WallS:       round(wall.Seconds()),
		CyclesPerS:  round(float64(len(all)) / wall.Seconds()),
		Cycle:       summarize(all),
	}, nil
}

// reclaimer measures reclaim latencies on a broker with nothing else held.
type reclaimer struct {
	c        *client.Client
	leases   brokerv1.LeaseServiceClient
	page     brokerv1.PageServiceClient
	admin    brokerv1.AdminServiceClient
	url      string
	interval time.Duration // GetStats polling interval
}

func newReclaimer(conn grpc.ClientConnInterface, url string, interval time.Duration) *reclaimer {
	return &reclaimer{
		c:        client.New(conn),
		leases:   brokerv1.NewLeaseServiceClient(conn),
		page:     brokerv1.NewPageServiceClient(conn),
		admin:    brokerv1.NewAdminServiceClient(conn),
		url:      url,
		interval: interval,
	}
}

// activeAtMost polls GetStats every r.interval until active <= want and
// returns when the answer that showed it arrived.
func (r *reclaimer) activeAtMost(ctx context.Context, want int32) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		st, err := r.admin.GetStats(ctx, &brokerv1.GetStatsRequest{})
		if err != nil {
			return time.Time{}, fmt.Errorf("GetStats: %w", err)
		}
		if st.GetActive() <= want {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("active still %d, want <= %d: %w", st.GetActive(), want, ctx.Err())
		case <-time.After(r.interval):
		}
	}
}

// release: acquire, load the page, then time Release, which returns when
// the broker's revoked{RELEASED} arrives; the broker sends it only after
// the context is closed and the capacity freed.
func (r *reclaimer) release(ctx context.Context) (time.Duration, error) {
	l, err := r.c.Acquire(ctx, client.AcquireOptions{TTL: time.Minute})
	if err != nil {
		return 0, fmt.Errorf("acquire: %w", err)
	}
	if _, err := l.Navigate(ctx, r.url); err != nil {
		_, _ = l.Release(ctx)
		return 0, fmt.Errorf("navigate: %w", err)
	}
	start := time.Now()
	reason, err := l.Release(ctx)
	took := time.Since(start)
	if err != nil || reason != brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED {
		return 0, fmt.Errorf("release = %v, %v; want RELEASED", reason, err)
	}
	return took, nil
}

// streamCancel: acquire on a raw stream, load the page, cancel the stream's
// context, and poll GetStats until active is back to zero.
func (r *reclaimer) streamCancel(ctx context.Context) (time.Duration, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.leases.Lease(sctx)
	if err != nil {
		return 0, err
	}
	acq := &brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{}}}
	if err := stream.Send(acq); err != nil {
		return 0, fmt.Errorf("send acquire: %w", err)
	}
	var id string
	for id == "" {
		msg, err := stream.Recv()
		if err != nil {
			return 0, fmt.Errorf("acquire: %w", err)
		}
		id = msg.GetGranted().GetLeaseId()
	}
	if _, err := r.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: r.url}); err != nil {
		return 0, fmt.Errorf("navigate: %w", err)
	}
	start := time.Now()
	cancel()
	free, err := r.activeAtMost(ctx, 0)
	if err != nil {
		return 0, err
	}
	return free.Sub(start), nil
}

// ttlExpiry: acquire with a short TTL and no renew, load the page, read the
// lease's real deadline (TTL plus jitter, from the last command) with
// GetLease, and poll GetStats from shortly before it until active is back
// to zero.
func (r *reclaimer) ttlExpiry(ctx context.Context, ttl time.Duration) (time.Duration, error) {
	l, err := r.c.Acquire(ctx, client.AcquireOptions{TTL: ttl, RenewInterval: -1})
	if err != nil {
		return 0, fmt.Errorf("acquire: %w", err)
	}
	defer l.Release(context.WithoutCancel(ctx))
	if _, err := l.Navigate(ctx, r.url); err != nil {
		return 0, fmt.Errorf("navigate: %w", err)
	}
	info, err := r.c.LeaseInfo(ctx, l.ID())
	if err != nil {
		return 0, fmt.Errorf("GetLease: %w", err)
	}
	deadline := info.GetExpiresAt().AsTime()
	select {
	case <-time.After(time.Until(deadline) - 20*time.Millisecond):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	free, err := r.activeAtMost(ctx, 0)
	if err != nil {
		return 0, err
	}
	<-l.Done()
	if reason, _ := l.Reason(); reason != brokerv1.ReclaimReason_RECLAIM_REASON_TTL_EXPIRED {
		return 0, fmt.Errorf("lease ended with %v (%v), want TTL_EXPIRED", reason, l.Err())
	}
	return free.Sub(deadline), nil
}

// runReclaims measures n reclaims per trigger, the triggers interleaved.
func runReclaims(ctx context.Context, r *reclaimer, n int, ttl time.Duration, progress func(string)) (ReclaimResult, error) {
	poll := fmt.Sprintf("polling AdminService.GetStats every %v until active drops to 0 (an upper bound: it includes up to one poll interval plus one GetStats round trip)", r.interval)
	res := ReclaimResult{
		Release:      ReclaimPath{Method: "client Lease.Release() call → revoked{RELEASED} received; the broker sends revoked only after the context is closed and the capacity freed (includes one round trip)"},
		StreamCancel: ReclaimPath{Method: "cancel of the lease stream's context (raw gRPC stream) → capacity free, seen by " + poll},
		TTLExpiry:    ReclaimPath{Method: fmt.Sprintf("the lease's real idle deadline (expires_at from GetLease after the last command; TTL %v plus jitter) → capacity free, seen by %s", ttl, poll)},
	}
	var rel, cancel, ttlS []time.Duration
	for i := range n {
		if st, err := r.c.Stats(ctx); err != nil || st.GetActive() != 0 {
			return res, fmt.Errorf("before reclaim %d: active %d, %v; want an idle broker", i, st.GetActive(), err)
		}
		d, err := r.release(ctx)
		if err != nil {
			return res, fmt.Errorf("release %d: %w", i, err)
		}
		rel = append(rel, d)
		if d, err = r.streamCancel(ctx); err != nil {
			return res, fmt.Errorf("stream cancel %d: %w", i, err)
		}
		cancel = append(cancel, d)
		if d, err = r.ttlExpiry(ctx, ttl); err != nil {
			return res, fmt.Errorf("TTL expiry %d: %w", i, err)
		}
		ttlS = append(ttlS, d)
		if (i+1)%5 == 0 {
			progress(fmt.Sprintf("reclaims: %d of %d", i+1, n))
		}
	}
	res.Release.Latency = summarize(rel)
	res.StreamCancel.Latency = summarize(cancel)
	res.TTLExpiry.Latency = summarize(ttlS)
	return res, nil
}
