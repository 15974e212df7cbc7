package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeBroker implements the three services with canned behaviour. Set the
// canned fields before the client runs; read what it saw with the accessors.
type fakeBroker struct {
	brokerv1.UnimplementedLeaseServiceServer
	brokerv1.UnimplementedPageServiceServer
	brokerv1.UnimplementedAdminServiceServer

	leaseID     string
	grantTTL    *durationpb.Duration // nil: the acquire's TTL
	queue       []int32
	acquireErr  error
	afterQueued func(ctx context.Context) error // runs on the stream's context
	onNavigate  func(ctx context.Context) error
	textErr     error
	texts       map[string][]string
	evals       map[string]string
	shot        []byte
	leases      []*brokerv1.LeaseInfo
	sessions    []*brokerv1.SessionInfo
	stats       *brokerv1.GetStatsResponse

	revokeNow   chan *brokerv1.Revoked // the lease stream sends it and ends
	revokeSent  chan struct{}
	renewed     chan struct{} // gets a token per renew, when there is room
	streamEnded chan struct{} // closed when the Lease handler returns

	mu        sync.Mutex
	calls     []string
	acquire   *brokerv1.Acquire
	pageIDs   []string
	revoked   brokerv1.ReclaimReason
	listReq   *brokerv1.ListLeasesRequest
	revokeReq *brokerv1.RevokeLeaseRequest
}

var (
	_ brokerv1.LeaseServiceServer = (*fakeBroker)(nil)
	_ brokerv1.PageServiceServer  = (*fakeBroker)(nil)
	_ brokerv1.AdminServiceServer = (*fakeBroker)(nil)
)

func newFakeBroker() *fakeBroker {
	return &fakeBroker{
		leaseID:     "L1",
		texts:       map[string][]string{},
		evals:       map[string]string{},
		revokeNow:   make(chan *brokerv1.Revoked),
		revokeSent:  make(chan struct{}),
		renewed:     make(chan struct{}, 1),
		streamEnded: make(chan struct{}),
	}
}

// startBroker serves f on a loopback port until the test ends.
func startBroker(tb testing.TB, f *fakeBroker) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	brokerv1.RegisterLeaseServiceServer(srv, f)
	brokerv1.RegisterPageServiceServer(srv, f)
	brokerv1.RegisterAdminServiceServer(srv, f)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	tb.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return lis.Addr().String()
}

func (f *fakeBroker) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

func (f *fakeBroker) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeBroker) acquired() *brokerv1.Acquire {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acquire
}

// revokeLease makes the lease stream send rv, and returns once it is sent.
func (f *fakeBroker) revokeLease(rv *brokerv1.Revoked) {
	f.revokeNow <- rv
	<-f.revokeSent
}

func (f *fakeBroker) Lease(stream brokerv1.LeaseService_LeaseServer) error {
	defer close(f.streamEnded)
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	f.record("acquire")
	f.mu.Lock()
	f.acquire = req.GetAcquire()
	f.mu.Unlock()
	if f.acquireErr != nil {
		return f.acquireErr
	}
	for _, pos := range f.queue {
		if err := stream.Send(&brokerv1.LeaseResponse{Msg: &brokerv1.LeaseResponse_Queued{Queued: &brokerv1.Queued{Position: pos}}}); err != nil {
			return err
		}
	}
	if f.afterQueued != nil {
		if err := f.afterQueued(stream.Context()); err != nil {
			return err
		}
	}
	ttl := f.grantTTL
	if ttl == nil {
		ttl = req.GetAcquire().GetTtl()
	}
	if err := stream.Send(&brokerv1.LeaseResponse{Msg: &brokerv1.LeaseResponse_Granted{Granted: &brokerv1.Granted{LeaseId: f.leaseID, Ttl: ttl}}}); err != nil {
		return err
	}

	reqs := make(chan *brokerv1.LeaseRequest)
	go func() {
		defer close(reqs)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case reqs <- r:
			case <-stream.Context().Done():
				return
			}
		}
	}()
	for {
		select {
		case r, ok := <-reqs:
			if !ok {
				f.record("stream closed")
				return nil
			}
			switch {
			case r.GetRelease() != nil:
				f.record("release")
				return stream.Send(revokedMsg(brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED, "released by the holder"))
			case r.GetRenew() != nil:
				select {
				case f.renewed <- struct{}{}:
				default:
				}
			}
		case rv := <-f.revokeNow:
			f.mu.Lock()
			f.revoked = rv.GetReason()
			f.mu.Unlock()
			err := stream.Send(&brokerv1.LeaseResponse{Msg: &brokerv1.LeaseResponse_Revoked{Revoked: rv}})
			close(f.revokeSent)
			return err
		}
	}
}

