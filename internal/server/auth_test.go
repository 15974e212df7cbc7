package server

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/lease"
)

const (
	aliceToken = "alice-token-0123456789"
	bobToken   = "bob-token-0123456789ab"
	opsToken   = "ops-token-0123456789ab"
	testTokens = "# test principals\n" +
		aliceToken + " alice client\n" +
		bobToken + " bob client max_leases=2\n" +
		opsToken + " ops admin\n"
)

// withAuth makes callers authenticate with testTokens; liveLimit is
// --max-leases-per-principal (0: none).
func withAuth(liveLimit int) brokerOption {
	return func(lc *lease.Config, sc *Config, _ *GRPCConfig) {
		tokens, err := ParseTokens(strings.NewReader(testTokens))
		if err != nil {
			panic(err)
		}
		sc.Auth = NewAuth(AuthConfig{Tokens: tokens})
		lc.PrincipalLimit = sc.Auth.LeaseLimit(liveLimit)
	}
}

// bearer is a per-call credential for tests, over plaintext.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// dial opens another connection to the broker.
func (b *broker) dial(t *testing.T, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	target := b.lis.Addr().String()
	if bl, ok := b.lis.(*bufconn.Listener); ok {
		target = "passthrough:///bufnet"
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return bl.DialContext(ctx)
		}))
	}
	conn, err := grpc.NewClient(target, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// as returns the broker seen by the holder of token: the harness's helpers
// on it call with that token.
func (b *broker) as(t *testing.T, token string) *broker {
	t.Helper()
	c := *b
	c.conn = b.dial(t, grpc.WithPerRPCCredentials(bearer(token)))
	c.lease = brokerv1.NewLeaseServiceClient(c.conn)
	c.page = brokerv1.NewPageServiceClient(c.conn)
	c.admin = brokerv1.NewAdminServiceClient(c.conn)
	return &c
}

// Missing, malformed and unknown credentials all get the same
// UNAUTHENTICATED, on the broker's services; health and reflection need
// none.
func TestAuthRejectsCallsWithoutAValidToken(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 1}, withAuth(0))
	ctx := context.Background()
	raw := b.dial(t)
	with := func(vals ...string) context.Context {
		md := metadata.MD{}
		for _, v := range vals {
			md.Append("authorization", v)
		}
		return metadata.NewOutgoingContext(ctx, md)
	}
	creds := []struct {
		name string
		ctx  context.Context
	}{
		{"no token", ctx},
		{"unknown token", with("Bearer not-a-token-of-ours-0123")},
		{"a valid token's prefix", with("Bearer " + aliceToken[:len(aliceToken)-1])},
		{"a valid token with a suffix", with("Bearer " + aliceToken + "x")},
		{"no scheme", with(aliceToken)},
		{"Basic scheme", with("Basic " + aliceToken)},
		{"empty bearer", with("Bearer ")},
		{"two authorization values", with("Bearer "+aliceToken, "Bearer "+opsToken)},
	}
	var firstMsg string
	for _, c := range creds {
		calls := map[string]error{}
		stream, err := brokerv1.NewLeaseServiceClient(raw).Lease(c.ctx)
		if err == nil {
			stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{}}})
			_, err = stream.Recv()
		}
		calls["LeaseService/Lease"] = err
		_, calls["PageService/Content"] = brokerv1.NewPageServiceClient(raw).Content(c.ctx, &brokerv1.ContentRequest{LeaseId: "l_x"})
		_, calls["AdminService/GetStats"] = brokerv1.NewAdminServiceClient(raw).GetStats(c.ctx, &brokerv1.GetStatsRequest{})
		for what, err := range calls {
			wantCode(t, c.name+": "+what, err, codes.Unauthenticated, "authorization: Bearer TOKEN")
			msg := status.Convert(err).Message()
			if firstMsg == "" {
				firstMsg = msg
			}
			if msg != firstMsg {
				t.Errorf("%s: %s message %q, want the same as for every bad credential: %q", c.name, what, msg, firstMsg)
			}
			for _, leak := range []string{"alice", "bob", "ops", "token-0123"} {
				if strings.Contains(msg, leak) {
					t.Errorf("%s: %s message %q tells %q", c.name, what, msg, leak)
				}
			}
		}
	}
	if st := b.leases.Stats(); st.GrantedTotal != 0 {
		t.Fatalf("unauthenticated acquires granted %d leases", st.GrantedTotal)
	}

	// Health and reflection (which only describes the public API, and
	// which grpcurl needs to call health) are open.
	health := healthpb.NewHealthClient(raw)
	for _, svc := range []string{"", brokerv1.LeaseService_ServiceDesc.ServiceName} {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health Check(%q) without a token = %v, %v; want SERVING", svc, resp, err)
		}
	}
	refl, err := reflectionpb.NewServerReflectionClient(raw).ServerReflectionInfo(ctx)
	if err == nil {
		refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		_, err = refl.Recv()
		refl.CloseSend()
	}
	if err != nil {
		t.Fatalf("reflection without a token: %v, want it open", err)
	}

	// The same calls with a valid token get through.
	alice := b.as(t, aliceToken)
	alice.acquire(t, &brokerv1.Acquire{}).release()
	if _, err := b.as(t, opsToken).admin.GetStats(ctx, &brokerv1.GetStatsRequest{}); err != nil {
		t.Fatalf("GetStats with the admin token: %v", err)
	}
}

