package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"

	"github.com/browserbroker/broker/client"
	"github.com/browserbroker/broker/internal/lease"
	"github.com/browserbroker/broker/internal/server"
	"github.com/browserbroker/broker/internal/testcert"
)

// The ops commands (drain, undrain, wait-idle, health) run against a real
// broker: the lease manager and the gRPC edge with its health service,
// authentication and TLS, over loopback TCP. Only the browsers are fake:
// these commands never touch a page, so no Chromium is needed.

const (
	opsAdminToken  = "ops-admin-token-0123456789"
	opsClientToken = "ops-client-token-0123456789"
)

// fakeBackend opens sessions that hold nothing.
type fakeBackend struct{ live atomic.Int64 }

func (b *fakeBackend) Open(ctx context.Context, spec any) (lease.Session, error) {
	b.live.Add(1)
	return &fakeSession{backend: b, lost: make(chan struct{})}, nil
}

func (b *fakeBackend) Live() int { return int(b.live.Load()) }

type fakeSession struct {
	backend *fakeBackend
	closed  atomic.Bool
	lost    chan struct{}
}

func (s *fakeSession) Close(context.Context) error {
	if s.closed.CompareAndSwap(false, true) {
		s.backend.live.Add(-1)
	}
	return nil
}

func (s *fakeSession) Lost() <-chan struct{}              { return s.lost }
func (s *fakeSession) LostReason() (lease.Reason, string) { return 0, "" }

var _ lease.Backend = (*fakeBackend)(nil)

// opsBroker is a real broker serving TLS with a certificate for the name
// "broker" (as the Kubernetes manifests' probes expect), with an admin and
// a client token.
type opsBroker struct {
	addr   string
	caFile string // the PEM file that verifies its certificate
}

func startOpsBroker(t *testing.T) opsBroker {
	t.Helper()
	ca := testcert.NewCA(t, "test CA")
	cert := ca.Server(t, "broker").TLS
	tokens, err := server.ParseTokens(strings.NewReader(
		opsAdminToken + " ops admin\n" + opsClientToken + " worker client\n"))
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	leases := lease.New(&fakeBackend{}, lease.Config{Capacity: 2, Logger: log})
	g, _ := server.NewGRPCServer(server.New(server.Config{Leases: leases, Logger: log,
		Auth: server.NewAuth(server.AuthConfig{Tokens: tokens})}),
		server.GRPCConfig{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = g.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = leases.Close(ctx)
		g.Stop()
		<-served
	})
	return opsBroker{addr: lis.Addr().String(), caFile: ca.File}
}

// args are the global flags that reach b as the probes do: TLS verified
// with the CA file and the name "broker", and the token when not empty.
func (b opsBroker) args(token string, rest ...string) []string {
	args := []string{"--addr", b.addr, "--tls-ca", b.caFile, "--tls-server-name", "broker"}
	if token != "" {
		args = append(args, "--token", token)
	}
	return append(args, rest...)
}

