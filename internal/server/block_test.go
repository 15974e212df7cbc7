package server

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/lease"
)

// recordingSite serves a page with two images and records every path it
// serves.
func recordingSite(t *testing.T) (*httptest.Server, func() []string) {
	t.Helper()
	var (
		mu     sync.Mutex
		served []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		served = append(served, r.URL.Path)
		mu.Unlock()
		w.Header().Set("Cache-Control", "no-store")
		if strings.HasPrefix(r.URL.Path, "/img/") {
			w.Header().Set("Content-Type", "image/svg+xml")
			fmt.Fprint(w, `<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>`)
			return
		}
		fmt.Fprint(w, `<!doctype html><title>Images</title><link rel=icon href="data:,"><img src="/img/a.svg"><img src="/img/b.svg">`)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(served)
	}
}

func TestAcquireWithBlockedImages(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 1})
	ctx := context.Background()
	metrics := httptest.NewServer(b.metrics.Handler())
	defer metrics.Close()
	srv, served := recordingSite(t)
	before, err := b.admin.GetStats(ctx, &brokerv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	scraped := scrape(t, metrics.URL, "broker_blocked_requests_total")

	h := b.acquire(t, &brokerv1.Acquire{Context: &brokerv1.ContextOptions{Block: &brokerv1.Block{ResourceTypes: []string{"image"}}}})
	nav, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: h.id, Url: srv.URL + "/"})
	if err != nil || nav.Status != 200 || nav.Title != "Images" {
		t.Fatalf("Navigate(page with images) = %v, %v; want 200, title Images", nav, err)
	}
	if got := served(); !slices.Equal(got, []string{"/"}) {
		t.Errorf("with images blocked the site served %v, want only [/]", got)
	}
	after, err := b.admin.GetStats(ctx, &brokerv1.GetStatsRequest{})
	if err != nil || after.BlockedRequests-before.BlockedRequests != 2 {
		t.Errorf("GetStats.blocked_requests went from %d to %v (%v), want 2 more", before.BlockedRequests, after.GetBlockedRequests(), err)
	}
	if got := scrape(t, metrics.URL, "broker_blocked_requests_total"); got-scraped != 2 {
		t.Errorf("broker_blocked_requests_total went from %v to %v, want 2 more", scraped, got)
	}
	h.release()
}

func TestAcquireWithBadBlockIsInvalid(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 1})
	for name, blk := range map[string]*brokerv1.Block{
		"unknown type": {ResourceTypes: []string{"image", "pictures"}},
		"document":     {ResourceTypes: []string{"document"}},
		"empty glob":   {UrlPatterns: []string{""}},
	} {
		_, err := b.tryAcquire(t, &brokerv1.Acquire{Context: &brokerv1.ContextOptions{Block: blk}})
		want := "block"
		if len(blk.ResourceTypes) > 0 {
			want = blk.ResourceTypes[len(blk.ResourceTypes)-1]
		}
		wantCode(t, "acquire with block "+name, err, codes.InvalidArgument, want)
	}
	if st := b.leases.Stats(); st.GrantedTotal != 0 || st.AcquireFailures != 0 {
		t.Errorf("after bad block options: %d granted, %d acquire failures; want 0 and 0 (refused at the edge)", st.GrantedTotal, st.AcquireFailures)
	}
}