// adminCalls calls every AdminService RPC with harmless arguments.
var adminCalls = map[string]func(ctx context.Context, c brokerv1.AdminServiceClient) error{
	"ListLeases": func(ctx context.Context, c brokerv1.AdminServiceClient) error {
		_, err := c.ListLeases(ctx, &brokerv1.ListLeasesRequest{})
		return err
	},
	"GetLease": func(ctx context.Context, c brokerv1.AdminServiceClient) error {
		_, err := c.GetLease(ctx, &brokerv1.GetLeaseRequest{LeaseId: "l_unknown"})
		return err
	},
	"RevokeLease": func(ctx context.Context, c brokerv1.AdminServiceClient) error {
		_, err := c.RevokeLease(ctx, &brokerv1.RevokeLeaseRequest{LeaseId: "l_unknown"})
		return err
	},
	"GetStats": func(ctx context.Context, c brokerv1.AdminServiceClient) error {
		_, err := c.GetStats(ctx, &brokerv1.GetStatsRequest{})
		return err
	},
	"Drain": func(ctx context.Context, c brokerv1.AdminServiceClient) error {
		_, err := c.Drain(ctx, &brokerv1.DrainRequest{})
		return err
	},
	"Undrain": func(ctx context.Context, c brokerv1.AdminServiceClient) error {
		_, err := c.Undrain(ctx, &brokerv1.UndrainRequest{})
		return err
	},
	"ListSessions": func(ctx context.Context, c brokerv1.AdminServiceClient) error {
		_, err := c.ListSessions(ctx, &brokerv1.ListSessionsRequest{})
		return err
	},
	"DeleteSession": func(ctx context.Context, c brokerv1.AdminServiceClient) error {
		_, err := c.DeleteSession(ctx, &brokerv1.DeleteSessionRequest{SessionKey: "none"})
		return err
	},
}

// coversService fails unless calls has an entry for every method of sd.
func coversService[F any](t *testing.T, sd grpc.ServiceDesc, calls map[string]F) {
	t.Helper()
	for _, m := range sd.Methods {
		if _, ok := calls[m.MethodName]; !ok {
			t.Fatalf("the test does not call %s/%s: add it", sd.ServiceName, m.MethodName)
		}
	}
}

// AdminService needs the admin role: a client principal gets
// PERMISSION_DENIED on each RPC, and nothing happens.
func TestAuthAdminServiceNeedsAdminRole(t *testing.T) {
	coversService(t, brokerv1.AdminService_ServiceDesc, adminCalls)
	b := newBroker(t, lease.Config{Capacity: 1}, withAuth(0))
	alice, ops := b.as(t, aliceToken), b.as(t, opsToken)
	ctx := context.Background()
	for name, call := range adminCalls {
		err := call(ctx, alice.admin)
		wantCode(t, "AdminService/"+name+" as client alice", err, codes.PermissionDenied, `principal "alice"`)
		if !strings.Contains(status.Convert(err).Message(), "admin role") {
			t.Errorf("AdminService/%s as alice: %q, want it to name the admin role", name, status.Convert(err).Message())
		}
		if c := status.Code(call(ctx, ops.admin)); c == codes.PermissionDenied || c == codes.Unauthenticated {
			t.Errorf("AdminService/%s as admin ops = %v, want it allowed", name, c)
		}
	}
	// The map's order is random: end undrained, then check a client's
	// Drain is refused, not done.
	if err := adminCalls["Undrain"](ctx, ops.admin); err != nil {
		t.Fatalf("Undrain as ops: %v", err)
	}
	if err := adminCalls["Drain"](ctx, alice.admin); status.Code(err) != codes.PermissionDenied || b.leases.Stats().Draining {
		t.Fatalf("Drain as alice = %v, draining %v; want PERMISSION_DENIED and not draining", err, b.leases.Stats().Draining)
	}
}