// hold acquires a lease on b with the client package until the test ends
// or release is called.
func (b opsBroker) hold(t *testing.T) (release func()) {
	t.Helper()
	pem, err := os.ReadFile(b.caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	c, err := client.Dial(b.addr, client.WithToken(opsClientToken),
		client.WithTLS(&tls.Config{RootCAs: roots, ServerName: "broker"}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	l, err := c.Acquire(t.Context(), client.AcquireOptions{})
	if err != nil {
		t.Fatalf("Acquire on the ops broker: %v", err)
	}
	var once atomic.Bool
	release = func() {
		if once.CompareAndSwap(false, true) {
			if _, err := l.Release(context.Background()); err != nil {
				t.Errorf("Release: %v", err)
			}
		}
	}
	t.Cleanup(release)
	return release
}

// Drain turns the readiness check (the lease service) NOT_SERVING and
// leaves the liveness check (the broker as a whole) SERVING; undrain turns
// it back. This is what the Deployment's probes and preStop hook rely on.
func TestDrainHealthUndrain(t *testing.T) {
	t.Parallel()
	b := startOpsBroker(t)
	ctx := t.Context()

	// Health needs no token.
	if r := runClient(t, ctx, b.args("", "health")...); r.code != 0 || r.stdout != "\"browserbroker.v1.LeaseService\": SERVING\n" {
		t.Fatalf("health before drain = %v, want exit 0 and SERVING", r)
	}

	r := runClient(t, ctx, b.args(opsAdminToken, "drain")...)
	if r.code != 0 || r.stdout != "draining: new acquires fail with UNAVAILABLE; 0 leases still active\n" {
		t.Fatalf("drain = %v, want exit 0 and draining with 0 leases", r)
	}
	// Draining twice is fine.
	if r := runClient(t, ctx, b.args(opsAdminToken, "--json", "drain")...); r.code != 0 || !json.Valid([]byte(r.stdout)) {
		t.Errorf("--json drain again = %v, want exit 0 and a JSON document", r)
	}

	r = runClient(t, ctx, b.args("", "health")...)
	if r.code != exitNotReady || r.stdout != "\"browserbroker.v1.LeaseService\": NOT_SERVING\n" {
		t.Errorf("health while draining = %v, want exit %d and NOT_SERVING", r, exitNotReady)
	}
	if want := "client: health \"browserbroker.v1.LeaseService\": NOT_SERVING\n"; r.stderr != want {
		t.Errorf("health while draining stderr = %q, want %q", r.stderr, want)
	}
	if r := runClient(t, ctx, b.args("", "health", "--service=")...); r.code != 0 || r.stdout != "\"\": SERVING\n" {
		t.Errorf("health --service= while draining = %v, want exit 0 and SERVING (liveness)", r)
	}
	r = runClient(t, ctx, b.args("", "--json", "health")...)
	var doc map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != exitNotReady || doc["status"] != "NOT_SERVING" {
		t.Errorf("--json health while draining = %v (parsed %v, %v), want exit %d and status NOT_SERVING", r, doc, err, exitNotReady)
	}

	if r := runClient(t, ctx, b.args(opsAdminToken, "undrain")...); r.code != 0 || r.stdout != "undrained: granting leases again\n" {
		t.Fatalf("undrain = %v, want exit 0", r)
	}
	if r := runClient(t, ctx, b.args("", "health")...); r.code != 0 {
		t.Errorf("health after undrain = %v, want exit 0", r)
	}
}

func TestDrainNeedsAdmin(t *testing.T) {
	t.Parallel()
	b := startOpsBroker(t)
	tests := []struct {
		token string
		want  codes.Code
	}{
		{"", codes.Unauthenticated},
		{opsClientToken, codes.PermissionDenied},
	}
	for _, tt := range tests {
		for _, cmd := range []string{"drain", "undrain", "wait-idle"} {
			r := runClient(t, t.Context(), b.args(tt.token, cmd)...)
			if want := exitRPC + int(tt.want); r.code != want || !strings.HasPrefix(r.stderr, "client: "+cmd+": "+codeName(tt.want)+": ") {
				t.Errorf("%s with token %q = %v, want exit %d and %s", cmd, tt.token, r, want, codeName(tt.want))
			}
		}
	}
	if r := runClient(t, t.Context(), b.args(opsAdminToken, "health")...); r.code != 0 {
		t.Errorf("health with --tls-ca and --tls-server-name = %v, want exit 0", r)
	}
}

func TestHealthFailures(t *testing.T) {
	t.Parallel()
	b := startOpsBroker(t)
	r := runClient(t, t.Context(), b.args("", "health", "--service", "no.such.Service")...)
	if want := exitRPC + int(codes.NotFound); r.code != want {
		t.Errorf("health --service no.such.Service = %v, want exit %d", r, want)
	}
	// The certificate names "broker", not the address: without
	// --tls-server-name the handshake fails.
	r = runClient(t, t.Context(), "--addr", b.addr, "--tls-ca", b.caFile, "health")
	if want := exitRPC + int(codes.Unavailable); r.code != want {
		t.Errorf("health without --tls-server-name = %v, want exit %d", r, want)
	}
	// Plaintext to a TLS broker.
	r = runClient(t, t.Context(), "--addr", b.addr, "health")
	if want := exitRPC + int(codes.Unavailable); r.code != want {
		t.Errorf("health in plaintext to a TLS broker = %v, want exit %d", r, want)
	}
}

func TestWaitIdle(t *testing.T) {
	t.Parallel()
	b := startOpsBroker(t)
	ctx := t.Context()

	if r := runClient(t, ctx, b.args(opsAdminToken, "wait-idle")...); r.code != 0 || !strings.HasPrefix(r.stdout, "idle: no lease active") {
		t.Fatalf("wait-idle with no lease = %v, want exit 0 and idle", r)
	}

	release := b.hold(t)
	// The timeouts leave room for a TLS handshake under the race detector.
	r := runClient(t, ctx, b.args(opsAdminToken, "wait-idle", "--timeout", "2s", "--interval", "20ms")...)
	if r.code != exitNotReady {
		t.Errorf("wait-idle --timeout 2s with a lease held = %v, want exit %d", r, exitNotReady)
	}
	if !strings.HasPrefix(r.stdout, "1 lease active, waiting") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("wait-idle with a lease held stdout = %q, want one progress line \"1 lease active, waiting ...\"", r.stdout)
	}
	if !strings.Contains(r.stderr, "not draining") || !strings.HasSuffix(r.stderr, "client: wait-idle: 1 lease still active after 2s\n") {
		t.Errorf("wait-idle with a lease held and no drain stderr = %q, want the not-draining notice and the timeout", r.stderr)
	}

	r = runClient(t, ctx, b.args(opsAdminToken, "--json", "wait-idle", "--timeout", "1s", "--interval", "20ms")...)
	var doc idleReport
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != exitNotReady || doc.Idle || doc.Active != 1 {
		t.Errorf("--json wait-idle with a lease held = %v (parsed %+v, %v), want exit %d, idle false, active 1", r, doc, err, exitNotReady)
	}

	// Drained, the broker goes idle when the lease is released.
	if r := runClient(t, ctx, b.args(opsAdminToken, "drain")...); r.code != 0 || !strings.Contains(r.stdout, "1 lease still active") {
		t.Fatalf("drain with a lease held = %v, want exit 0 and 1 lease still active", r)
	}
	// Release the lease once wait-idle has reported it.
	var stdout, stderr strings.Builder
	onProgress := writerFunc(func(p []byte) (int, error) {
		if strings.Contains(string(p), "1 lease active, waiting") {
			release()
		}
		return stdout.Write(p)
	})
	code := run(ctx, b.args(opsAdminToken, "wait-idle", "--timeout", "10s", "--interval", "20ms"), onProgress, &stderr)
	r = result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("wait-idle while the lease is released = %v, want exit 0 and nothing on stderr", r)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "1 lease active, waiting (") || !strings.HasPrefix(lines[1], "idle: no lease active (waited ") {
		t.Errorf("wait-idle while the lease is released stdout = %q, want a progress line then idle", r.stdout)
	}
}

// writerFunc is an io.Writer made of a function.
type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestWaitIdleCancelled(t *testing.T) {
	t.Parallel()
	b := startOpsBroker(t)
	b.hold(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	// The caller's context ending (as Ctrl-C does) is a failed call, not
	// wait-idle's own timeout.
	r := runClient(t, ctx, b.args(opsAdminToken, "wait-idle", "--timeout", "10s", "--interval", "20ms")...)
	if r.code == 0 || r.code == exitNotReady {
		t.Errorf("wait-idle whose context ended = %v, want an RPC exit code", r)
	}
}

func TestOpsUnreachableBroker(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	for _, cmd := range []string{"drain", "undrain", "wait-idle", "health"} {
		r := runClient(t, t.Context(), cmd, "--addr", addr)
		if want := exitRPC + int(codes.Unavailable); r.code != want || !strings.HasPrefix(r.stderr, "client: "+cmd) {
			t.Errorf("%s against a closed port = %v, want exit %d", cmd, r, want)
		}
	}
}
