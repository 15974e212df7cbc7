package server

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/lease"
)

// Metrics exports the broker to Prometheus. Gauges and counters are read
// from the lease manager and the browser pool when scraped, so there is
// one source of truth and nothing to keep in step; only the two latency
// histograms are observed here, at the edge.
type Metrics struct {
	leases   *lease.Manager
	browsers interface{ Stats() browser.Stats }
	registry *prometheus.Registry

	grantWait       prometheus.Histogram
	commandDuration *prometheus.HistogramVec
	forwarded       *prometheus.CounterVec
}

var (
	descCapacity   = prometheus.NewDesc("broker_lease_capacity", "Most leases held at once (--max-leases).", nil, nil)
	descActive     = prometheus.NewDesc("broker_leases_active", "Leases granted and not yet fully reclaimed.", nil, nil)
	descClosing    = prometheus.NewDesc("broker_leases_closing", "Active leases whose reclaim has begun.", nil, nil)
	descOpening    = prometheus.NewDesc("broker_leases_opening", "Capacity reserved for browser contexts being created.", nil, nil)
	descWaiting    = prometheus.NewDesc("broker_leases_waiting", "Acquires waiting in the queue.", nil, nil)
	descOldestWait = prometheus.NewDesc("broker_queue_oldest_wait_seconds", "How long the head of the queue has waited.", nil, nil)
	descGranted    = prometheus.NewDesc("broker_leases_granted_total", "Leases granted.", nil, nil)
	descReclaimed  = prometheus.NewDesc("broker_leases_reclaimed_total", "Leases reclaimed, by the reason that won.", []string{"reason"}, nil)
	descDuplicates = prometheus.NewDesc("broker_reclaim_duplicate_triggers_total", "Reclaim triggers that fired on a lease already being reclaimed, absorbed.", nil, nil)
	descFailures   = prometheus.NewDesc("broker_acquire_failures_total", "Acquires that failed: no capacity in time, queue full, or no browser context.", nil, nil)
	descInvariant  = prometheus.NewDesc("broker_invariant_ok", "1 when granted = active + reclaimed and browser contexts match the leases.", nil, nil)
	descViolations = prometheus.NewDesc("broker_invariant_violations_total", "Times the auditor found the lease invariant broken.", nil, nil)
	descOrphans    = prometheus.NewDesc("broker_orphans_closed_total", "Browser contexts the auditor closed because no lease owned them.", nil, nil)
	descBrowsers   = prometheus.NewDesc("broker_browsers", "Running Chromium processes.", nil, nil)
	descContexts   = prometheus.NewDesc("broker_browser_contexts", "Browser contexts held for leases.", nil, nil)
	descCrashes    = prometheus.NewDesc("broker_browser_crashes_total", "Crashes the broker did not cause, by what crashed.", []string{"what"}, nil)
	descLaunches   = prometheus.NewDesc("broker_browser_launches_total", "Chromium launches.", nil, nil)
	descRetired    = prometheus.NewDesc("broker_browsers_retired_total", "Browsers retired (by --browser-max-contexts, --browser-max-age or a hung context close).", nil, nil)
	descWarm       = prometheus.NewDesc("broker_warm_contexts", "Warm pool: contexts made ahead and ready.", nil, nil)
	descWarmUse    = prometheus.NewDesc("broker_warm_acquires_total", "Acquires with default options, by whether the warm pool served them.", []string{"result"}, nil)
	descBlocked    = prometheus.NewDesc("broker_blocked_requests_total", "Requests aborted in the browser by leases' block options.", nil, nil)
	descSessions   = prometheus.NewDesc("broker_sticky_sessions", "Sticky sessions, by state: held by a lease, or warm between leases.", []string{"state"}, nil)
	descMemoryLow  = prometheus.NewDesc("broker_memory_low", "1 while new leases wait because available memory is under --min-free-memory.", nil, nil)
	descSourceUp   = prometheus.NewDesc("broker_browser_source_connected", "1 while a browser source is connected.", []string{"source"}, nil)
	descRetiring   = prometheus.NewDesc("broker_browsers_retiring", "Retired browsers still serving their last leases.", nil, nil)
	descRestarts   = prometheus.NewDesc("broker_driver_restarts_total", "Playwright drivers started after the first.", nil, nil)
	descWarmHeld   = prometheus.NewDesc("broker_warm_refill_held", "1 while the warm pool is short and not refilled because memory is low.", nil, nil)
	descWarmYield  = prometheus.NewDesc("broker_warm_refill_yielding", "1 while the warm pool's refill waits for live work to pause.", nil, nil)
	descWarmForced = prometheus.NewDesc("broker_warm_refills_forced_total", "Warm refills that stopped waiting for live work and went ahead beside it.", nil, nil)
	descDenied     = prometheus.NewDesc("broker_policy_denied_requests_total", "Requests refused by --deny-private-networks.", nil, nil)
)

