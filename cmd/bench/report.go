package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Results is everything one run measured. Every figure's unit is in its
// JSON name: _ms milliseconds, _s seconds, _per_s per second, _mib MiB
// (2^20 bytes); ratios are plain numbers.
type Results struct {
	Started  time.Time     `json:"started"`
	Took     time.Duration `json:"-"`
	TookS    float64       `json:"took_s"`
	Quick    bool          `json:"quick"`
	Smoke    bool          `json:"smoke"`
	Host     Host          `json:"host"`
	Settings Settings      `json:"settings"`
	Grant    GrantResult   `json:"grant_latency"`
	Jobs     JobResult     `json:"scraper_job"`
	Blocked  BlockResult   `json:"scraper_job_images_blocked"`
	Evaluate EvalResult    `json:"evaluate_overhead"`
	Churn    ChurnResult   `json:"lease_churn"`
	Reclaim  ReclaimResult `json:"reclaim_latency"`
	Memory   MemoryResult  `json:"memory"`
	Fleet    FleetResult   `json:"fleet"`
	Targets  []Target      `json:"targets"`
}

// Host describes the machine and the software measured.
type Host struct {
	CPUs              int     `json:"cpus"`
	MemTotalMiB       float64 `json:"mem_total_mib"`
	LoadAvg1Start     float64 `json:"loadavg_1m_start"`
	LoadAvg1End       float64 `json:"loadavg_1m_end"`
	GoVersion         string  `json:"go_version"`
	ChromiumPath      string  `json:"chromium_path"`
	ChromiumVersion   string  `json:"chromium_version"`
	PlaywrightVersion string  `json:"playwright_version"`
	BrokerPath        string  `json:"broker_path"`
}

// Settings are the sizes the run used.
type Settings struct {
	Capacity           int     `json:"capacity_leases"`
	Jobs               int     `json:"jobs_per_path"`
	WarmupRounds       int     `json:"warmup_rounds_per_path"`
	Grants             int     `json:"grants"`
	Evals              int     `json:"evals_per_path"`
	Reclaims           int     `json:"reclaims_per_trigger"`
	ReclaimTTLMs       float64 `json:"reclaim_ttl_ms"`
	PollIntervalMs     float64 `json:"stats_poll_interval_ms"`
	ChurnCycles        int     `json:"churn_cycles"`
	CoreCycles         int     `json:"core_cycles"`
	CoreConcurrency    []int   `json:"core_concurrency"`
	MemoryLevels       []int   `json:"memory_levels_leases"`
	MemorySettleMs     float64 `json:"memory_settle_ms"`
	ContextsPerBrowser int     `json:"contexts_per_browser"`
	// Warm is the --warm of the broker that ran the grant latency, the
	// scraper jobs and the Evaluate calls; Brokers says which broker ran
	// which measurement.
	Warm    int    `json:"warm_pool_size"`
	Brokers string `json:"brokers"`
	// Sections are the measurements that ran (--sections); the others'
	// figures are zero.
	Sections []string `json:"sections"`
}