// pageCalls calls every PageService RPC on a lease of the test site.
var pageCalls = []struct {
	name string
	call func(ctx context.Context, c brokerv1.PageServiceClient, id string) error
}{
	{"Navigate", func(ctx context.Context, c brokerv1.PageServiceClient, id string) error {
		_, err := c.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: id, Url: site.URL})
		return err
	}},
	{"WaitForSelector", func(ctx context.Context, c brokerv1.PageServiceClient, id string) error {
		_, err := c.WaitForSelector(ctx, &brokerv1.WaitForSelectorRequest{LeaseId: id, Selector: "h1"})
		return err
	}},
	{"Fill", func(ctx context.Context, c brokerv1.PageServiceClient, id string) error {
		_, err := c.Fill(ctx, &brokerv1.FillRequest{LeaseId: id, Selector: "#q", Value: "v"})
		return err
	}},
	{"Press", func(ctx context.Context, c brokerv1.PageServiceClient, id string) error {
		_, err := c.Press(ctx, &brokerv1.PressRequest{LeaseId: id, Selector: "#q", Key: "End"})
		return err
	}},
	{"Click", func(ctx context.Context, c brokerv1.PageServiceClient, id string) error {
		_, err := c.Click(ctx, &brokerv1.ClickRequest{LeaseId: id, Selector: "#go"})
		return err
	}},
	{"Evaluate", func(ctx context.Context, c brokerv1.PageServiceClient, id string) error {
		_, err := c.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: id, Expression: "1 + 1"})
		return err
	}},
	{"Content", func(ctx context.Context, c brokerv1.PageServiceClient, id string) error {
		_, err := c.Content(ctx, &brokerv1.ContentRequest{LeaseId: id})
		return err
	}},
	{"Text", func(ctx context.Context, c brokerv1.PageServiceClient, id string) error {
		_, err := c.Text(ctx, &brokerv1.TextRequest{LeaseId: id, Selector: "h1"})
		return err
	}},
	{"Screenshot", func(ctx context.Context, c brokerv1.PageServiceClient, id string) error {
		_, err := c.Screenshot(ctx, &brokerv1.ScreenshotRequest{LeaseId: id})
		return err
	}},
	{"SetCookies", func(ctx context.Context, c brokerv1.PageServiceClient, id string) error {
		_, err := c.SetCookies(ctx, &brokerv1.SetCookiesRequest{LeaseId: id,
			Cookies: []*brokerv1.Cookie{{Name: "c", Value: "v", Url: site.URL}}})
		return err
	}},
	{"GetCookies", func(ctx context.Context, c brokerv1.PageServiceClient, id string) error {
		_, err := c.GetCookies(ctx, &brokerv1.GetCookiesRequest{LeaseId: id})
		return err
	}},
}

// Another principal's lease is NOT_FOUND on every page command, exactly as
// an unknown lease, while it is live and after it ended; admins included.
func TestAuthOtherPrincipalsLeaseIsNotFound(t *testing.T) {
	byName := map[string]bool{}
	for _, c := range pageCalls {
		byName[c.name] = true
	}
	coversService(t, brokerv1.PageService_ServiceDesc, byName)
	b := newBroker(t, lease.Config{Capacity: 2}, withAuth(0))
	alice, bob, ops := b.as(t, aliceToken), b.as(t, bobToken), b.as(t, opsToken)
	ctx := context.Background()
	h := alice.acquire(t, &brokerv1.Acquire{})
	bobs := bob.acquire(t, &brokerv1.Acquire{})

	notFound := func(when string, caller *broker, who string, c func(context.Context, brokerv1.PageServiceClient, string) error, name string) {
		t.Helper()
		err := c(ctx, caller.page, h.id)
		wantCode(t, when+": "+name+"(alice's lease) as "+who, err, codes.NotFound, "")
		unknown := c(ctx, caller.page, "l_unknown")
		if got, want := strings.ReplaceAll(status.Convert(err).Message(), h.id, "ID"),
			strings.ReplaceAll(status.Convert(unknown).Message(), "l_unknown", "ID"); got != want {
			t.Errorf("%s: %s(alice's lease) as %s says %q; an unknown lease says %q: want the same", when, name, who, got, want)
		}
	}
	for _, c := range pageCalls {
		notFound("live", bob, "bob", c.call, c.name)
		notFound("live", ops, "admin ops", c.call, c.name)
		if err := c.call(ctx, alice.page, h.id); err != nil {
			t.Fatalf("%s(own lease) as alice = %v, want success", c.name, err)
		}
	}
	// Bob's attempts were not activity on alice's lease, and did nothing
	// to bob's own.
	if _, err := bob.page.Evaluate(ctx, &brokerv1.EvaluateRequest{LeaseId: bobs.id, Expression: "1"}); err != nil {
		t.Fatalf("bob's own lease after his attempts on alice's: %v", err)
	}
	h.release()
	for _, c := range pageCalls {
		notFound("released", bob, "bob", c.call, c.name)
		wantCode(t, c.name+"(released lease) as alice", c.call(ctx, alice.page, h.id), codes.FailedPrecondition, "RELEASED")
	}
	bobs.release()
}

