package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuickRun runs the whole benchmark at --quick sizes (about a
// minute, real Chromium) and checks that every figure is there. It runs
// only with BROKER_BENCH_SMOKE=1, so that `make test` stays fast.
func TestQuickRun(t *testing.T) {
	if os.Getenv("BROKER_BENCH_SMOKE") != "1" {
		t.Skip("set BROKER_BENCH_SMOKE=1 to run the benchmark at --quick sizes")
	}
	out := filepath.Join(t.TempDir(), "results.json")
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"--quick", "--out", out}, &stdout, &stderr); err != nil {
		t.Fatalf("run(--quick) = %v\nstderr:\n%s", err, stderr.String())
	}
	for _, want := range []string{"Grant latency", "Scraper job", "Evaluate", "Lease churn", "Reclaim latency", "Memory", "warm pool hit", "broker, warm pool", "hit rate", "images blocked"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, stdout.String())
		}
	}

	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("results are not JSON: %v\n%s", err, b)
	}
	positive := map[string]float64{
		"grant_latency.cold.p50_ms":                        r.Grant.Cold.P50Ms,
		"grant_latency.warm_pool_hit.p50_ms":               r.Grant.WarmPoolHit.P50Ms,
		"scraper_job.broker_warm_pool.p50_ms":              r.Jobs.BrokerWarm.P50Ms,
		"scraper_job.broker_warm_pool_over_in_process":     r.Jobs.BrokerWarmOverInProcess.P50,
		"scraper_job.warm_pool.hit_rate":                   r.Jobs.WarmPool.HitRate,
		"scraper_job.broker.p50_ms":                        r.Jobs.Broker.P50Ms,
		"scraper_job.in_process.p50_ms":                    r.Jobs.InProcess.P50Ms,
		"scraper_job.browser_server.p50_ms":                r.Jobs.BrowserServer.P50Ms,
		"scraper_job_images_blocked.images_loaded.p50_ms":  r.Blocked.Loaded.P50Ms,
		"scraper_job_images_blocked.images_blocked.p50_ms": r.Blocked.Blocked.P50Ms,
		"scraper_job_images_blocked.blocked_over_loaded":   r.Blocked.BlockedOverLoaded.P50,
		"scraper_job.broker_over_in_process":               r.Jobs.BrokerOverInProcess.P50,
		"evaluate_overhead.broker.p50_ms":                  r.Evaluate.Broker.P50Ms,
		"evaluate_overhead.in_process.p50_ms":              r.Evaluate.InProcess.P50Ms,
		"lease_churn.real_chromium.cycles_per_s":           r.Churn.RealChromium.CyclesPerS,
		"reclaim_latency.release.latency.p50_ms":           r.Reclaim.Release.Latency.P50Ms,
		"reclaim_latency.stream_cancel.latency.p50_ms":     r.Reclaim.StreamCancel.Latency.P50Ms,
		"reclaim_latency.ttl_expiry.latency.p50_ms":        r.Reclaim.TTLExpiry.Latency.P50Ms,
	}
	for name, v := range positive {
		if !(v > 0) {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
	if g := r.Grant; g.WarmPoolHit.N == 0 || g.WarmPoolHit.N != g.Cold.N || g.WarmHits != uint64(g.WarmPoolHit.N) || g.WarmMisses != 0 {
		t.Errorf("grant_latency: cold n %d, warm_pool_hit n %d, warm hits %d, misses %d; want as many warm as cold samples (> 0), each a hit",
			g.Cold.N, g.WarmPoolHit.N, g.WarmHits, g.WarmMisses)
	}
	if wp := r.Jobs.WarmPool; wp.Hits+wp.Misses != r.Jobs.BrokerWarm.N || r.Jobs.BrokerWarm.N != r.Jobs.Broker.N || wp.HitRate <= 0 || wp.HitRate > 1 {
		t.Errorf("scraper_job.warm_pool = %+v with %d warm-pool and %d cold broker jobs; want a hit or a miss per warm-pool job and a hit rate in (0, 1]",
			wp, r.Jobs.BrokerWarm.N, r.Jobs.Broker.N)
	}
	if b := r.Blocked; b.Blocked.N != b.Loaded.N || b.BlockedRequests != uint64(galleryImages*(r.Settings.Jobs+r.Settings.WarmupRounds)) {
		t.Errorf("scraper_job_images_blocked: %d blocked and %d loaded jobs, blocked_requests %d; want as many of each and %d per blocked job",
			b.Blocked.N, b.Loaded.N, b.BlockedRequests, galleryImages)
	}
	if len(r.Churn.CoreFake) == 0 || r.Churn.CoreFake[0].CyclesPerS <= 0 {
		t.Errorf("lease_churn.core_fake_backend = %+v, want cycles/s for each concurrency", r.Churn.CoreFake)
	}
	if n := len(r.Memory.Levels); n < 2 || r.Memory.Levels[0].TotalMiB <= 0 || r.Memory.Levels[n-1].PerLeaseMiB <= 0 {
		t.Errorf("memory.levels = %+v, want PSS at every level and a cost per lease", r.Memory.Levels)
	}

	// Everything the run started is gone: broker, drivers, browsers.
	deadline := time.Now().Add(15 * time.Second)
	for {
		left := descendants(os.Getpid())
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left behind by the run: %+v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
