package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/fleet"
	"github.com/browserbroker/broker/internal/testcert"
	"github.com/browserbroker/broker/internal/testredis"
)

// fleetOf starts n brokers of one lease each on Redis, named b1..bn, with
// extra flags.
func fleetOf(t *testing.T, r *testredis.Server, n int, extra ...string) []*brokerProc {
	t.Helper()
	var bs []*brokerProc
	for i := 1; i <= n; i++ {
		bs = append(bs, startBroker(t, append([]string{"--max-leases", "1", "--redis", r.URL(), "--broker-id", fmt.Sprintf("b%d", i),
			"--fleet-ttl", "1500ms"}, extra...)...))
	}
	return bs
}

// metric reads one series of a broker's metrics ("name{label=\"v\"}");
// 0 when it is not there.
func metric(t *testing.T, p *brokerProc, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + logAddr(t, p, "metrics listening") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
			return f
		}
	}
	return 0
}

func fleetStats(t *testing.T, admin brokerv1.AdminServiceClient) (*brokerv1.GetStatsResponse, error) {
	t.Helper()
	return admin.GetStats(callCtx(t, 10*time.Second), &brokerv1.GetStatsRequest{Scope: brokerv1.Scope_SCOPE_FLEET})
}

func memberIDs(s *brokerv1.GetStatsResponse) string {
	var ids []string
	for _, m := range s.GetMembers() {
		ids = append(ids, m.GetBrokerId())
	}
	return strings.Join(ids, ",")
}