func revokedMsg(reason brokerv1.ReclaimReason, msg string) *brokerv1.LeaseResponse {
	return &brokerv1.LeaseResponse{Msg: &brokerv1.LeaseResponse_Revoked{Revoked: &brokerv1.Revoked{Reason: reason, Message: msg}}}
}

// checkLease records the lease ID of a page command and answers like the
// broker: NOT_FOUND for a stranger, FAILED_PRECONDITION once reclaimed.
func (f *fakeBroker) checkLease(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pageIDs = append(f.pageIDs, id)
	if id != f.leaseID {
		return status.Errorf(codes.NotFound, "lease %q not found", id)
	}
	if f.revoked != brokerv1.ReclaimReason_RECLAIM_REASON_UNSPECIFIED {
		return status.Errorf(codes.FailedPrecondition, "lease %s reclaimed: %s", id, f.revoked)
	}
	return nil
}

func (f *fakeBroker) Navigate(ctx context.Context, req *brokerv1.NavigateRequest) (*brokerv1.NavigateResponse, error) {
	f.record("navigate " + req.GetUrl())
	if err := f.checkLease(req.GetLeaseId()); err != nil {
		return nil, err
	}
	if f.onNavigate != nil {
		if err := f.onNavigate(ctx); err != nil {
			return nil, err
		}
	}
	return &brokerv1.NavigateResponse{Status: 200, Url: req.GetUrl(), Title: "Example Domain"}, nil
}

func (f *fakeBroker) WaitForSelector(ctx context.Context, req *brokerv1.WaitForSelectorRequest) (*brokerv1.WaitForSelectorResponse, error) {
	f.record("wait-for " + req.GetSelector())
	if err := f.checkLease(req.GetLeaseId()); err != nil {
		return nil, err
	}
	return &brokerv1.WaitForSelectorResponse{Found: true}, nil
}

func (f *fakeBroker) Text(ctx context.Context, req *brokerv1.TextRequest) (*brokerv1.TextResponse, error) {
	f.record("text " + req.GetSelector())
	if err := f.checkLease(req.GetLeaseId()); err != nil {
		return nil, err
	}
	if f.textErr != nil {
		return nil, f.textErr
	}
	return &brokerv1.TextResponse{Texts: f.texts[req.GetSelector()]}, nil
}

func (f *fakeBroker) Evaluate(ctx context.Context, req *brokerv1.EvaluateRequest) (*brokerv1.EvaluateResponse, error) {
	f.record("eval " + req.GetExpression())
	if err := f.checkLease(req.GetLeaseId()); err != nil {
		return nil, err
	}
	return &brokerv1.EvaluateResponse{ResultJson: f.evals[req.GetExpression()]}, nil
}

func (f *fakeBroker) Screenshot(ctx context.Context, req *brokerv1.ScreenshotRequest) (*brokerv1.ScreenshotResponse, error) {
	f.record(fmt.Sprintf("screenshot full_page=%t", req.GetFullPage()))
	if err := f.checkLease(req.GetLeaseId()); err != nil {
		return nil, err
	}
	return &brokerv1.ScreenshotResponse{Data: f.shot, Format: brokerv1.ImageFormat_IMAGE_FORMAT_PNG}, nil
}

func (f *fakeBroker) ListLeases(ctx context.Context, req *brokerv1.ListLeasesRequest) (*brokerv1.ListLeasesResponse, error) {
	f.mu.Lock()
	f.listReq = proto.Clone(req).(*brokerv1.ListLeasesRequest)
	f.mu.Unlock()
	return &brokerv1.ListLeasesResponse{Leases: f.leases}, nil
}