// NewMetrics returns the broker's metrics, with the Go runtime and process
// collectors beside them.
func NewMetrics(leases *lease.Manager, browsers interface{ Stats() browser.Stats }) *Metrics {
	m := &Metrics{
		leases:   leases,
		browsers: browsers,
		registry: prometheus.NewRegistry(),
		grantWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "broker_grant_wait_seconds",
			Help:    "From acquire to granted: queueing plus creating the browser context.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "broker_fleet_forwarded_acquires_total",
			Help: "Acquires this broker passed to another broker of the fleet, by why: session (to the sticky session's owner), full (no room here on arrival), queued (moved from this broker's queue when another freed up).",
		}, []string{"why"}),
		commandDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "broker_command_duration_seconds",
			Help:    "Page command duration, by method and gRPC status code.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method", "code"}),
	}
	m.registry.MustRegister(m, m.grantWait, m.commandDuration, m.forwarded,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

func (m *Metrics) observeGrant(d time.Duration) {
	if m != nil {
		m.grantWait.Observe(d.Seconds())
	}
}

func (m *Metrics) observeForward(why string) {
	if m != nil {
		m.forwarded.WithLabelValues(why).Inc()
	}
}

func (m *Metrics) observeCommand(method, code string, d time.Duration) {
	if m != nil {
		m.commandDuration.WithLabelValues(method, code).Observe(d.Seconds())
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCapacity, descActive, descClosing, descOpening, descWaiting,
		descOldestWait, descGranted, descReclaimed, descDuplicates, descFailures, descInvariant,
		descViolations, descOrphans, descBrowsers, descContexts, descCrashes, descLaunches, descRetired, descWarm, descWarmUse, descBlocked,
		descSessions, descMemoryLow, descSourceUp, descRetiring, descRestarts, descWarmHeld, descWarmYield,
		descWarmForced, descDenied} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one snapshot of each source.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	st := m.leases.Stats()
	gauge(descCapacity, float64(st.Capacity))
	gauge(descActive, float64(st.Active))
	gauge(descClosing, float64(st.Closing))
	gauge(descOpening, float64(st.Opening))
	gauge(descWaiting, float64(st.Waiting))
	gauge(descOldestWait, st.OldestWait.Seconds())
	counter(descGranted, st.GrantedTotal)
	for _, r := range lease.Reasons() {
		counter(descReclaimed, st.Reclaimed[r], r.String())
	}
	counter(descDuplicates, st.DuplicateTriggers)
	counter(descFailures, st.AcquireFailures)
	ok := 0.0
	if st.InvariantErr == nil {
		ok = 1
	}
	gauge(descInvariant, ok)
	counter(descViolations, st.InvariantViolations)
	counter(descOrphans, st.OrphansClosed)
	gauge(descContexts, float64(st.BackendLive))
	gauge(descSessions, float64(st.SessionsHeld), "held")
	gauge(descSessions, float64(st.SessionsWarm), "warm")
	gauge(descMemoryLow, one(st.MemoryLow))
	if m.browsers != nil {
		bs := m.browsers.Stats()
		gauge(descBrowsers, float64(bs.Browsers))
		counter(descCrashes, bs.BrowserCrashes, "browser")
		counter(descCrashes, bs.PageCrashes, "page")
		counter(descCrashes, bs.DriverCrashes, "driver")
		counter(descLaunches, bs.Launches)
		counter(descRetired, uint64(bs.Retired))
		gauge(descWarm, float64(bs.Warm))
		counter(descWarmUse, bs.WarmHits, "hit")
		counter(descWarmUse, bs.WarmMisses, "miss")
		counter(descBlocked, bs.Blocked)
		for _, src := range bs.Sources {
			gauge(descSourceUp, one(src.Connected), src.Name)
		}
		gauge(descRetiring, float64(bs.Retiring))
		counter(descRestarts, bs.DriverRestarts)
		gauge(descWarmHeld, one(bs.WarmHeld))
		gauge(descWarmYield, one(bs.WarmRefillYielding))
		counter(descWarmForced, bs.WarmRefillsForced)
		counter(descDenied, bs.PolicyDenied)
	}
}

// one is a flag as a gauge's value.
func one(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
