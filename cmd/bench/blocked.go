package main

import (
	"context"
	"fmt"
	"time"

	"github.com/browserbroker/broker/client"
	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// blockedContext are the context options of the images-blocked path: a
// cold acquire, as on the loaded path, that blocks every image.
func blockedContext() *brokerv1.ContextOptions {
	return &brokerv1.ContextOptions{Viewport: coldViewport, Block: &brokerv1.Block{ResourceTypes: []string{"image"}}}
}

// runBlockedJobs runs the scraper job on the gallery page through the
// broker, cold, with images loaded and with images blocked, interleaved
// (the first path alternating by round). Around each job (untimed) it
// checks that the loaded job fetched every image and the blocked one none,
// and that GetStats' blocked_requests rose by the images blocked.
func runBlockedJobs(ctx context.Context, c *client.Client, site *benchSite, warmup, jobs int, progress func(string)) (BlockResult, error) {
	url := site.URL + "/gallery"
	type variant struct {
		key  string
		opts *brokerv1.ContextOptions
		// images served and requests blocked per job
		served, blocked int64
	}
	variants := []variant{
		{"images_loaded", coldContext(), galleryImages, 0},
		{"images_blocked", blockedContext(), 0, galleryImages},
	}
	totals := map[string][]time.Duration{}
	steps := map[string]map[string][]time.Duration{}
	for _, v := range variants {
		steps[v.key] = map[string][]time.Duration{}
	}
	var blockedTotal uint64
	for round := range warmup + jobs {
		for k := range variants {
			v := variants[(round+k)%len(variants)]
			st0, err := c.Stats(ctx)
			if err != nil {
				return BlockResult{}, fmt.Errorf("GetStats: %w", err)
			}
			img0 := site.images.Load()
			sw := newStopwatch()
			if err := brokerJob(ctx, c, v.opts, url, sw); err != nil {
				return BlockResult{}, fmt.Errorf("job %d with %s: %w", round, v.key, err)
			}
			st1, err := c.Stats(ctx)
			if err != nil {
				return BlockResult{}, fmt.Errorf("GetStats: %w", err)
			}
			served, blocked := site.images.Load()-img0, int64(st1.GetBlockedRequests()-st0.GetBlockedRequests())
			if served != v.served || blocked != v.blocked {
				return BlockResult{}, fmt.Errorf("job %d with %s: the site served %d images and blocked_requests rose by %d, want %d and %d",
					round, v.key, served, blocked, v.served, v.blocked)
			}
			blockedTotal += uint64(blocked)
			if round < warmup {
				continue
			}
			totals[v.key] = append(totals[v.key], sw.total())
			for s, d := range sw.steps {
				steps[v.key][s] = append(steps[v.key][s], d)
			}
		}
		if err := ctx.Err(); err != nil {
			return BlockResult{}, err
		}
		if (round+1)%10 == 0 {
			progress(fmt.Sprintf("scraper jobs with images blocked: round %d of %d", round+1, warmup+jobs))
		}
	}
	r := BlockResult{
		Job: fmt.Sprintf("the scraper job on a page that also has %d images (%d-byte PNGs, each served after %s), through the broker, cold",
			galleryImages, site.imageBytes, imageDelay),
		Method: fmt.Sprintf("client.Acquire with viewport %dx%d, and the same plus block {resource_types: [image]}, interleaved job by job; "+
			"untimed checks around each job: the site served every image to the loaded job and none to the blocked one, "+
			"and GetStats.blocked_requests rose by %d per blocked job", coldViewport.Width, coldViewport.Height, galleryImages),
		Loaded:          summarize(totals["images_loaded"]),
		Blocked:         summarize(totals["images_blocked"]),
		BlockedRequests: blockedTotal,
		Steps:           map[string]map[string]Latency{},
	}
	for key, byStep := range steps {
		r.Steps[key] = map[string]Latency{}
		for _, s := range jobSteps {
			r.Steps[key][s] = summarize(byStep[s])
		}
	}
	r.BlockedOverLoaded = ratio(r.Blocked, r.Loaded)
	return r, nil
}