func waitFleet(t *testing.T, admin brokerv1.AdminServiceClient, within time.Duration, what string, ok func(*brokerv1.GetStatsResponse) bool) *brokerv1.GetStatsResponse {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s, err := fleetStats(t, admin)
		if err == nil && ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetStats(FLEET) after %v = members %s, %v; want %s", within, memberIDs(s), err, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Three brokers of one lease each, on a real redis-server: a client that
// knows only the first gets three leases, one on each broker; page and
// admin calls for each reach its owner through the first; the fleet's
// stats and leases add up; whichever side ends a forwarded lease, its
// owner reclaims it once. Then Redis restarts, and a broker is killed.
func TestFleet(t *testing.T) {
	needDeps(t)
	r := testredis.Start(t)
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprint(w, `<!doctype html><title>fleet</title><h1>hello</h1>`)
	}))
	defer site.Close()
	bs := fleetOf(t, r, 3, "--metrics-addr", "127.0.0.1:0")
	conn := dial(t, bs[0].addr)
	page, admin := brokerv1.NewPageServiceClient(conn), brokerv1.NewAdminServiceClient(conn)
	waitFleet(t, admin, 10*time.Second, "b1,b2,b3", func(s *brokerv1.GetStatsResponse) bool { return memberIDs(s) == "b1,b2,b3" })
	readmeFleetRecipe(t, bs[0].addr)

	// Three acquires through b1: b1's own lease first, then b2's and b3's.
	byOwner := map[string]*testLease{}
	for range 3 {
		l := acquireLease(t, conn, 0)
		byOwner[fleet.OwnerOf(l.id)] = l
		// Wait until the owner's registration says it is full, so the
		// next acquire goes elsewhere.
		waitFleet(t, admin, 5*time.Second, l.id+"'s broker full", func(s *brokerv1.GetStatsResponse) bool {
			for _, m := range s.GetMembers() {
				if m.GetBrokerId() == fleet.OwnerOf(l.id) {
					return m.GetFree() == 0
				}
			}
			return false
		})
	}
	var owners []string
	for o := range byOwner {
		owners = append(owners, o)
	}
	sort.Strings(owners)
	if strings.Join(owners, ",") != "b1,b2,b3" {
		t.Fatalf("three leases acquired through b1 live on %v, want b1, b2 and b3", owners)
	}
	for o, l := range byOwner {
		navigate(t, page, l.id, site.URL+"/"+o)
		if got := evaluate(t, page, l.id, "location.pathname"); got != `"/`+o+`"` {
			t.Errorf("Evaluate(location.pathname) on %s through b1 = %s, want \"/%s\"", l.id, got, o)
		}
	}
	s := waitFleet(t, admin, 5*time.Second, "capacity 3, active 3", func(s *brokerv1.GetStatsResponse) bool {
		return s.GetCapacity() == 3 && s.GetActive() == 3
	})
	if s.GetBrowserContexts() != 3 || !s.GetInvariantOk() || s.GetGrantedTotal() != 3 || s.GetBrokerId() != "b1" {
		t.Errorf("GetStats(FLEET) = contexts %d, invariant %v, granted %d, broker %q; want 3, true, 3, b1",
			s.GetBrowserContexts(), s.GetInvariantOk(), s.GetGrantedTotal(), s.GetBrokerId())
	}
	ll, err := admin.ListLeases(callCtx(t, 10*time.Second), &brokerv1.ListLeasesRequest{Scope: brokerv1.Scope_SCOPE_FLEET})
	if err != nil || len(ll.GetLeases()) != 3 {
		t.Fatalf("ListLeases(FLEET) = %v, %v; want the three leases", ll, err)
	}
	// The same through cmd/client: --fleet on leases and stats.
	out, err := exec.Command(filepath.Join(binDir, "client"), "--addr", bs[0].addr, "leases", "--fleet").CombinedOutput()
	for _, o := range owners {
		if err != nil || !strings.Contains(string(out), byOwner[o].id) || !strings.Contains(string(out), "BROKER") {
			t.Errorf("client leases --fleet: %v\n%s\nwant a BROKER column and the lease of %s", err, out, o)
		}
	}
	out, err = exec.Command(filepath.Join(binDir, "client"), "--addr", bs[0].addr, "stats", "--fleet").CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^active\s+3$`).Match(out) || strings.Count(string(out), "127.0.0.1:") != 3 {
		t.Errorf("client stats --fleet: %v\n%s\nwant active 3 and the three members with their addresses", err, out)
	}
	for _, li := range ll.GetLeases() {
		if li.GetBrokerId() != fleet.OwnerOf(li.GetLeaseId()) || li.GetCommands() != 2 {
			t.Errorf("ListLeases(FLEET): %s on %q with %d commands, want on its owner with 2", li.GetLeaseId(), li.GetBrokerId(), li.GetCommands())
		}
	}
	if ll, err := admin.ListLeases(callCtx(t, 10*time.Second), &brokerv1.ListLeasesRequest{}); err != nil || len(ll.GetLeases()) != 1 {
		t.Errorf("ListLeases() on b1 = %v, %v; want b1's one lease", ll, err)
	}
	// A fourth acquire waits (every broker is full) and is granted on b1
	// when b1's lease ends.
	if _, err := page.Evaluate(callCtx(t, 10*time.Second), &brokerv1.EvaluateRequest{LeaseId: fleet.LeaseIDPrefix("b9") + "X", Expression: "1"}); status.Code(err) != codes.NotFound {
		t.Errorf("Evaluate on a lease of an unknown broker = %v, want NOT_FOUND", err)
	}

	// Revoke b2's lease through b1: its holder, on b1, hears REVOKED.
	revokedAt := time.Now()
	if resp, err := admin.RevokeLease(callCtx(t, 10*time.Second), &brokerv1.RevokeLeaseRequest{LeaseId: byOwner["b2"].id}); err != nil ||
		resp.GetReason() != brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED {
		t.Fatalf("RevokeLease(%s) through b1 = %v, %v; want REVOKED", byOwner["b2"].id, resp, err)
	}
	byOwner["b2"].wantRevoked(t, brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED, revokedAt, 2*time.Second)
	// The client drops b3's lease stream: b3 reclaims it, STREAM_CLOSED.
	byOwner["b3"].cancel()
	b3 := brokerv1.NewAdminServiceClient(dial(t, bs[2].addr))
	waitStats(t, b3, time.Now(), 5*time.Second, "b3's lease reclaimed by STREAM_CLOSED", func(s *brokerv1.GetStatsResponse) bool {
		return settled(0)(s) && reclaimedBy(s, brokerv1.ReclaimReason_RECLAIM_REASON_STREAM_CLOSED) == 1 && s.GetReclaimedTotal() == 1
	})
	// b1's lease, released: every broker's books balance, each lease
	// reclaimed once, on its owner.
	byOwner["b1"].release(t)
	s = waitFleet(t, admin, 5*time.Second, "all reclaimed", func(s *brokerv1.GetStatsResponse) bool { return settled(0)(s) })
	if s.GetReclaimedTotal() != 3 || s.GetDuplicateTriggers() > 3 ||
		reclaimedBy(s, brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED) != 1 ||
		reclaimedBy(s, brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED) != 1 ||
		reclaimedBy(s, brokerv1.ReclaimReason_RECLAIM_REASON_STREAM_CLOSED) != 1 {
		t.Errorf("GetStats(FLEET) after the three ends: %s; want RELEASED, REVOKED and STREAM_CLOSED once each", statsString(s))
	}

	t.Run("RedisRestart", func(t *testing.T) {
		r.Stop()
		if _, err := fleetStats(t, admin); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "Redis") {
			t.Errorf("GetStats(FLEET) with Redis down = %v, want UNAVAILABLE saying Redis is unreachable", err)
		}
		// b1 still serves its own leases.
		l := acquireLease(t, conn, 0)
		if fleet.OwnerOf(l.id) != "b1" {
			t.Errorf("acquire through b1 with Redis down = %s, want a lease of b1", l.id)
		}
		navigate(t, page, l.id, site.URL)
		l.release(t)
		r.Restart()
		waitFleet(t, admin, 10*time.Second, "b1,b2,b3 registered again", func(s *brokerv1.GetStatsResponse) bool { return memberIDs(s) == "b1,b2,b3" })
	})

	t.Run("DuplicateID", func(t *testing.T) {
		// A second broker "b1" would take b1's lease ids for its own: it
		// refuses to start, and b1 stays registered.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, filepath.Join(binDir, "broker"), "--addr", "127.0.0.1:0", "--driver-dir", driverDir(),
			"--state-dir", t.TempDir(), "--max-leases", "1", "--redis", r.URL(), "--broker-id", "b1", "--fleet-ttl", "1500ms").CombinedOutput()
		if err == nil || ctx.Err() != nil || !strings.Contains(string(out), "another live broker has this broker id") ||
			!strings.Contains(string(out), "--broker-id") {
			t.Fatalf("a second broker b1: %v\n%s\nwant it to exit, saying the id is taken", err, out)
		}
		waitFleet(t, admin, 5*time.Second, "b1,b2,b3 still", func(s *brokerv1.GetStatsResponse) bool { return memberIDs(s) == "b1,b2,b3" })
		l := acquireLease(t, conn, 0)
		navigate(t, page, l.id, site.URL)
		l.release(t)
	})

	t.Run("QueuedAcquireMoves", func(t *testing.T) {
		// Every broker full: an acquire through b1 waits in b1's line,
		// and moves to the first broker that frees up, while b1's own
		// lease lives on.
		held := map[string]*testLease{}
		for i, c := range []*grpc.ClientConn{conn, dial(t, bs[1].addr), dial(t, bs[2].addr)} {
			l := acquireLease(t, c, 0)
			if want := fmt.Sprintf("b%d", i+1); fleet.OwnerOf(l.id) != want {
				t.Fatalf("lease through %s lives on %s, want %s", want, fleet.OwnerOf(l.id), want)
			}
			held[fleet.OwnerOf(l.id)] = l
		}
		waitFleet(t, admin, 5*time.Second, "every broker full", func(s *brokerv1.GetStatsResponse) bool {
			for _, m := range s.GetMembers() {
				if m.GetFree() != 0 {
					return false
				}
			}
			return len(s.GetMembers()) == 3
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st, err := brokerv1.NewLeaseServiceClient(conn).Lease(ctx)
		if err == nil {
			err = st.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{WaitTimeout: durationpb.New(30 * time.Second)}}})
		}
		var resp *brokerv1.LeaseResponse
		if err == nil {
			resp, err = st.Recv()
		}
		if err != nil || resp.GetQueued().GetPosition() != 1 {
			t.Fatalf("acquire through b1 with every broker full = %v, %v; want queued at position 1", resp, err)
		}
		freed := time.Now()
		held["b3"].release(t)
		for resp.GetGranted() == nil {
			if resp, err = st.Recv(); err != nil || resp.GetGranted() == nil && resp.GetQueued() == nil {
				t.Fatalf("waiting acquire after b3 freed up: %v, %v; want queued, then granted", resp, err)
			}
		}
		took := time.Since(freed)
		id := resp.GetGranted().GetLeaseId()
		if fleet.OwnerOf(id) != "b3" {
			t.Fatalf("the waiting acquire was granted %s, want a lease of b3, the broker that freed up", id)
		}
		t.Logf("the acquire waiting on b1 was granted on b3 %v after b3 freed up", took.Round(time.Millisecond))
		if took > 10*time.Second {
			t.Errorf("granted %v after b3 freed up, want within a few hop intervals (not after the 30s wait)", took)
		}
		held["b1"].stillHeld(t)
		if n := metric(t, bs[0], `broker_fleet_forwarded_acquires_total{why="queued"}`); n != 1 {
			t.Errorf("b1's broker_fleet_forwarded_acquires_total{why=\"queued\"} = %v, want 1", n)
		}
		if n := metric(t, bs[0], `broker_fleet_forwarded_acquires_total{why="full"}`); n != 2 {
			t.Errorf("b1's broker_fleet_forwarded_acquires_total{why=\"full\"} = %v, want 2 (the first two leases through it)", n)
		}
		navigate(t, page, id, site.URL)
		moved := &testLease{id: id, stream: st, cancel: cancel, done: make(chan struct{})}
		go moved.receive()
		moved.release(t)
		held["b1"].release(t)
		held["b2"].release(t)
		waitFleet(t, admin, 5*time.Second, "all reclaimed", func(s *brokerv1.GetStatsResponse) bool { return settled(0)(s) })
	})

	t.Run("BrokerKilled", func(t *testing.T) {
		// b1 full, so the next lease lives on b2 or b3, held through b1.
		own := acquireLease(t, conn, 0)
		waitFleet(t, admin, 5*time.Second, "b1 full", func(s *brokerv1.GetStatsResponse) bool {
			return len(s.GetMembers()) == 3 && s.GetMembers()[0].GetFree() == 0
		})
		away := acquireLease(t, conn, 0)
		victim := fleet.OwnerOf(away.id)
		if victim == "b1" {
			t.Fatalf("second lease %s on b1, want it forwarded", away.id)
		}
		navigate(t, page, away.id, site.URL)
		p := bs[map[string]int{"b2": 1, "b3": 2}[victim]]
		killed := kill(t, p.cmd.Process.Pid, syscall.SIGKILL)
		// The client's stream through b1 breaks at once.
		e := away.waitEnd(t, 5*time.Second)
		if e.err == nil || e.at.IsZero() && time.Since(killed) > 5*time.Second {
			t.Errorf("lease %s on killed %s: stream ended with %v, want an error", away.id, victim, e.err)
		}
		if status.Code(e.err) != codes.Unavailable {
			t.Errorf("lease %s on killed %s: stream ended with %v, want UNAVAILABLE", away.id, victim, e.err)
		}
		// Its registration expires; the others serve on.
		waitFleet(t, admin, 5*time.Second, victim+" gone", func(s *brokerv1.GetStatsResponse) bool {
			return len(s.GetMembers()) == 2 && !strings.Contains(memberIDs(s), victim)
		})
		if d := time.Since(killed); d > 5*time.Second {
			t.Errorf("%s dropped out %v after SIGKILL, want within the fleet TTL (1.5s) and a poll", victim, d)
		}
		if _, err := page.Evaluate(callCtx(t, 10*time.Second), &brokerv1.EvaluateRequest{LeaseId: away.id, Expression: "1"}); status.Code(err) != codes.NotFound {
			t.Errorf("Evaluate on %s after its broker died = %v, want NOT_FOUND", away.id, err)
		}
		third := acquireLease(t, conn, 0)
		if o := fleet.OwnerOf(third.id); o == victim || o == "b1" {
			t.Errorf("lease after %s died lives on %s, want the survivor", victim, o)
		}
		navigate(t, page, third.id, site.URL)
		third.release(t)
		own.release(t)

		// Now the door dies: a lease held through the survivor, on b1, is
		// reclaimed by b1 (STREAM_CLOSED) when the survivor is killed.
		survivor := bs[map[string]int{"b2": 2, "b3": 1}[victim]]
		sconn := dial(t, survivor.addr)
		local := acquireLease(t, sconn, 0) // fills the survivor
		sadmin := brokerv1.NewAdminServiceClient(sconn)
		waitFleet(t, sadmin, 5*time.Second, "the survivor full", func(s *brokerv1.GetStatsResponse) bool {
			for _, m := range s.GetMembers() {
				if m.GetBrokerId() == fleet.OwnerOf(local.id) {
					return m.GetFree() == 0
				}
			}
			return false
		})
		waitFleet(t, sadmin, 5*time.Second, "b1 free again", func(s *brokerv1.GetStatsResponse) bool {
			return len(s.GetMembers()) == 2 && s.GetMembers()[0].GetFree() == 1
		})
		before := reclaimedBy(getStats(t, admin), brokerv1.ReclaimReason_RECLAIM_REASON_STREAM_CLOSED)
		through := acquireLease(t, sconn, 0)
		if fleet.OwnerOf(through.id) != "b1" {
			t.Fatalf("lease through the full survivor = %s, want one of b1", through.id)
		}
		killedAt := kill(t, survivor.cmd.Process.Pid, syscall.SIGKILL)
		_, took := waitStats(t, admin, killedAt, 5*time.Second, "b1's forwarded lease reclaimed by STREAM_CLOSED", func(s *brokerv1.GetStatsResponse) bool {
			return settled(0)(s) && reclaimedBy(s, brokerv1.ReclaimReason_RECLAIM_REASON_STREAM_CLOSED) == before+1
		})
		t.Logf("b1 reclaimed the lease held through the killed door %v after the SIGKILL", took.Round(time.Millisecond))
	})
	_ = context.Background
}

// A sticky session fleet-wide: acquired through another broker, it is
// found on the broker that owns it (warm, with its cookie and
// localStorage); when that broker is SIGKILLed, its ownership expires and
// the session is restored elsewhere from its last save in Redis, with the
// next fencing number; when the next owner shuts down cleanly, another
// broker restores it at once.
func TestFleetStickySession(t *testing.T) {
	needDeps(t)
	r := testredis.Start(t)
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprint(w, `<!doctype html><title>shop</title>`)
	}))
	defer site.Close()
	bs := fleetOf(t, r, 3)
	c1, c2 := dial(t, bs[0].addr), dial(t, bs[1].addr)
	p1, p2 := brokerv1.NewPageServiceClient(c1), brokerv1.NewPageServiceClient(c2)
	const key = "account-7"
	const readState = `document.cookie + " | " + localStorage.getItem("cart")`

	l, g := acquireSession(t, c1, key)
	if fleet.OwnerOf(l.id) != "b1" || g.GetGeneration() != 1 || g.GetSessionRestored() {
		t.Fatalf("first grant of %q through b1: %s, %v; want a lease of b1, generation 1, fresh", key, l.id, g)
	}
	navigate(t, p1, l.id, site.URL+"/shop")
	evaluate(t, p1, l.id, `document.cookie = "sid=kept; Max-Age=3600; Path=/"; localStorage.setItem("cart", "3 apples"); "set"`)
	l.release(t) // saved in Redis

	// Through b2: b1 owns the session (warm there), so b2 forwards.
	l, g = acquireSession(t, c2, key)
	if fleet.OwnerOf(l.id) != "b1" || g.GetGeneration() != 2 || !g.GetSessionWarm() {
		t.Fatalf("grant of %q through b2: %s, %v; want b1's warm session, generation 2", key, l.id, g)
	}
	if got := evaluate(t, p2, l.id, readState); got != `"sid=kept | 3 apples"` {
		t.Errorf("session state through b2 = %s, want the cookie and localStorage", got)
	}
	l.release(t)

	// b1 dies. The session's ownership expires; b2 takes it over and
	// restores it from Redis.
	bs[0].sigkill(t)
	deadline := time.Now().Add(10 * time.Second)
	var g3 *brokerv1.Granted
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := brokerv1.NewLeaseServiceClient(c2).Lease(ctx)
		if err == nil {
			err = s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{SessionKey: key}}})
		}
		var resp *brokerv1.LeaseResponse
		if err == nil {
			resp, err = s.Recv()
		}
		if err == nil && resp.GetGranted() != nil {
			g3 = resp.GetGranted()
			l = &testLease{id: g3.GetLeaseId(), stream: s, cancel: cancel, done: make(chan struct{})}
			go l.receive()
			break
		}
		cancel()
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("acquire %q through b2 after b1 died = %v, %v; want UNAVAILABLE until b1's ownership expires, then granted", key, resp, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if fleet.OwnerOf(l.id) != "b2" || g3.GetGeneration() != 3 || !g3.GetSessionRestored() {
		t.Fatalf("grant of %q after b1 died: %s, %v; want b2's, generation 3, restored", key, l.id, g3)
	}
	navigate(t, p2, l.id, site.URL+"/shop")
	if got := evaluate(t, p2, l.id, readState); got != `"sid=kept | 3 apples"` {
		t.Errorf("restored session state on b2 = %s, want the cookie and localStorage of the last save", got)
	}
	l.release(t)

	// b2 shuts down cleanly: it saves the session and gives up its
	// ownership, so b3 restores it at once, not a fleet TTL later.
	kill(t, bs[1].cmd.Process.Pid, syscall.SIGTERM)
	<-bs[1].exited
	c3 := dial(t, bs[2].addr)
	l, g = acquireSession(t, c3, key)
	if fleet.OwnerOf(l.id) != "b3" || g.GetGeneration() != 4 || !g.GetSessionRestored() {
		t.Fatalf("grant of %q right after b2 shut down: %s, %v; want b3's, generation 4, restored", key, l.id, g)
	}
	p3 := brokerv1.NewPageServiceClient(c3)
	navigate(t, p3, l.id, site.URL+"/shop")
	if got := evaluate(t, p3, l.id, readState); got != `"sid=kept | 3 apples"` {
		t.Errorf("session state on b3 = %s, want the cookie and localStorage b2 saved", got)
	}
	l.release(t)
}

// readmeFleetRecipe runs the README's fleet grpcurl recipe against a
// broker of a fleet of three, and checks it lists the three.
func readmeFleetRecipe(t *testing.T, addr string) {
	t.Helper()
	bin := os.Getenv("GRPCURL")
	if bin == "" {
		if os.Getenv("BROKER_REQUIRE_BROWSER") != "" {
			t.Fatal("GRPCURL not set (make test sets it)")
		}
		t.Log("GRPCURL not set: the README's fleet recipe is not tried")
		return
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, fleetPart, _ := strings.Cut(string(readme), "## Fleet")
	var recipe string
	for _, line := range strings.Split(fleetPart, "\n") {
		if strings.HasPrefix(line, "grpcurl ") {
			recipe = line
			break
		}
	}
	if recipe == "" {
		t.Fatal("no grpcurl recipe in the README's Fleet section")
	}
	args := strings.Fields(strings.ReplaceAll(strings.ReplaceAll(recipe, "localhost:7071", addr), "'", ""))[1:]
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"brokerId": "b3"`) || !strings.Contains(string(out), `"capacity": 3`) {
		t.Errorf("README recipe %s: %v\n%s\nwant the fleet's stats with b1, b2 and b3", recipe, err, out)
	}
}