// Admins see every lease with its principal, and filter by principal;
// clients never see LeaseInfo.
func TestAuthAdminSeesAllLeasesByPrincipal(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 3}, withAuth(0))
	alice, bob, ops := b.as(t, aliceToken), b.as(t, bobToken), b.as(t, opsToken)
	ctx := context.Background()
	ha := alice.acquire(t, &brokerv1.Acquire{Labels: map[string]string{"job": "x"}})
	hb := bob.acquire(t, &brokerv1.Acquire{Labels: map[string]string{"job": "x"}})

	list := func(req *brokerv1.ListLeasesRequest) map[string]string {
		t.Helper()
		resp, err := ops.admin.ListLeases(ctx, req)
		if err != nil {
			t.Fatalf("ListLeases(%v) as ops: %v", req, err)
		}
		out := map[string]string{}
		for _, l := range resp.Leases {
			out[l.LeaseId] = l.Principal
		}
		return out
	}
	if got := list(&brokerv1.ListLeasesRequest{}); len(got) != 2 || got[ha.id] != "alice" || got[hb.id] != "bob" {
		t.Fatalf("ListLeases as ops = %v, want %s: alice and %s: bob", got, ha.id, hb.id)
	}
	if got := list(&brokerv1.ListLeasesRequest{Principal: "bob", Labels: map[string]string{"job": "x"}}); len(got) != 1 || got[hb.id] != "bob" {
		t.Fatalf("ListLeases(principal bob) = %v, want only %s", got, hb.id)
	}
	if got := list(&brokerv1.ListLeasesRequest{Principal: "nobody"}); len(got) != 0 {
		t.Fatalf("ListLeases(principal nobody) = %v, want none", got)
	}
	info, err := ops.admin.GetLease(ctx, &brokerv1.GetLeaseRequest{LeaseId: ha.id})
	if err != nil || info.Lease.Principal != "alice" {
		t.Fatalf("GetLease(alice's) as ops = %v, %v; want principal alice", info, err)
	}
	if _, err := ops.admin.RevokeLease(ctx, &brokerv1.RevokeLeaseRequest{LeaseId: hb.id}); err != nil {
		t.Fatalf("RevokeLease(bob's) as ops: %v", err)
	}
	if r := hb.revoked(); r.Reason != brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED {
		t.Fatalf("bob's lease ended %v, want REVOKED", r)
	}
	ha.release()
}

// --max-leases-per-principal and a tokens file's max_leases bound the live
// leases of each principal, and say which limit and its value.
func TestAuthLiveLeaseLimitPerPrincipal(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 4}, withAuth(1))
	alice, bob := b.as(t, aliceToken), b.as(t, bobToken)
	ha := alice.acquire(t, &brokerv1.Acquire{})
	_, err := alice.tryAcquire(t, &brokerv1.Acquire{})
	wantCode(t, "alice's second acquire (limit 1)", err, codes.ResourceExhausted, "its limit of live leases is 1")
	// bob's max_leases=2 replaces the default 1.
	hb1 := bob.acquire(t, &brokerv1.Acquire{})
	hb2 := bob.acquire(t, &brokerv1.Acquire{})
	_, err = bob.tryAcquire(t, &brokerv1.Acquire{})
	wantCode(t, "bob's third acquire (max_leases=2)", err, codes.ResourceExhausted, "its limit of live leases is 2")
	// A lease that ends gives its place back.
	ha.release()
	alice.acquire(t, &brokerv1.Acquire{}).release()
	hb1.release()
	hb2.release()
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// --acquires-per-second is a token bucket per principal.
func TestAuthAcquireRatePerPrincipal(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	b := newBroker(t, lease.Config{Capacity: 2}, withAuth(0), func(_ *lease.Config, sc *Config, _ *GRPCConfig) {
		sc.AcquireRate, sc.AcquireBurst, sc.Now = 1, 2, clock.Now
	})
	alice, bob := b.as(t, aliceToken), b.as(t, bobToken)
	alice.acquire(t, &brokerv1.Acquire{}).release()
	alice.acquire(t, &brokerv1.Acquire{}).release()
	_, err := alice.tryAcquire(t, &brokerv1.Acquire{})
	wantCode(t, "alice's third acquire in a burst of 2", err, codes.ResourceExhausted, `principal "alice" is over its acquire rate limit of 1 per second (burst 2)`)
	bob.acquire(t, &brokerv1.Acquire{}).release() // bob has his own bucket
	clock.Advance(time.Second)
	alice.acquire(t, &brokerv1.Acquire{}).release()
	_, err = alice.tryAcquire(t, &brokerv1.Acquire{})
	wantCode(t, "alice's acquire right after the refilled one", err, codes.ResourceExhausted, "acquire rate limit")
	if got := b.leases.Stats().GrantedTotal; got != 4 {
		t.Fatalf("granted %d leases, want 4: refused acquires must not reach the lease manager", got)
	}
}