func (f *fakeBroker) GetLease(ctx context.Context, req *brokerv1.GetLeaseRequest) (*brokerv1.GetLeaseResponse, error) {
	for _, l := range f.leases {
		if l.GetLeaseId() == req.GetLeaseId() {
			return &brokerv1.GetLeaseResponse{Lease: l}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "lease %q not found", req.GetLeaseId())
}

func (f *fakeBroker) RevokeLease(ctx context.Context, req *brokerv1.RevokeLeaseRequest) (*brokerv1.RevokeLeaseResponse, error) {
	f.mu.Lock()
	f.revokeReq = proto.Clone(req).(*brokerv1.RevokeLeaseRequest)
	f.mu.Unlock()
	for _, l := range f.leases {
		if l.GetLeaseId() == req.GetLeaseId() {
			reason := brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED
			if l.GetReason() != brokerv1.ReclaimReason_RECLAIM_REASON_UNSPECIFIED {
				reason = l.GetReason() // already closing
			}
			return &brokerv1.RevokeLeaseResponse{Reason: reason}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "lease %q not found", req.GetLeaseId())
}

func (f *fakeBroker) ListSessions(ctx context.Context, req *brokerv1.ListSessionsRequest) (*brokerv1.ListSessionsResponse, error) {
	return &brokerv1.ListSessionsResponse{Sessions: f.sessions}, nil
}

func (f *fakeBroker) DeleteSession(ctx context.Context, req *brokerv1.DeleteSessionRequest) (*brokerv1.DeleteSessionResponse, error) {
	for _, s := range f.sessions {
		if s.GetSessionKey() == req.GetSessionKey() {
			resp := &brokerv1.DeleteSessionResponse{}
			if s.GetLeaseId() != "" {
				resp.LeaseReason = brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED
			}
			return resp, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no session %q", req.GetSessionKey())
}

func (f *fakeBroker) GetStats(ctx context.Context, req *brokerv1.GetStatsRequest) (*brokerv1.GetStatsResponse, error) {
	return f.stats, nil
}

// result is what one run of the client did.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

func runClient(tb testing.TB, ctx context.Context, args ...string) result {
	tb.Helper()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no command", nil, "client: missing command"},
		{"unknown command", []string{"frobnicate"}, `client: unknown command "frobnicate"`},
		{"lease without url", []string{"lease", "--text", "h1"}, "client: lease: --url is required"},
		{"unknown flag", []string{"lease", "--url", "https://example.com/", "--bogus"}, "flag provided but not defined: -bogus"},
		{"bad viewport", []string{"lease", "--url", "https://example.com/", "--viewport", "wide"}, "WIDTHxHEIGHT"},
		{"bad label", []string{"lease", "--url", "https://example.com/", "--label", "team"}, `label "team" is not k=v`},
		{"full page without screenshot", []string{"lease", "--url", "https://example.com/", "--full-page"}, "--full-page needs --screenshot"},
		{"revoke without id", []string{"revoke"}, "revoke: want one lease ID, got 0 arguments"},
		{"lease-info with two ids", []string{"lease-info", "a", "b"}, "lease-info: want one lease ID, got 2 arguments"},
		{"stats with argument", []string{"stats", "extra"}, `stats: unexpected argument "extra"`},
		{"zero timeout", []string{"--timeout", "0s", "stats"}, "--timeout must be positive"},
		{"drain with argument", []string{"drain", "now"}, `drain: unexpected argument "now"`},
		{"undrain with argument", []string{"undrain", "now"}, `undrain: unexpected argument "now"`},
		{"wait-idle with argument", []string{"wait-idle", "5s"}, `wait-idle: unexpected argument "5s"`},
		{"wait-idle zero interval", []string{"wait-idle", "--interval", "0s"}, "wait-idle: --interval must be positive"},
		{"health with argument", []string{"health", "x"}, `health: unexpected argument "x"`},
		{"health unknown flag", []string{"health", "--bogus"}, "flag provided but not defined: -bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runClient(t, t.Context(), tt.args...)
			if r.code != exitUsage {
				t.Errorf("run(%q) exit = %d, want %d (usage)\n%v", tt.args, r.code, exitUsage, r)
			}
			if !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("run(%q) stderr lacks %q\n%v", tt.args, tt.wantErr, r)
			}
			if !strings.Contains(r.stderr, usage) {
				t.Errorf("run(%q) stderr lacks the usage text\n%v", tt.args, r)
			}
			if r.stdout != "" {
				t.Errorf("run(%q) stdout = %q, want empty", tt.args, r.stdout)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"stats", "-h"}} {
		r := runClient(t, t.Context(), args...)
		if r.code != 0 || r.stdout != usage || r.stderr != "" {
			t.Errorf("run(%q) = %v, want exit 0 and the usage text on stdout", args, r)
		}
	}
	for _, want := range []string{"Exit codes:", "10+N", "18 RESOURCE_EXHAUSTED", "  2      usage error"} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage text lacks %q", want)
		}
	}
}

func TestVersion(t *testing.T) {
	// Not parallel: it sets the package's version, as -ldflags -X would.
	for _, args := range [][]string{{"--version"}, {"stats", "--version"}} {
		r := runClient(t, t.Context(), args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "client ") || len(strings.TrimSpace(r.stdout)) <= len("client") {
			t.Errorf("run(%q) = %v, want exit 0 and \"client <version>\"", args, r)
		}
	}
	old := version
	version = "v1.2.3"
	t.Cleanup(func() { version = old })
	if r := runClient(t, t.Context(), "--version"); r.stdout != "client v1.2.3\n" {
		t.Errorf("run(--version) with version=v1.2.3 stdout = %q, want %q", r.stdout, "client v1.2.3\n")
	}
}

func TestGlobalFlagsBeforeOrAfterCommand(t *testing.T) {
	t.Parallel()
	f := newFakeBroker()
	f.stats = &brokerv1.GetStatsResponse{Capacity: 7, InvariantOk: true}
	addr := startBroker(t, f)
	tests := [][]string{
		{"--addr", addr, "stats"},
		{"stats", "--addr", addr},
		{"--json", "--addr", addr, "stats"},
		{"stats", "--json", "--addr=" + addr, "--timeout", "5s"},
		{"--addr", "127.0.0.1:1", "stats", "--addr", addr}, // the later one wins
	}
	for _, args := range tests {
		r := runClient(t, t.Context(), args...)
		if r.code != 0 {
			t.Errorf("run(%q) = %v, want exit 0", args, r)
			continue
		}
		if slices.Contains(args, "--json") {
			if !strings.Contains(r.stdout, `"capacity": 7`) {
				t.Errorf("run(%q) stdout = %q, want JSON with capacity 7", args, r.stdout)
			}
		} else if !strings.Contains(r.stdout, "capacity") || strings.Contains(r.stdout, "{") {
			t.Errorf("run(%q) stdout = %q, want the human listing", args, r.stdout)
		}
	}
}

func TestAddrFromEnvironment(t *testing.T) {
	f := newFakeBroker()
	f.stats = &brokerv1.GetStatsResponse{Capacity: 3}
	t.Setenv("BROKER_ADDR", startBroker(t, f))
	if r := runClient(t, t.Context(), "stats"); r.code != 0 || !strings.Contains(r.stdout, "capacity") {
		t.Errorf("run(stats) with BROKER_ADDR set = %v, want exit 0 and stats", r)
	}
}

func TestUnreachableBroker(t *testing.T) {
	t.Parallel()
	// Take a free port and close it, so nothing listens there.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	r := runClient(t, t.Context(), "stats", "--addr", addr)
	if want := exitRPC + int(codes.Unavailable); r.code != want {
		t.Errorf("run(stats) against a closed port = %v, want exit %d", r, want)
	}
	if !strings.HasPrefix(r.stderr, "client: stats: UNAVAILABLE: ") {
		t.Errorf("run(stats) against a closed port stderr = %q, want client: stats: UNAVAILABLE: ...", r.stderr)
	}
}