// A fleet with bearer tokens and mutual TLS: brokers call each other over
// TLS (verified with --fleet-ca, presenting their own certificate to the
// other's --client-ca) carrying the caller's token, so a lease
// forwarded to another broker belongs to the caller there, and another
// principal cannot reach it through any broker.
func TestFleetTLSAndTokens(t *testing.T) {
	needDeps(t)
	r := testredis.Start(t)
	const alice, bob, ops = "alice-token-0123456789", "bob-token-0123456789ab", "ops-token-0123456789abc"
	tokens := writeTokens(t, alice+" alice client\n"+bob+" bob client\n"+ops+" ops admin\n")
	p := testcert.NewCA(t, "fleet-ca")
	srv := p.Server(t, "127.0.0.1")
	var bs []*brokerProc
	for i := 1; i <= 2; i++ {
		bs = append(bs, startBroker(t, "--max-leases", "1", "--redis", r.URL(), "--broker-id", fmt.Sprintf("b%d", i),
			"--fleet-ttl", "1500ms", "--auth-tokens", tokens, "--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--fleet-ca", p.File, "--client-ca", p.File))
	}
	ca := tlsConn(t, p, bs[0].addr, "alice-cert", alice)
	admin := brokerv1.NewAdminServiceClient(tlsConn(t, p, bs[0].addr, "ops-cert", ops))
	// Each broker registers with its capacity by the time it listens.
	if s, err := fleetStats(t, admin); err != nil || memberIDs(s) != "b1,b2" || s.GetMembers()[1].GetFree() != 1 {
		t.Fatalf("GetStats(FLEET) once both listen = %v, %v; want b1 and b2, b2 with a free lease", s.GetMembers(), err)
	}

	first := acquireLease(t, ca, 0)
	waitFleet(t, admin, 5*time.Second, "b1 full", func(s *brokerv1.GetStatsResponse) bool {
		return len(s.GetMembers()) == 2 && s.GetMembers()[0].GetFree() == 0
	})
	second := acquireLease(t, ca, 0)
	if fleet.OwnerOf(first.id) != "b1" || fleet.OwnerOf(second.id) != "b2" {
		t.Fatalf("alice's leases through b1: %s, %s; want one on b1, one forwarded to b2", first.id, second.id)
	}
	// b2 knows the forwarded lease as alice's.
	ll, err := admin.ListLeases(callCtx(t, 10*time.Second), &brokerv1.ListLeasesRequest{Scope: brokerv1.Scope_SCOPE_FLEET, Principal: "alice"})
	if err != nil || len(ll.GetLeases()) != 2 {
		t.Fatalf("ListLeases(FLEET, principal alice) = %v, %v; want both leases", ll, err)
	}
	// Alice drives it through b1; bob cannot, through either broker.
	pa := brokerv1.NewPageServiceClient(ca)
	if got := evaluate(t, pa, second.id, "1+1"); got != "2" {
		t.Errorf("alice's Evaluate on %s through b1 = %s, want 2", second.id, got)
	}
	for i, b := range bs {
		pb := brokerv1.NewPageServiceClient(tlsConn(t, p, b.addr, "bob-cert", bob))
		if _, err := pb.Evaluate(callCtx(t, 10*time.Second), &brokerv1.EvaluateRequest{LeaseId: second.id, Expression: "1"}); status.Code(err) != codes.NotFound {
			t.Errorf("bob's Evaluate on alice's %s through b%d = %v, want NOT_FOUND", second.id, i+1, err)
		}
	}
	second.release(t)
	first.release(t)
}

