package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// acquireSession acquires the sticky session key and returns the lease and
// its grant.
func acquireSession(t *testing.T, conn *grpc.ClientConn, key string) (*testLease, *brokerv1.Granted) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := brokerv1.NewLeaseServiceClient(conn).Lease(ctx)
	if err != nil {
		t.Fatalf("Lease() = %v", err)
	}
	acq := &brokerv1.Acquire{SessionKey: key, WaitTimeout: durationpb.New(30 * time.Second)}
	if err := s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: acq}}); err != nil {
		t.Fatalf("send acquire: %v", err)
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			t.Fatalf("acquire(session_key %q): stream ended with %v, want granted", key, err)
		}
		if g := resp.GetGranted(); g != nil {
			l := &testLease{id: g.GetLeaseId(), stream: s, cancel: cancel, done: make(chan struct{})}
			go l.receive()
			return l, g
		}
		if resp.GetQueued() == nil {
			t.Fatalf("acquire(session_key %q): got %v, want queued or granted", key, resp)
		}
	}
}

// sigkill kills the broker with SIGKILL (no shutdown, no last save) and
// waits until it is gone.
func (p *brokerProc) sigkill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL broker: %v", err)
	}
	<-p.exited
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("broker ended with %v, want killed by SIGKILL", p.cmd.ProcessState)
	}
}

// A sticky session's state is saved when its lease is released; a broker
// killed with SIGKILL (no graceful shutdown, no save on close) loses
// nothing that was saved: a new broker on the same --state-dir restores
// the cookie and localStorage, and the fencing number goes on from where it
// was. What changed after the last save is lost with the broker.
func TestStickySessionSurvivesSigkill(t *testing.T) {
	stateDir := t.TempDir()
	site := newFaultSite(t)
	const key = "shop"
	const readState = `document.cookie + " | " + localStorage.getItem("cart")`

	first := startBroker(t, "--max-leases", "2", "--state-dir", stateDir)
	conn := dial(t, first.addr)
	page := brokerv1.NewPageServiceClient(conn)
	l, g := acquireSession(t, conn, key)
	if g.Generation != 1 || g.SessionRestored || g.SessionWarm {
		t.Fatalf("first grant of %q: %v; want generation 1, a fresh session", key, g)
	}
	navigate(t, page, l.id, site.URL+"/a")
	evaluate(t, page, l.id, `document.cookie = "sid=kept; Max-Age=3600; Path=/"; localStorage.setItem("cart", "3 apples"); "set"`)
	if got := evaluate(t, page, l.id, readState); got != `"sid=kept | 3 apples"` {
		t.Fatalf("state before the release = %s, want the cookie and localStorage just set", got)
	}
	l.release(t) // revoked{RELEASED} comes after the save
	first.sigkill(t)

	second := startBroker(t, "--max-leases", "2", "--state-dir", stateDir)
	conn = dial(t, second.addr)
	page = brokerv1.NewPageServiceClient(conn)
	l, g = acquireSession(t, conn, key)
	if g.Generation != 2 || !g.SessionRestored || g.SessionWarm {
		t.Fatalf("grant of %q after SIGKILL: %v; want generation 2, restored from the saved state", key, g)
	}
	navigate(t, page, l.id, site.URL+"/b")
	if got := evaluate(t, page, l.id, readState); got != `"sid=kept | 3 apples"` {
		t.Fatalf("state after SIGKILL and restart = %s, want the cookie and localStorage saved at the release", got)
	}

	// Killed again while the lease holds the session: the last save is
	// still the release's, so this change is lost.
	evaluate(t, page, l.id, `document.cookie = "late=lost; Max-Age=3600; Path=/"; localStorage.setItem("cart", "changed"); "set"`)
	if got := evaluate(t, page, l.id, readState); !strings.Contains(got, "late=lost") || !strings.HasSuffix(got, `| changed"`) {
		t.Fatalf("state after the late change = %s, want the late cookie and the changed cart", got)
	}
	second.sigkill(t)

	third := startBroker(t, "--max-leases", "2", "--state-dir", stateDir)
	conn = dial(t, third.addr)
	page = brokerv1.NewPageServiceClient(conn)
	l, g = acquireSession(t, conn, key)
	if g.Generation != 3 || !g.SessionRestored {
		t.Fatalf("grant of %q after the second SIGKILL: %v; want generation 3, restored", key, g)
	}
	navigate(t, page, l.id, site.URL+"/c")
	if got := evaluate(t, page, l.id, readState); got != `"sid=kept | 3 apples"` {
		t.Fatalf("state after a SIGKILL with the lease held = %s, want the last save's (the release's)", got)
	}
	l.release(t)
}
