package server

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/lease"
	"google.golang.org/protobuf/types/known/durationpb"
)

// scrape reads one sample from the metrics endpoint; -1 when absent.
func scrape(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatalf("%s = %q: %v", series, m[1], err)
	}
	return v
}

func TestMetricsMoveWithLeases(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 3})
	srv := httptest.NewServer(b.metrics.Handler())
	defer srv.Close()
	url := srv.URL + "/metrics"

	checks := func(what string, want map[string]float64) {
		t.Helper()
		for series, v := range want {
			if got := scrape(t, url, series); got != v {
				t.Errorf("%s: %s = %v, want %v", what, series, got, v)
			}
		}
	}
	checks("idle", map[string]float64{
		"broker_leases_active": 0, "broker_lease_capacity": 3, "broker_leases_granted_total": 0,
		"broker_invariant_ok": 1, `broker_leases_reclaimed_total{reason="RELEASED"}`: 0,
	})
	h := b.acquire(t, &brokerv1.Acquire{})
	if _, err := b.page.Navigate(context.Background(), &brokerv1.NavigateRequest{LeaseId: h.id, Url: site.URL}); err != nil {
		t.Fatal(err)
	}
	b.page.Click(context.Background(), &brokerv1.ClickRequest{LeaseId: h.id, Selector: ""}) // INVALID_ARGUMENT
	checks("leased", map[string]float64{
		"broker_leases_active": 1, "broker_browser_contexts": 1, "broker_leases_granted_total": 1,
		"broker_grant_wait_seconds_count":                                              1,
		`broker_command_duration_seconds_count{code="OK",method="Navigate"}`:           1,
		`broker_command_duration_seconds_count{code="InvalidArgument",method="Click"}`: 1,
	})
	h.release()
	waitFor(t, "the reclaim", func() bool { return b.leases.Stats().Active == 0 })
	checks("released", map[string]float64{
		"broker_leases_active": 0, "broker_browser_contexts": 0, `broker_leases_reclaimed_total{reason="RELEASED"}`: 1,
		"broker_reclaim_duplicate_triggers_total": 0, "broker_invariant_violations_total": 0, "broker_orphans_closed_total": 0,
	})
	if got := scrape(t, url, "go_goroutines"); got <= 0 {
		t.Errorf("go_goroutines = %v, want the Go runtime metrics", got)
	}
	if got := scrape(t, url, "broker_browsers"); got < 1 {
		t.Errorf("broker_browsers = %v, want the pool's browsers", got)
	}
}

// The queue gauge, the duplicate-trigger counter and the process metrics
// move too, and ListLeases reports each lease's age, idle time and browser.
func TestMetricsQueueDuplicatesAndLeaseFields(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 1})
	srv := httptest.NewServer(b.metrics.Handler())
	defer srv.Close()
	url := srv.URL + "/metrics"
	ctx := context.Background()

	h := b.acquire(t, &brokerv1.Acquire{})
	if _, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: h.id, Url: site.URL}); err != nil {
		t.Fatal(err)
	}
	resp, err := b.admin.ListLeases(ctx, &brokerv1.ListLeasesRequest{})
	if err != nil || len(resp.GetLeases()) != 1 {
		t.Fatalf("ListLeases = %v, %v; want the one lease", resp, err)
	}
	info := resp.GetLeases()[0]
	age, idle := info.GetAge().AsDuration(), info.GetIdle().AsDuration()
	if age <= 0 || idle < 0 || idle > age {
		t.Errorf("ListLeases: age %v, idle %v; want 0 <= idle <= age, age > 0", age, idle)
	}
	if !strings.HasPrefix(info.GetBrowser(), "local-") { // the harness's pool launches local Chromium
		t.Errorf("ListLeases: browser %q, want the browser that holds the context", info.GetBrowser())
	}
	if info.GetCommands() != 1 {
		t.Errorf("ListLeases: commands %d, want 1 (the Navigate)", info.GetCommands())
	}

	// A second acquire waits: the gauge shows it.
	waiter := make(chan *holder, 1)
	go func() {
		w, err := b.tryAcquire(t, &brokerv1.Acquire{WaitTimeout: durationpb.New(30 * time.Second)})
		if err != nil {
			t.Errorf("queued acquire = %v, want granted", err)
		}
		waiter <- w
	}()
	waitFor(t, "broker_leases_waiting 1", func() bool { return scrape(t, url, "broker_leases_waiting") == 1 })

	// Revoke, then a late trigger on the same lease: absorbed, counted once.
	l, err := b.leases.Lookup(h.id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.RevokeLease(ctx, &brokerv1.RevokeLeaseRequest{LeaseId: h.id}); err != nil {
		t.Fatal(err)
	}
	if got := l.Reclaim(lease.Released, "late release"); got != lease.Revoked {
		t.Errorf("late Reclaim(Released) = %v, want the first reason, Revoked", got)
	}
	w := <-waiter
	if w == nil {
		t.FailNow()
	}
	want := map[string]float64{
		"broker_leases_waiting": 0, "broker_leases_active": 1, "broker_reclaim_duplicate_triggers_total": 1,
		`broker_leases_reclaimed_total{reason="REVOKED"}`: 1, `broker_leases_reclaimed_total{reason="RELEASED"}`: 0,
		"broker_warm_contexts": float64(b.pool.Stats().Warm),
	}
	for series, v := range want {
		if got := scrape(t, url, series); got != v {
			t.Errorf("%s = %v, want %v", series, got, v)
		}
	}
	for _, series := range []string{"process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total"} {
		if got := scrape(t, url, series); got <= 0 {
			t.Errorf("%s = %v, want the process metrics", series, got)
		}
	}
	w.release()
}