// Latency summarises a sample of durations. P99 uses the nearest rank, so
// with fewer than 100 samples it is the largest or close to it.
type Latency struct {
	N      int     `json:"n"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MeanMs float64 `json:"mean_ms"`
	MinMs  float64 `json:"min_ms"`
	MaxMs  float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarize computes the percentiles of a sample (nearest rank).
func summarize(sample []time.Duration) Latency {
	if len(sample) == 0 {
		return Latency{}
	}
	s := slices.Clone(sample)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return Latency{
		N:      len(s),
		P50Ms:  round(ms(rank(0.50))),
		P99Ms:  round(ms(rank(0.99))),
		MeanMs: round(ms(sum / time.Duration(len(s)))),
		MinMs:  round(ms(s[0])),
		MaxMs:  round(ms(s[len(s)-1])),
	}
}

// round keeps three decimals: microseconds for milliseconds.
func round(v float64) float64 { return math.Round(v*1000) / 1000 }

// Ratio compares two latencies: a/b at p50 and at p99.
type Ratio struct {
	P50 float64 `json:"p50_ratio"`
	P99 float64 `json:"p99_ratio"`
}

func ratio(a, b Latency) Ratio {
	div := func(x, y float64) float64 {
		if y == 0 {
			return 0
		}
		return math.Round(x/y*100) / 100
	}
	return Ratio{P50: div(a.P50Ms, b.P50Ms), P99: div(a.P99Ms, b.P99Ms)}
}

// GrantResult is the time from sending acquire to receiving granted, cold
// (a new context) and from the warm pool.
type GrantResult struct {
	Method      string  `json:"method"`
	ColdMethod  string  `json:"cold_method"`
	WarmMethod  string  `json:"warm_pool_hit_method"`
	Cold        Latency `json:"cold"`
	WarmPoolHit Latency `json:"warm_pool_hit"`
	// WarmPoolSize is the broker's --warm.
	WarmPoolSize int `json:"warm_pool_size"`
	// WarmHits and WarmMisses are how much GetStats' warm_hits and
	// warm_misses rose over the timed acquires: hits == warm_pool_hit.n
	// and no misses, or the run fails.
	WarmHits   uint64 `json:"warm_hits"`
	WarmMisses uint64 `json:"warm_misses"`
}

// WarmUse is how the warm-pool path of the scraper job fared: each of its
// acquires either took a warm context (hit) or found none ready (miss)
// and opened one, as GetStats' warm_hits and warm_misses show around the
// job.
type WarmUse struct {
	Method string `json:"method"`
	// Hits and Misses count the timed jobs; HitRate = Hits / (Hits +
	// Misses).
	Hits    int     `json:"hits"`
	Misses  int     `json:"misses"`
	HitRate float64 `json:"hit_rate"`
	// AllHits and AllMisses count every job of the path, warm-up included.
	AllHits   int `json:"all_hits"`
	AllMisses int `json:"all_misses"`
	// HitLatency and MissLatency split the timed jobs by hit and miss.
	HitLatency  Latency `json:"hit_job"`
	MissLatency Latency `json:"miss_job"`
}

// JobResult is the scraper job on the four paths, run interleaved.
type JobResult struct {
	Job string `json:"job"`
	// Broker leases with a non-default viewport (cold: a new context per
	// job); BrokerWarm with default options (from the warm pool).
	Broker        Latency `json:"broker"`
	BrokerWarm    Latency `json:"broker_warm_pool"`
	InProcess     Latency `json:"in_process"`
	BrowserServer Latency `json:"browser_server"`
	BrokerMethod  string  `json:"broker_method"`
	WarmMethod    string  `json:"broker_warm_pool_method"`
	WarmPool      WarmUse `json:"warm_pool"`
	// Steps is each path's per-step latency (acquire, navigate, fill,
	// click, text, release).
	Steps                       map[string]map[string]Latency `json:"steps"`
	BrokerOverInProcess         Ratio                         `json:"broker_over_in_process"`
	BrokerOverBrowserServer     Ratio                         `json:"broker_over_browser_server"`
	BrokerWarmOverInProcess     Ratio                         `json:"broker_warm_pool_over_in_process"`
	BrokerWarmOverBrowserServer Ratio                         `json:"broker_warm_pool_over_browser_server"`
	BrokerWarmOverBroker        Ratio                         `json:"broker_warm_pool_over_broker"`
}

// BlockResult is the scraper job on a page with images, through the
// broker with images loaded and blocked, run interleaved.
type BlockResult struct {
	Job     string  `json:"job"`
	Method  string  `json:"method"`
	Loaded  Latency `json:"images_loaded"`
	Blocked Latency `json:"images_blocked"`
	// BlockedRequests is how much GetStats' blocked_requests rose over
	// all the jobs, warm-up included.
	BlockedRequests uint64 `json:"blocked_requests"`
	// Steps is each variant's per-step latency.
	Steps             map[string]map[string]Latency `json:"steps"`
	BlockedOverLoaded Ratio                         `json:"blocked_over_loaded"`
}

// EvalResult is Evaluate("1") on a loaded page, per path.
type EvalResult struct {
	Broker                  Latency `json:"broker"`
	InProcess               Latency `json:"in_process"`
	BrowserServer           Latency `json:"browser_server"`
	BrokerOverInProcess     Ratio   `json:"broker_over_in_process"`
	BrokerOverheadP50Ms     float64 `json:"broker_overhead_p50_ms"`
	BrokerOverBrowserServer Ratio   `json:"broker_over_browser_server"`
}

// Throughput is a closed loop of acquire+release cycles at a concurrency.
type Throughput struct {
	Concurrency int     `json:"concurrency"`
	Cycles      int     `json:"cycles"`
	WallS       float64 `json:"wall_s"`
	CyclesPerS  float64 `json:"cycles_per_s"`
	Cycle       Latency `json:"cycle"`
}

// ChurnResult is lease churn through the broker with real Chromium, and
// through the lease core and gRPC alone over a fake backend.
type ChurnResult struct {
	Cycle         string       `json:"cycle"`
	RealChromium  Throughput   `json:"real_chromium"`
	CoreFake      []Throughput `json:"core_fake_backend"`
	CoreFakeSetup string       `json:"core_fake_backend_setup"`
}

// ReclaimPath is the reclaim latency of one trigger.
type ReclaimPath struct {
	Method  string  `json:"method"`
	Latency Latency `json:"latency"`
}

// ReclaimResult is the time from a trigger to the capacity being free.
type ReclaimResult struct {
	Release      ReclaimPath `json:"release"`
	StreamCancel ReclaimPath `json:"stream_cancel"`
	TTLExpiry    ReclaimPath `json:"ttl_expiry"`
}

// MemLevel is the memory of the broker and its processes with a number of
// leases held, each with the job page loaded.
type MemLevel struct {
	Leases      int     `json:"leases"`
	TotalMiB    float64 `json:"pss_total_mib"`
	BrokerMiB   float64 `json:"pss_broker_mib"`
	DriverMiB   float64 `json:"pss_driver_mib"`
	ChromiumMiB float64 `json:"pss_chromium_mib"`
	Processes   int     `json:"processes"`
	Renderers   int     `json:"renderer_processes"`
	Browsers    int     `json:"browsers"`
	// PerLeaseMiB is (total - total at 0 leases) / leases.
	PerLeaseMiB float64 `json:"per_lease_mib,omitempty"`
}

// MemoryResult is PSS at several lease counts.
type MemoryResult struct {
	Method string     `json:"method"`
	Levels []MemLevel `json:"levels"`
}

// Target is one of the targets beside the figure measured for it.
type Target struct {
	Name string `json:"name"`
	// Target is the bound, as text ("<= 0.7", ">= 5000"); Limit is its
	// number, in Unit.
	Target   string  `json:"target"`
	Limit    float64 `json:"limit"`
	Measured float64 `json:"measured"`
	Unit     string  `json:"unit"`
	Met      bool    `json:"met"`
	// Detail says which figure Measured is.
	Detail string `json:"detail"`
}

// The targets.
const (
	targetJobRatio      = 0.7  // scraper job p50, broker / each alternative
	targetWarmGrantMs   = 5.0  // warm-pool grant p50
	targetOverheadMs    = 1.0  // Evaluate overhead p50, broker - in-process
	targetCoreCyclesPS  = 5000 // fake-backend churn on 2 cores
	targetPerLeaseBytes = 64e6 // PSS per lease at 50 leases: 64 MB
	targetMemoryLeases  = 50
)

// targets sets each of the targets beside what the run measured,
// for the sections that ran.
func targets(r *Results) []Target {
	ran := func(name string) bool { return slices.Contains(r.Settings.Sections, name) }
	out := []Target{} // an empty list, not null, when no target's section ran
	atMost := func(name string, limit, measured float64, unit, format, detail string) {
		out = append(out, Target{Name: name, Target: "<= " + fmt.Sprintf(format, limit), Limit: limit,
			Measured: measured, Unit: unit, Met: measured <= limit, Detail: detail})
	}
	if ran("jobs") {
		j := r.Jobs
		atMost("scraper job p50, broker (warm pool) / in-process", targetJobRatio, j.BrokerWarmOverInProcess.P50, "ratio", "%.2f",
			fmt.Sprintf("%.1f ms / %.1f ms; default options, from the warm pool", j.BrokerWarm.P50Ms, j.InProcess.P50Ms))
		atMost("scraper job p50, broker (warm pool) / browser server", targetJobRatio, j.BrokerWarmOverBrowserServer.P50, "ratio", "%.2f",
			fmt.Sprintf("%.1f ms / %.1f ms; default options, from the warm pool", j.BrokerWarm.P50Ms, j.BrowserServer.P50Ms))
		atMost("scraper job p50, broker (cold) / in-process", targetJobRatio, j.BrokerOverInProcess.P50, "ratio", "%.2f",
			fmt.Sprintf("%.1f ms / %.1f ms; a non-default viewport: a new context per job", j.Broker.P50Ms, j.InProcess.P50Ms))
		atMost("scraper job p50, broker (cold) / browser server", targetJobRatio, j.BrokerOverBrowserServer.P50, "ratio", "%.2f",
			fmt.Sprintf("%.1f ms / %.1f ms; a non-default viewport: a new context per job", j.Broker.P50Ms, j.BrowserServer.P50Ms))
	}
	if ran("grant") {
		atMost("warm-pool grant p50", targetWarmGrantMs, r.Grant.WarmPoolHit.P50Ms, "ms", "%.0f",
			fmt.Sprintf("acquire sent -> granted received, %d acquires, each a warm-pool hit", r.Grant.WarmPoolHit.N))
	}
	if ran("evaluate") {
		e := r.Evaluate
		atMost("per-command overhead p50", targetOverheadMs, e.BrokerOverheadP50Ms, "ms", "%.0f",
			fmt.Sprintf(`Evaluate("1") p50 through the broker minus in-process: %.3f ms - %.3f ms`, e.Broker.P50Ms, e.InProcess.P50Ms))
	}
	if ran("core") && len(r.Churn.CoreFake) > 0 {
		// At concurrency = capacity (the broker's default of 4 per CPU)
		// when that ran, else the highest.
		t := r.Churn.CoreFake[len(r.Churn.CoreFake)-1]
		for _, x := range r.Churn.CoreFake {
			if x.Concurrency == r.Settings.Capacity {
				t = x
			}
		}
		out = append(out, Target{Name: "fake-backend lease churn", Target: fmt.Sprintf(">= %d", targetCoreCyclesPS), Limit: targetCoreCyclesPS,
			Measured: t.CyclesPerS, Unit: "cycles/s", Met: t.CyclesPerS >= targetCoreCyclesPS,
			Detail: fmt.Sprintf("lease core + gRPC over a fake backend at concurrency %d, %d CPUs", t.Concurrency, r.Host.CPUs)})
	}
	if ran("memory") && len(r.Memory.Levels) > 0 {
		m := r.Memory.Levels[len(r.Memory.Levels)-1]
		limit := math.Round(targetPerLeaseBytes/(1<<20)*10) / 10 // 64 MB in MiB
		detail := fmt.Sprintf("PSS per lease at %d leases, (total - total at 0) / leases; 64 MB = %.1f MiB", m.Leases, limit)
		if m.Leases != targetMemoryLeases {
			detail += fmt.Sprintf(" (the target is at %d leases; this run went to %d)", targetMemoryLeases, m.Leases)
		}
		atMost(fmt.Sprintf("PSS per lease at %d leases", m.Leases), limit, m.PerLeaseMiB, "MiB", "%.1f", detail)
	}
	return out
}

// writeJSON writes the results to path, creating its folder.
func writeJSON(path string, r *Results) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// printTable writes the human-readable summary.
func printTable(w io.Writer, r *Results) {
	size := ""
	switch {
	case r.Smoke:
		size = ", --smoke"
	case r.Quick:
		size = ", --quick"
	}
	chromium := r.Host.ChromiumVersion
	if chromium == "" {
		chromium = r.Host.ChromiumPath
	}
	fmt.Fprintf(w, "browser-lease broker benchmark  %s  (%d CPUs, load %.2f→%.2f, %s, Playwright %s%s)\n",
		r.Started.Format(time.RFC3339), r.Host.CPUs, r.Host.LoadAvg1Start, r.Host.LoadAvg1End,
		chromium, r.Host.PlaywrightVersion, size)
	fmt.Fprintf(w, "sections: %s\n", strings.Join(r.Settings.Sections, ","))
	ran := func(name string) bool { return slices.Contains(r.Settings.Sections, name) }
	if r.Settings.Brokers != "" {
		fmt.Fprintf(w, "brokers: %s\n", r.Settings.Brokers)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...any) {
		for i, c := range cells {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			switch v := c.(type) {
			case float64:
				fmt.Fprintf(tw, "%.2f", v)
			default:
				fmt.Fprint(tw, v)
			}
		}
		fmt.Fprint(tw, "\t\n")
	}
	section := func(title string) {
		tw.Flush()
		fmt.Fprintf(w, "\n%s\n", title)
	}
	lat := func(name string, l Latency, extra ...any) {
		row(append([]any{name, l.N, l.P50Ms, l.P99Ms, l.MeanMs, l.MaxMs}, extra...)...)
	}

	if ran("grant") {
		section(fmt.Sprintf("1. Grant latency through the broker (acquire sent → granted received; broker with --warm %d)", r.Grant.WarmPoolSize))
		row("", "n", "p50 ms", "p99 ms", "mean ms", "max ms")
		lat(fmt.Sprintf("cold (viewport %dx%d: new context + page)", coldViewport.Width, coldViewport.Height), r.Grant.Cold)
		lat("warm pool hit (default options)", r.Grant.WarmPoolHit)
		tw.Flush()
		fmt.Fprintf(w, "   warm_hits rose by %d, warm_misses by %d over the %d warm acquires; the pool was full before every acquire\n",
			r.Grant.WarmHits, r.Grant.WarmMisses, r.Grant.WarmPoolHit.N)
	}

	if ran("jobs") {
		section("2. Scraper job: " + r.Jobs.Job)
		fmt.Fprintln(w, "   ratios: the broker path's time / this path's time (below 1: the broker is faster)")
		row("path", "n", "p50 ms", "p99 ms", "mean ms", "max ms", "broker cold/this p50", "p99", "broker warm/this p50", "p99")
		j := r.Jobs
		lat("broker, cold (gRPC)", j.Broker, "", "", j.BrokerWarmOverBroker.P50, j.BrokerWarmOverBroker.P99)
		lat("broker, warm pool (gRPC)", j.BrokerWarm, "", "", "", "")
		lat("playwright-go in-process", j.InProcess, j.BrokerOverInProcess.P50, j.BrokerOverInProcess.P99, j.BrokerWarmOverInProcess.P50, j.BrokerWarmOverInProcess.P99)
		lat("browser server (connect/job)", j.BrowserServer, j.BrokerOverBrowserServer.P50, j.BrokerOverBrowserServer.P99, j.BrokerWarmOverBrowserServer.P50, j.BrokerWarmOverBrowserServer.P99)
		tw.Flush()
		fmt.Fprintf(w, "   broker/in-process p50 = %.2f (cold), %.2f (warm pool); broker/browser-server p50 = %.2f (cold), %.2f (warm pool)\n",
			j.BrokerOverInProcess.P50, j.BrokerWarmOverInProcess.P50, j.BrokerOverBrowserServer.P50, j.BrokerWarmOverBrowserServer.P50)
		wp := j.WarmPool
		fmt.Fprintf(w, "   warm pool: %d hits, %d misses over the %d timed warm-pool jobs, hit rate %.0f%% (warm-up included: %d hits, %d misses)\n",
			wp.Hits, wp.Misses, wp.Hits+wp.Misses, 100*wp.HitRate, wp.AllHits, wp.AllMisses)
		if wp.Misses > 0 {
			fmt.Fprintf(w, "   warm-pool jobs that hit: p50 %.2f ms; that missed (refill behind): p50 %.2f ms\n", wp.HitLatency.P50Ms, wp.MissLatency.P50Ms)
		}
		fmt.Fprintln(w, "   p50 per step, ms:")
		row("path", "acquire", "navigate", "fill", "click", "text", "release")
		for _, p := range []struct{ key, name string }{{"broker", "broker, cold"}, {"broker_warm_pool", "broker, warm pool"}, {"in_process", "in-process"}, {"browser_server", "browser server"}} {
			st := r.Jobs.Steps[p.key]
			row(p.name, st["acquire"].P50Ms, st["navigate"].P50Ms, st["fill"].P50Ms, st["click"].P50Ms, st["text"].P50Ms, st["release"].P50Ms)
		}
	}

	if ran("blocked") {
		section("2b. Scraper job with images blocked: " + r.Blocked.Job)
		row("", "n", "p50 ms", "p99 ms", "mean ms", "max ms", "navigate p50 ms", "blocked/loaded p50", "p99")
		b := r.Blocked
		lat("images loaded", b.Loaded, b.Steps["images_loaded"]["navigate"].P50Ms, "", "")
		lat("images blocked (block {image})", b.Blocked, b.Steps["images_blocked"]["navigate"].P50Ms, b.BlockedOverLoaded.P50, b.BlockedOverLoaded.P99)
		tw.Flush()
		fmt.Fprintf(w, "   blocked/loaded p50 = %.2f; blocked_requests rose by %d over the run; every loaded job fetched every image, no blocked job any\n",
			b.BlockedOverLoaded.P50, b.BlockedRequests)
	}

	if ran("evaluate") {
		section(`3. Per-command overhead: Evaluate("1") on the loaded page`)
		row("path", "n", "p50 ms", "p99 ms", "mean ms", "max ms", "broker/this p50", "p99")
		lat("broker (gRPC)", r.Evaluate.Broker, "", "")
		lat("playwright-go in-process", r.Evaluate.InProcess, r.Evaluate.BrokerOverInProcess.P50, r.Evaluate.BrokerOverInProcess.P99)
		lat("browser server", r.Evaluate.BrowserServer, r.Evaluate.BrokerOverBrowserServer.P50, r.Evaluate.BrokerOverBrowserServer.P99)
		tw.Flush()
		fmt.Fprintf(w, "   broker overhead per command at p50 (broker - in-process): %.3f ms\n", r.Evaluate.BrokerOverheadP50Ms)
	}

	if ran("churn") || ran("core") {
		section("4. Lease churn, closed loop (acquire → granted → release → revoked{RELEASED}, no page commands)")
		row("setup", "concurrency", "cycles", "cycles/s", "p50 ms", "p99 ms")
		thr := func(name string, t Throughput) {
			row(name, t.Concurrency, t.Cycles, t.CyclesPerS, t.Cycle.P50Ms, t.Cycle.P99Ms)
		}
		if ran("churn") {
			thr("broker, real Chromium", r.Churn.RealChromium)
		}
		for _, t := range r.Churn.CoreFake {
			thr("lease core + gRPC, fake backend", t)
		}
	}

	if ran("reclaim") {
		section("5. Reclaim latency (trigger → capacity free)")
		row("trigger", "n", "p50 ms", "p99 ms", "mean ms", "max ms")
		lat("release", r.Reclaim.Release.Latency)
		lat("stream cancel", r.Reclaim.StreamCancel.Latency)
		lat("TTL expiry", r.Reclaim.TTLExpiry.Latency)
		tw.Flush()
		for _, p := range []struct {
			name string
			rp   ReclaimPath
		}{{"release", r.Reclaim.Release}, {"stream cancel", r.Reclaim.StreamCancel}, {"TTL expiry", r.Reclaim.TTLExpiry}} {
			fmt.Fprintf(w, "   %s: %s\n", p.name, p.rp.Method)
		}
	}

	if ran("memory") {
		section("6. Memory, PSS of broker + driver + Chromium (each lease with the job page loaded)")
		row("leases", "total MiB", "broker", "driver", "chromium", "browsers", "renderers", "MiB/lease")
		for _, m := range r.Memory.Levels {
			per := "-"
			if m.Leases > 0 {
				per = fmt.Sprintf("%.1f", m.PerLeaseMiB)
			}
			row(m.Leases, m.TotalMiB, m.BrokerMiB, m.DriverMiB, m.ChromiumMiB, m.Browsers, m.Renderers, per)
		}
		tw.Flush()
		fmt.Fprintf(w, "   %s\n", r.Memory.Method)
	}

	if ran("fleet") {
		section("7. Fleet: a lease of b2 driven through b2, and through b1 (any door works)")
		row("", "n", "p50 ms", "p99 ms", "mean ms", "max ms")
		lat(`Evaluate("1") on b2`, r.Fleet.EvaluateDirect)
		lat(`Evaluate("1") through b1 (routed)`, r.Fleet.EvaluateRouted)
		lat("acquire on b2 (cold)", r.Fleet.GrantDirect)
		lat("acquire through full b1 (forwarded)", r.Fleet.GrantForwarded)
		tw.Flush()
		fmt.Fprintf(w, "   routing adds %.3f ms per command at p50; forwarding adds %.3f ms per acquire at p50\n",
			r.Fleet.RoutedOverheadP50Ms, r.Fleet.ForwardOverheadP50Ms)
		fmt.Fprintf(w, "   %s\n", r.Fleet.Method)
	}

	section("Targets (issue 6), each beside what this run measured")
	row("target", "bound", "measured", "unit", "")
	for _, t := range r.Targets {
		met := "MET"
		if !t.Met {
			met = "MISSED"
		}
		row(t.Name, t.Target, fmt.Sprintf("%.2f", t.Measured), t.Unit, met)
	}
	tw.Flush()
	for _, t := range r.Targets {
		fmt.Fprintf(w, "   %s: %s\n", t.Name, t.Detail)
	}
	fmt.Fprintf(w, "\ntook %.0fs\n", r.TookS)
}

// joinInts formats a list of ints as "1,8,64".
func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ",")
}
