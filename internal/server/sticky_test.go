package server

import (
	"context"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/lease"
	"github.com/browserbroker/broker/internal/state"
)

func openStore(t *testing.T, dir string) *state.Store {
	t.Helper()
	s, err := state.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// granted acquires and returns the grant message itself.
func (b *broker) acquireGranted(t *testing.T, a *brokerv1.Acquire) (*holder, *brokerv1.Granted) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := b.lease.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: a}}); err != nil {
		t.Fatal(err)
	}
	h := &holder{t: t, stream: stream, cancel: cancel}
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("acquire(%v) = %v", a, err)
		}
		if q := resp.GetQueued(); q != nil {
			h.queued = append(h.queued, q.Position)
			continue
		}
		g := resp.GetGranted()
		if g == nil {
			t.Fatalf("acquire(%v): %v before granted", a, resp)
		}
		h.id = g.LeaseId
		return h, g
	}
}

// visit navigates the lease to the test site (whose script appends "x" to
// localStorage "seen") and returns localStorage "seen" after the load.
func (b *broker) visit(t *testing.T, id string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := b.page.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: site.URL + "/"}); err != nil {
		t.Fatalf("Navigate: %v", err)
	}
	ev, err := b.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id, Expression: "localStorage.getItem('seen')"})
	if err != nil {
		t.Fatalf("Evaluate: %v", err)
	}
	return ev.ResultJson
}

func (b *broker) setCookie(t *testing.T, id, name, value string) {
	t.Helper()
	_, err := b.page.SetCookies(context.Background(), &brokerv1.SetCookiesRequest{LeaseId: id,
		Cookies: []*brokerv1.Cookie{{Name: name, Value: value, Url: site.URL, Expires: float64(time.Now().Add(time.Hour).Unix())}}})
	if err != nil {
		t.Fatalf("SetCookies: %v", err)
	}
}

func (b *broker) cookie(t *testing.T, id, name string) string {
	t.Helper()
	got, err := b.page.GetCookies(context.Background(), &brokerv1.GetCookiesRequest{LeaseId: id})
	if err != nil {
		t.Fatalf("GetCookies: %v", err)
	}
	for _, c := range got.Cookies {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

func TestStickySessionKeepsCookiesAndLocalStorage(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 3}, withStore(openStore(t, t.TempDir())))
	h, g := b.acquireGranted(t, &brokerv1.Acquire{SessionKey: "shop"})
	if g.Generation != 1 || g.SessionWarm || g.SessionRestored {
		t.Fatalf("first grant %v: want generation 1, cold, not restored", g)
	}
	if seen := b.visit(t, h.id); seen != `"x"` {
		t.Fatalf("localStorage seen = %s on the first visit, want \"x\"", seen)
	}
	b.setCookie(t, h.id, "sid", "s3cret")
	if rev := h.release(); rev.Reason != brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED {
		t.Fatalf("release: %v", rev)
	}

	h2, g2 := b.acquireGranted(t, &brokerv1.Acquire{SessionKey: "shop"})
	if g2.Generation != 2 || !g2.SessionWarm {
		t.Fatalf("second grant %v: want generation 2, the warm context", g2)
	}
	if c := b.cookie(t, h2.id, "sid"); c != "s3cret" {
		t.Fatalf("cookie sid = %q in the sticky session, want s3cret", c)
	}
	if seen := b.visit(t, h2.id); seen != `"xx"` {
		t.Fatalf("localStorage seen = %s on the second visit, want \"xx\"", seen)
	}
	// Another key, and no key, see none of it.
	for _, a := range []*brokerv1.Acquire{{SessionKey: "bank"}, {}} {
		o := b.acquire(t, a)
		if c := b.cookie(t, o.id, "sid"); c != "" {
			t.Fatalf("acquire %v sees cookie sid=%q of session shop", a, c)
		}
		if seen := b.visit(t, o.id); seen != `"x"` {
			t.Fatalf("acquire %v sees localStorage %s of session shop", a, seen)
		}
		o.release()
	}
	list, err := b.admin.ListLeases(context.Background(), &brokerv1.ListLeasesRequest{SessionKey: "shop"})
	if err != nil || len(list.Leases) != 1 || list.Leases[0].LeaseId != h2.id || list.Leases[0].Generation != 2 {
		t.Fatalf("ListLeases(session shop) = %v, %v; want the one lease, generation 2", list, err)
	}
	h2.release()
}

func TestStickySessionOneHolderAtATime(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 3})
	first, _ := b.acquireGranted(t, &brokerv1.Acquire{SessionKey: "k"})
	b.setCookie(t, first.id, "who", "first")
	type result struct {
		h *holder
		g *brokerv1.Granted
	}
	second := make(chan result, 1)
	go func() {
		h, g := b.acquireGranted(t, &brokerv1.Acquire{SessionKey: "k"})
		second <- result{h, g}
	}()
	waitFor(t, "the second acquire to wait for the session", func() bool {
		for _, s := range b.sessions(t) {
			if s.SessionKey == "k" && s.Waiting == 1 && s.State == brokerv1.SessionState_SESSION_STATE_HELD {
				return true
			}
		}
		return false
	})
	select {
	case <-second:
		t.Fatal("the second acquire was granted while the first held the session")
	default:
	}
	first.release()
	r := <-second
	if r.g.Generation != 2 || len(r.h.queued) == 0 || r.h.queued[0] != 1 {
		t.Fatalf("second grant %v after queued %v: want generation 2 after position 1", r.g, r.h.queued)
	}
	if c := b.cookie(t, r.h.id, "who"); c != "first" {
		t.Fatalf("the second holder sees cookie who=%q, want first", c)
	}
	r.h.release()
}

