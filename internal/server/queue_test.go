package server

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/lease"
)

// waiter is an acquire in the queue whose stream a goroutine reads: each
// message (and the stream's end, as an error) arrives on events in order.
type waiter struct {
	t      *testing.T
	name   string
	stream brokerv1.LeaseService_LeaseClient
	events chan waiterEvent
}

type waiterEvent struct {
	resp *brokerv1.LeaseResponse
	err  error // the stream's end: io.EOF for OK
}

// enqueue sends acquire a and returns once the broker has told it its
// place in the queue, which must be wantPos. Waiting for that message
// (not a stats poll) makes the order of several enqueue calls the queue's
// order.
func (b *broker) enqueue(t *testing.T, name string, a *brokerv1.Acquire, wantPos int32) *waiter {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := b.lease.Lease(ctx)
	if err != nil {
		t.Fatalf("%s: Lease() = %v", name, err)
	}
	if err := stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: a}}); err != nil {
		t.Fatalf("%s: send acquire: %v", name, err)
	}
	w := &waiter{t: t, name: name, stream: stream, events: make(chan waiterEvent, 16)}
	go func() {
		for {
			resp, err := stream.Recv()
			w.events <- waiterEvent{resp, err}
			if err != nil {
				return
			}
		}
	}()
	if p := w.next().GetQueued(); p == nil || p.Position != wantPos {
		t.Fatalf("%s: first message queued{%v}, want queued{position: %d}", name, p, wantPos)
	}
	return w
}

// next returns the waiter's next message, failing the test if the stream
// ends instead or nothing comes within 30s.
func (w *waiter) next() *brokerv1.LeaseResponse {
	w.t.Helper()
	select {
	case e := <-w.events:
		if e.err != nil {
			w.t.Fatalf("%s: stream ended with %v, want a message", w.name, e.err)
		}
		return e.resp
	case <-time.After(30 * time.Second):
		w.t.Fatalf("%s: no message within 30s", w.name)
		return nil
	}
}

// wantQueued reads the next message, which must be queued{pos}.
func (w *waiter) wantQueued(pos int32) {
	w.t.Helper()
	if resp := w.next(); resp.GetQueued().GetPosition() != pos || resp.GetQueued() == nil {
		w.t.Fatalf("%s: got %v, want queued{position: %d}", w.name, resp, pos)
	}
}

// wantGranted reads the next message, which must be granted.
func (w *waiter) wantGranted() *brokerv1.Granted {
	w.t.Helper()
	resp := w.next()
	if resp.GetGranted() == nil {
		w.t.Fatalf("%s: got %v, want granted", w.name, resp)
	}
	return resp.GetGranted()
}

// silent fails the test if a message (or the stream's end) is waiting.
func (w *waiter) silent() {
	w.t.Helper()
	select {
	case e := <-w.events:
		w.t.Fatalf("%s: got %v, %v; want nothing yet", w.name, e.resp, e.err)
	default:
	}
}

// release releases the waiter's granted lease and reads the stream to its
// end: revoked{RELEASED}, then OK.
func (w *waiter) release() {
	w.t.Helper()
	if err := w.stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}}); err != nil {
		w.t.Fatalf("%s: send release: %v", w.name, err)
	}
	if r := w.next().GetRevoked(); r.GetReason() != brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED {
		w.t.Fatalf("%s: release answered %v, want revoked{RELEASED}", w.name, r)
	}
	select {
	case e := <-w.events:
		if !errors.Is(e.err, io.EOF) {
			w.t.Fatalf("%s: after revoked, stream gave %v, %v; want the end, OK", w.name, e.resp, e.err)
		}
	case <-time.After(30 * time.Second):
		w.t.Fatalf("%s: stream still open 30s after revoked", w.name)
	}
}

// A full queue refuses at once with RESOURCE_EXHAUSTED naming the queue's
// length and limit, and the refused acquire never joins the queue.
func TestQueueFullNamesLengthAndLimit(t *testing.T) {
	// --max-leases 1 --max-queue 2: two waiters fill the queue.
	b := newBroker(t, lease.Config{Capacity: 1, MaxQueue: 2})
	holder := b.acquire(t, &brokerv1.Acquire{})
	wait := &brokerv1.Acquire{WaitTimeout: durationpb.New(time.Minute)}
	first := b.enqueue(t, "first waiter", wait, 1)
	second := b.enqueue(t, "second waiter", wait, 2)

	start := time.Now()
	_, err := b.tryAcquire(t, wait)
	wantCode(t, "acquire past --max-queue 2", err, codes.ResourceExhausted, "2 acquires waiting (limit 2)")
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("refusal took %v, want it at once, not after the 1m wait_timeout", took)
	}
	st, err := b.admin.GetStats(context.Background(), &brokerv1.GetStatsRequest{})
	if err != nil {
		t.Fatalf("GetStats: %v", err)
	}
	if st.Waiting != 2 || st.AcquireFailures != 1 || st.OldestWait.AsDuration() <= 0 {
		t.Fatalf("GetStats after the refusal: waiting %d, acquire_failures %d, oldest_wait %v; want 2, 1, above 0",
			st.Waiting, st.AcquireFailures, st.OldestWait.AsDuration())
	}

	holder.release()
	first.wantGranted()
	second.wantQueued(1)
	first.release()
	second.wantGranted()
	second.release()
}

// Capacity 1, one holder and three waiters queued one after another: each
// waiter hears its place every time it moves up (3, 2, 1), and the grants
// go in arrival order, one per release.
func TestQueuePositionsAndFIFOUnderConcurrency(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 1})
	holder := b.acquire(t, &brokerv1.Acquire{})
	wait := &brokerv1.Acquire{WaitTimeout: durationpb.New(2 * time.Minute)}
	ws := []*waiter{
		b.enqueue(t, "waiter 1", wait, 1),
		b.enqueue(t, "waiter 2", wait, 2),
		b.enqueue(t, "waiter 3", wait, 3),
	}
	for _, w := range ws {
		w.silent() // joining the queue moves no one already in it
	}

	holder.release()
	ids := map[string]bool{holder.id: true}
	for i, w := range ws {
		g := w.wantGranted()
		if ids[g.LeaseId] {
			t.Fatalf("%s granted lease %s, which was granted before", w.name, g.LeaseId)
		}
		ids[g.LeaseId] = true
		// Everyone behind moved up one place, and was not granted.
		for j, behind := range ws[i+1:] {
			behind.wantQueued(int32(j + 1))
		}
		for _, behind := range ws[i+1:] {
			behind.silent()
		}
		w.release()
	}
	if st := b.leases.Stats(); st.Waiting != 0 || st.GrantedTotal != 4 {
		t.Fatalf("stats at the end: waiting %d, granted %d; want 0 and 4", st.Waiting, st.GrantedTotal)
	}
}