// A principal's limit of live leases counts its leases on every broker of
// the fleet: alice, with a limit of 2, holds one on b1 and one on b2, and
// a third through b1 (which has room) is refused, naming both; once she
// releases the one on b2, b1 grants again.
func TestFleetPrincipalLimitCountsEveryBroker(t *testing.T) {
	needDeps(t)
	r := testredis.Start(t)
	const alice, ops = "alice-token-0123456789", "ops-token-0123456789abc"
	tokens := writeTokens(t, alice+" alice client\n"+ops+" ops admin\n")
	var bs []*brokerProc
	for i := 1; i <= 2; i++ {
		bs = append(bs, startBroker(t, "--max-leases", "2", "--redis", r.URL(), "--broker-id", fmt.Sprintf("b%d", i),
			"--fleet-ttl", "1500ms", "--auth-tokens", tokens, "--max-leases-per-principal", "2"))
	}
	as := func(b *brokerProc, token string) *grpc.ClientConn {
		return dialWith(t, b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(tokenCreds(token)))
	}
	admin := brokerv1.NewAdminServiceClient(as(bs[0], ops))
	onB1 := acquireLease(t, as(bs[0], alice), 0)
	onB2 := acquireLease(t, as(bs[1], alice), 0)
	if fleet.OwnerOf(onB1.id) != "b1" || fleet.OwnerOf(onB2.id) != "b2" {
		t.Fatalf("alice's leases: %s through b1, %s through b2; want one on each", onB1.id, onB2.id)
	}
	// b1 sees b2's registration with alice's lease (reading the fleet's
	// stats through b1 also refreshes b1's view of the others).
	waitFleet(t, admin, 5*time.Second, "b2 with one active lease", func(s *brokerv1.GetStatsResponse) bool {
		return len(s.GetMembers()) == 2 && s.GetMembers()[1].GetActive() == 1
	})
	err := tryAcquire(t, as(bs[0], alice))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "1 leases here and 1 on other brokers") {
		t.Fatalf("alice's third acquire through b1 = %v, want RESOURCE_EXHAUSTED counting her lease on b2", err)
	}
	onB2.release(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := tryAcquire(t, as(bs[0], alice))
		if err == nil {
			break
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("alice's acquire through b1 after releasing the lease on b2 = %v, want granted within 10s", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	onB1.release(t)
}
