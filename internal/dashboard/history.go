package dashboard

import (
	"sync"
	"time"

	"github.com/browserbroker/broker/internal/lease"
)

// chartMinutes is the span of the reclaim chart: one bucket a minute.
const chartMinutes = 60

// reclaimHistory turns the manager's cumulative reclaim counters into
// reclaims per minute over the last hour: each observation adds what the
// counters grew since the last one to the current minute's bucket.
type reclaimHistory struct {
	mu      sync.Mutex
	last    map[lease.Reason]uint64 // counters at the last observation; nil before the first
	buckets [chartMinutes]reclaimBucket
}

type reclaimBucket struct {
	minute time.Time // start of the minute it counts; zero: unused
	counts map[lease.Reason]uint64
}

// observe records the counters as they are at now. The first observation
// is the baseline.
func (h *reclaimHistory) observe(now time.Time, totals map[lease.Reason]uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.last == nil {
		h.last = make(map[lease.Reason]uint64, len(totals))
	} else {
		b := h.bucketLocked(now)
		for r, n := range totals {
			if n > h.last[r] {
				b.counts[r] += n - h.last[r]
			}
		}
	}
	for r, n := range totals {
		h.last[r] = n
	}
}

// bucketLocked returns now's bucket, emptied if it last counted an older
// minute.
func (h *reclaimHistory) bucketLocked(now time.Time) *reclaimBucket {
	m := now.Truncate(time.Minute)
	b := &h.buckets[minuteIndex(m)]
	if !b.minute.Equal(m) {
		b.minute = m
		b.counts = make(map[lease.Reason]uint64)
	}
	return b
}

func minuteIndex(m time.Time) int {
	i := int((m.Unix() / 60) % chartMinutes)
	if i < 0 {
		i += chartMinutes
	}
	return i
}

// MinuteReclaims is one minute of the reclaim chart.
type MinuteReclaims struct {
	// Start of the minute.
	Start time.Time `json:"start"`
	// Counts by reason name (RELEASED, REVOKED, ...); reasons without
	// reclaims are left out.
	Counts map[string]uint64 `json:"counts"`
}

// series returns the last hour, one entry a minute, oldest first, the
// current (partial) minute last.
func (h *reclaimHistory) series(now time.Time) []MinuteReclaims {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := now.Truncate(time.Minute)
	out := make([]MinuteReclaims, chartMinutes)
	for i := range chartMinutes {
		m := cur.Add(-time.Duration(chartMinutes-1-i) * time.Minute)
		out[i] = MinuteReclaims{Start: m, Counts: map[string]uint64{}}
		if b := h.buckets[minuteIndex(m)]; b.minute.Equal(m) {
			for r, n := range b.counts {
				if n > 0 {
					out[i].Counts[r.String()] = n
				}
			}
		}
	}
	return out
}