// claimCounter is a fleet of one broker that counts the sticky sessions
// it is asked to claim.
type claimCounter struct {
	Fleet
	claims atomic.Int32
}

func (f *claimCounter) ID() string { return "b1" }
func (f *claimCounter) ClaimSession(context.Context, string) (string, error) {
	f.claims.Add(1)
	return "b1", nil
}

// In a fleet, an acquire over the rate limit is refused at the door,
// before it costs a round trip to Redis or another broker.
func TestAuthAcquireRateChargedBeforeTheFleet(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	fl := &claimCounter{}
	b := newBroker(t, lease.Config{Capacity: 2}, withAuth(0), func(_ *lease.Config, sc *Config, _ *GRPCConfig) {
		sc.AcquireRate, sc.AcquireBurst, sc.Now, sc.Fleet = 1, 1, clock.Now, fl
	})
	alice := b.as(t, aliceToken)
	alice.acquire(t, &brokerv1.Acquire{SessionKey: "shop"}).release()
	_, err := alice.tryAcquire(t, &brokerv1.Acquire{SessionKey: "shop"})
	wantCode(t, "alice's second acquire in a burst of 1", err, codes.ResourceExhausted, "acquire rate limit")
	if n := fl.claims.Load(); n != 1 {
		t.Fatalf("the fleet was asked to claim %d sessions, want 1: the refused acquire must not reach it", n)
	}
}

// A sticky session belongs to its principal: another principal naming the
// same key gets a session of its own, not the first one's cookies.
func TestAuthStickySessionsArePerPrincipal(t *testing.T) {
	b := newBroker(t, lease.Config{Capacity: 3}, withAuth(0))
	alice, bob, ops := b.as(t, aliceToken), b.as(t, bobToken), b.as(t, opsToken)
	h, _ := alice.acquireGranted(t, &brokerv1.Acquire{SessionKey: "shop"})
	alice.setCookie(t, h.id, "who", "alice")
	h.release()

	h, g := bob.acquireGranted(t, &brokerv1.Acquire{SessionKey: "shop"})
	if g.SessionWarm || g.SessionRestored {
		t.Fatalf("bob's grant of key shop = %v, want a fresh session, not alice's", g)
	}
	if c := bob.cookie(t, h.id, "who"); c != "" {
		t.Fatalf("bob's session shop has alice's cookie who=%q", c)
	}
	h.release()

	h, g = alice.acquireGranted(t, &brokerv1.Acquire{SessionKey: "shop"})
	if !g.SessionWarm || alice.cookie(t, h.id, "who") != "alice" {
		t.Fatalf("alice's second grant of shop = %v, cookie %q; want her warm session with who=alice", g, alice.cookie(t, h.id, "who"))
	}
	h.release()

	var keys []string
	for _, s := range ops.sessions(t) {
		keys = append(keys, s.SessionKey)
	}
	if want := []string{`"alice"shop`, `"bob"shop`}; !slices.Equal(keys, want) {
		t.Fatalf("ListSessions as ops = %q, want %q", keys, want)
	}
	_, err := alice.tryAcquire(t, &brokerv1.Acquire{SessionKey: strings.Repeat("k", lease.MaxSessionKey-len(`"alice"`)+1)})
	wantCode(t, "acquire with a session key too long once prefixed", err, codes.InvalidArgument, `left to principal "alice"`)
	if _, err := ops.admin.DeleteSession(context.Background(), &brokerv1.DeleteSessionRequest{SessionKey: `"bob"shop`}); err != nil {
		t.Fatalf("DeleteSession(bob's shop) as ops: %v", err)
	}
}
