package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/browserbroker/broker/client"
	"github.com/browserbroker/broker/internal/proctree"
)

// memSample is the PSS of the broker and everything below it.
type memSample struct {
	broker, driver, chromium int64 // kB
	processes, renderers     int
}

func (s memSample) total() int64 { return s.broker + s.driver + s.chromium }

// sampleMemory reads the PSS of the broker pid and all its descendants:
// the Playwright driver (node running cli.js) and Chromium (the rest).
func sampleMemory(brokerPID int) memSample {
	s := memSample{broker: proctree.PSSKB(brokerPID), processes: 1}
	for _, p := range proctree.Tree(brokerPID) {
		kb := proctree.PSSKB(p.PID)
		s.processes++
		switch {
		case strings.Contains(p.Cmdline, "cli.js"):
			s.driver += kb
		default:
			s.chromium += kb
			if strings.Contains(p.Cmdline, "--type=renderer") {
				s.renderers++
			}
		}
	}
	return s
}

// medianSample takes n samples spaced by gap and keeps the one with the
// median total.
func medianSample(pid, n int, gap time.Duration) memSample {
	var all []memSample
	for i := range n {
		if i > 0 {
			time.Sleep(gap)
		}
		all = append(all, sampleMemory(pid))
	}
	slices.SortFunc(all, func(a, b memSample) int { return int(a.total() - b.total()) })
	return all[len(all)/2]
}

// mib converts kB to MiB, to one decimal.
func mib(kb int64) float64 { return math.Round(float64(kb)/1024*10) / 10 }

// runMemory starts a broker with capacity for the largest level and, level
// by level, holds that many leases, each with the job page loaded, then
// reads PSS once the processes settled.
func runMemory(ctx context.Context, brokerPath, driverDir, chromium, url string, levels []int, settle time.Duration, progress func(string)) (MemoryResult, error) {
	res := MemoryResult{Method: fmt.Sprintf("sum of Pss in /proc/PID/smaps_rollup over the broker pid and all its descendants (driver = node running cli.js, chromium = the rest), "+
		"median of 3 samples 300ms apart, taken %v after the last lease loaded its page; a fresh broker started with --max-leases %d; MiB/lease = (total - total at 0) / leases",
		settle, slices.Max(levels))}
	b, err := startBroker(ctx, brokerPath, driverDir, chromium, nil, "--max-leases", strconv.Itoa(slices.Max(levels)))
	if err != nil {
		return res, err
	}
	defer b.stop()
	c, err := client.Dial(b.addr)
	if err != nil {
		return res, err
	}
	defer c.Close()

	var held []*client.Lease
	defer func() {
		var wg sync.WaitGroup
		for _, l := range held {
			wg.Go(func() { _, _ = l.Release(context.WithoutCancel(ctx)) })
		}
		wg.Wait()
	}()
	var base int64
	for _, level := range levels {
		// Grow to the level, four leases at a time.
		var mu sync.Mutex
		var firstErr error
		sem := make(chan struct{}, 4)
		var wg sync.WaitGroup
		for range level - len(held) {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				l, err := c.Acquire(ctx, client.AcquireOptions{TTL: 10 * time.Minute, WaitTimeout: time.Minute})
				if err == nil {
					mu.Lock()
					held = append(held, l)
					mu.Unlock()
					_, err = l.Navigate(ctx, url)
				}
				if err != nil {
					mu.Lock()
					firstErr = cmpOr(firstErr, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if firstErr != nil {
			return res, fmt.Errorf("memory: hold %d leases: %w", level, firstErr)
		}
		time.Sleep(settle)
		s := medianSample(b.pid(), 3, 300*time.Millisecond)
		st, err := c.Stats(ctx)
		if err != nil {
			return res, err
		}
		if int(st.GetActive()) != level {
			return res, fmt.Errorf("memory: broker reports %d active leases, want %d", st.GetActive(), level)
		}
		m := MemLevel{
			Leases:      level,
			TotalMiB:    mib(s.total()),
			BrokerMiB:   mib(s.broker),
			DriverMiB:   mib(s.driver),
			ChromiumMiB: mib(s.chromium),
			Processes:   s.processes,
			Renderers:   s.renderers,
			Browsers:    int(st.GetBrowsers()),
		}
		if level == 0 {
			base = s.total()
		} else if base > 0 {
			m.PerLeaseMiB = mib((s.total() - base) / int64(level))
		}
		res.Levels = append(res.Levels, m)
		progress(fmt.Sprintf("memory: %d leases, %.0f MiB PSS", level, m.TotalMiB))
	}
	return res, nil
}

// cmpOr returns the first non-nil error.
func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