func (b *broker) sessions(t *testing.T) []*brokerv1.SessionInfo {
	t.Helper()
	resp, err := b.admin.ListSessions(context.Background(), &brokerv1.ListSessionsRequest{})
	if err != nil {
		t.Fatalf("ListSessions: %v", err)
	}
	return resp.Sessions
}

func TestStickyStateSurvivesBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	pool := needBrowser(t)
	store := openStore(t, dir)
	first := newBrokerOn(t, pool, lease.Config{Capacity: 2}, bufconn.Listen(1<<20), withStore(store))
	h, _ := first.acquireGranted(t, &brokerv1.Acquire{SessionKey: "k"})
	first.visit(t, h.id)
	first.setCookie(t, h.id, "sid", "kept")
	// The lease is live when the broker stops: shutdown saves it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := first.leases.Close(ctx); err != nil {
		t.Fatal(err)
	}
	store.Close()

	second := newBrokerOn(t, pool, lease.Config{Capacity: 2}, bufconn.Listen(1<<20), withStore(openStore(t, dir)))
	if s := second.sessions(t); len(s) != 1 || s[0].State != brokerv1.SessionState_SESSION_STATE_SAVED || s[0].Generation != 1 || s[0].SavedAt == nil {
		t.Fatalf("sessions after restart = %v; want k saved, generation 1", s)
	}
	h2, g := second.acquireGranted(t, &brokerv1.Acquire{SessionKey: "k"})
	if g.Generation != 2 || g.SessionWarm || !g.SessionRestored {
		t.Fatalf("grant after restart %v: want generation 2, restored from saved state", g)
	}
	if c := second.cookie(t, h2.id, "sid"); c != "kept" {
		t.Fatalf("cookie after restart = %q, want kept", c)
	}
	if seen := second.visit(t, h2.id); seen != `"xx"` {
		t.Fatalf("localStorage after restart = %s, want \"xx\"", seen)
	}
	h2.release()
}

func TestStickyStateSurvivesBrowserCrash(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 2}, withStore(openStore(t, t.TempDir())))
	h, _ := b.acquireGranted(t, &brokerv1.Acquire{SessionKey: "k"})
	b.visit(t, h.id)
	b.setCookie(t, h.id, "sid", "saved")
	h.release() // saved here, kept warm
	h, _ = b.acquireGranted(t, &brokerv1.Acquire{SessionKey: "k"})
	b.setCookie(t, h.id, "late", "lost") // after the last save: lost with the crash
	for _, pid := range b.pool.Processes().Browsers {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if rev := h.revoked(); rev.Reason != brokerv1.ReclaimReason_RECLAIM_REASON_BROWSER_CRASHED {
		t.Fatalf("after the crash: %v, want BROWSER_CRASHED", rev)
	}
	waitFor(t, "the crashed session to be closed", func() bool { return b.leases.Stats().Active == 0 })
	h2, g := b.acquireGranted(t, &brokerv1.Acquire{SessionKey: "k"})
	if g.Generation != 3 || g.SessionWarm || !g.SessionRestored {
		t.Fatalf("grant after the crash %v: want generation 3, restored, not warm", g)
	}
	if c := b.cookie(t, h2.id, "sid"); c != "saved" {
		t.Fatalf("cookie sid after the crash = %q, want saved", c)
	}
	if c := b.cookie(t, h2.id, "late"); c != "" {
		t.Fatalf("cookie late = %q after the crash; it was never saved", c)
	}
	h2.release()
}

func TestStickySessionListAndDelete(t *testing.T) {
	store := openStore(t, t.TempDir())
	b := newBroker(t, lease.Config{Capacity: 2, SessionIdleTTL: time.Hour}, withStore(store))
	ctx := context.Background()
	h, _ := b.acquireGranted(t, &brokerv1.Acquire{SessionKey: "a"})
	s := b.sessions(t)
	if len(s) != 1 || s[0].State != brokerv1.SessionState_SESSION_STATE_HELD || s[0].LeaseId != h.id || s[0].Generation != 1 {
		t.Fatalf("sessions while held = %v", s)
	}
	h.release()
	s = b.sessions(t)
	if len(s) != 1 || s[0].State != brokerv1.SessionState_SESSION_STATE_WARM || s[0].ClosesAt == nil || s[0].SavedAt == nil {
		t.Fatalf("sessions while warm = %v", s)
	}
	h, _ = b.acquireGranted(t, &brokerv1.Acquire{SessionKey: "a"})
	del, err := b.admin.DeleteSession(ctx, &brokerv1.DeleteSessionRequest{SessionKey: "a"})
	if err != nil || del.LeaseReason != brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED {
		t.Fatalf("DeleteSession(held) = %v, %v; want its lease REVOKED", del, err)
	}
	if rev := h.revoked(); rev.Reason != brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED {
		t.Fatalf("holder got %v, want REVOKED", rev)
	}
	if s := b.sessions(t); len(s) != 0 {
		t.Fatalf("sessions after delete = %v, want none", s)
	}
	if r, _, _ := store.Get("a"); r.Storage != nil {
		t.Fatal("the deleted session's state is still on disk")
	}
	_, err = b.admin.DeleteSession(ctx, &brokerv1.DeleteSessionRequest{SessionKey: "a"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("DeleteSession(deleted) = %v, want NOT_FOUND", err)
	}
	if b.pool.Stats().Contexts != 0 {
		t.Fatalf("%d contexts open after delete, want 0", b.pool.Stats().Contexts)
	}
	_, err = b.admin.DeleteSession(ctx, &brokerv1.DeleteSessionRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("DeleteSession(no key) = %v, want INVALID_ARGUMENT", err)
	}
	_, err = b.tryAcquire(t, &brokerv1.Acquire{SessionKey: "bad\x00key"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("acquire with a bad session key = %v, want INVALID_ARGUMENT", err)
	}
}
