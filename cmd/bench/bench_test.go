package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/browserbroker/broker/internal/proctree"
)

// TestSmokeRun runs the whole benchmark at --smoke sizes (every path once
// or twice, real Chromium, well under a minute) and checks that every
// section and every target is in the table and the JSON. It checks no
// timing: the figures of a smoke run mean nothing.
func TestSmokeRun(t *testing.T) {
	requireBrowser(t)
	out := filepath.Join(t.TempDir(), "results.json")
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"--smoke", "--out", out}, &stdout, &stderr); err != nil {
		t.Fatalf("run(--smoke) = %v\nstderr:\n%s", err, stderr.String())
	}
	for _, want := range []string{"Grant latency", "Scraper job", "Evaluate", "Lease churn", "Reclaim latency", "Memory", "warm pool hit", "broker, warm pool", "hit rate", "images blocked", "Targets", "broker/in-process p50 =", "Fleet", "routing adds"} {
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
	// Every section is in the JSON under its name, the targets too.
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatalf("results are not a JSON object: %v", err)
	}
	for _, key := range []string{"host", "settings", "grant_latency", "scraper_job", "scraper_job_images_blocked",
		"evaluate_overhead", "lease_churn", "reclaim_latency", "memory", "fleet", "targets"} {
		if v, ok := top[key]; !ok || string(v) == "null" {
			t.Errorf("results lack %q", key)
		}
	}
	if !slices.Equal(r.Settings.Sections, allSections) {
		t.Errorf("settings.sections = %v, want every section %v", r.Settings.Sections, allSections)
	}
	// Each of the targets, with a figure.
	wantTargets := []string{
		"scraper job p50, broker (warm pool) / in-process", "scraper job p50, broker (warm pool) / browser server",
		"scraper job p50, broker (cold) / in-process", "scraper job p50, broker (cold) / browser server",
		"warm-pool grant p50", "per-command overhead p50", "fake-backend lease churn", "PSS per lease at 2 leases",
	}
	var names []string
	for _, tg := range r.Targets {
		names = append(names, tg.Name)
		if tg.Target == "" || tg.Unit == "" || tg.Detail == "" || tg.Limit <= 0 {
			t.Errorf("target %+v: want its bound, limit, unit and detail", tg)
		}
		if tg.Name != "per-command overhead p50" && !(tg.Measured > 0) {
			t.Errorf("target %q measured %v, want > 0", tg.Name, tg.Measured)
		}
		if !strings.Contains(stdout.String(), tg.Name) {
			t.Errorf("table lacks target %q", tg.Name)
		}
	}
	if !slices.Equal(names, wantTargets) {
		t.Errorf("targets = %q, want %q", names, wantTargets)
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
		left := proctree.Tree(os.Getpid())
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left behind by the run: %+v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// requireBrowser skips the test when the Playwright driver or Chromium is
// missing, unless BROKER_REQUIRE_BROWSER is set (make test sets it): then
// it fails.
func requireBrowser(t *testing.T) {
	t.Helper()
	driver := os.Getenv("PLAYWRIGHT_DRIVER_PATH")
	if driver == "" {
		if root, err := moduleRoot(); err == nil {
			driver = filepath.Join(root, ".cache", "playwright", playwrightVersion)
		}
	}
	chromium := cmpOrString(os.Getenv("BROKER_CHROMIUM"), "/usr/bin/chromium")
	var missing []string
	if _, err := os.Stat(filepath.Join(driver, "package", "cli.js")); err != nil {
		missing = append(missing, "the Playwright driver ("+err.Error()+")")
	}
	if _, err := os.Stat(chromium); err != nil {
		missing = append(missing, "Chromium ("+err.Error()+")")
	}
	if len(missing) == 0 {
		return
	}
	msg := "no " + strings.Join(missing, ", no ") + "; run make setup"
	if os.Getenv("BROKER_REQUIRE_BROWSER") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
