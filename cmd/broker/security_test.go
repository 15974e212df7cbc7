package main

import (
	"context"
	"crypto/tls"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/testcert"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"localhost:7070": true, "127.0.0.1:0": true, "[::1]:7070": true, "127.3.4.5:1": true,
		":7070": false, "0.0.0.0:7070": false, "[::]:7070": false, "192.0.2.1:7070": false,
		"no-port": false, "name.invalid:7070": false,
	} {
		if got := isLoopback(context.Background(), addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// runBrokerToExit runs the broker binary and returns its output once it
// exited, failing the test if it exits 0 or keeps running.
func runBrokerToExit(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all := append([]string{"--driver-dir", driverDir(), "--state-dir", t.TempDir()}, args...)
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "broker"), all...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("broker %q still running after 60s, want a refusal:\n%s", args, out)
	}
	if err == nil {
		t.Fatalf("broker %q exited 0, want a refusal:\n%s", args, out)
	}
	return string(out)
}

// Without authentication the broker serves loopback only, unless told
// --insecure; bearer tokens do not cross a network in plaintext.
func TestListeningRules(t *testing.T) {
	tokens := writeTokens(t, "tok-0123456789abcdef alice client\n")
	for _, args := range [][]string{
		{"--addr", "0.0.0.0:0"},
		{"--addr", ":0"},
	} {
		out := runBrokerToExit(t, args...)
		if !strings.Contains(out, "without authentication") || !strings.Contains(out, "--insecure") || !strings.Contains(out, "--auth-tokens") {
			t.Errorf("broker %q: %s; want a refusal naming --auth-tokens and --insecure", args, out)
		}
	}
	out := runBrokerToExit(t, "--addr", "0.0.0.0:0", "--auth-tokens", tokens)
	if !strings.Contains(out, "plaintext") || !strings.Contains(out, "--tls-cert") || !strings.Contains(out, "--insecure") {
		t.Errorf("broker with tokens on 0.0.0.0 without TLS: %s; want a refusal naming --tls-cert and --insecure", out)
	}
	for _, bad := range [][]string{
		{"--max-leases-per-principal", "2"},
		{"--acquires-per-second", "1"},
		{"--client-ca", tokens},
		{"--tls-cert", tokens},
		{"--admin-principals", "ops"},
	} {
		if out := runBrokerToExit(t, bad...); !strings.Contains(out, "--") {
			t.Errorf("broker %q: %s; want a refusal naming the flags", bad, out)
		}
	}

	p := startBroker(t, "--addr", "0.0.0.0:0", "--insecure")
	if !strings.Contains(p.stderr.String(), "INSECURE") {
		t.Errorf("broker --insecure on 0.0.0.0: no warning in\n%s", p.stderr.String())
	}
	p = startBroker(t)
	if !strings.Contains(p.stderr.String(), "serving loopback only") {
		t.Errorf("broker without authentication: no note that it serves loopback only in\n%s", p.stderr.String())
	}
}

func writeTokens(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	writeFile(t, path, content)
	return path
}

// writeFile replaces a file at once, as an operator's tools should.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

type tokenCreds string

func (c tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(c)}, nil
}
func (tokenCreds) RequireTransportSecurity() bool { return false }

func dialWith(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// tryAcquire acquires a lease and releases it; the error is the acquire's.
func tryAcquire(t *testing.T, conn *grpc.ClientConn) error {
	t.Helper()
	ctx := callCtx(t, 30*time.Second)
	s, err := brokerv1.NewLeaseServiceClient(conn).Lease(ctx)
	if err != nil {
		return err
	}
	s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{}}})
	for {
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		if resp.GetGranted() != nil {
			break
		}
	}
	if err := s.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}}); err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err != nil {
			return nil
		}
	}
}

// waitLog waits until the broker's log has n lines containing what.
func (p *brokerProc) waitLog(t *testing.T, what string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(p.stderr.String(), what) < n {
		if time.Now().After(deadline) {
			t.Fatalf("broker log has no %d× %q after 10s:\n%s", n, what, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The tokens file is read at start (a bad one stops the start) and again
// on SIGHUP: an added token works, a removed one stops working, and a bad
// file keeps the previous tokens. No token ever reaches the log.
func TestTokensReloadOnSIGHUP(t *testing.T) {
	const (
		alice = "alice-token-0123456789"
		bob   = "bob-token-0123456789ab"
		ops   = "ops-token-0123456789ab"
	)
	bad := writeTokens(t, alice+" alice client\n"+"too-short bob client\n")
	if out := runBrokerToExit(t, "--auth-tokens", bad); !strings.Contains(out, "line 2") || strings.Contains(out, alice) {
		t.Fatalf("broker with a bad tokens file: %s; want a refusal naming line 2 and no token", out)
	}

	tokens := writeTokens(t, alice+" alice client\n"+ops+" ops admin\n")
	p := startBroker(t, "--auth-tokens", tokens, "--max-leases", "2")
	as := func(token string) *grpc.ClientConn {
		return dialWith(t, p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(tokenCreds(token)))
	}
	aliceConn, bobConn := as(alice), as(bob)
	if err := tryAcquire(t, aliceConn); err != nil {
		t.Fatalf("acquire with alice's token before the reload: %v", err)
	}
	if err := tryAcquire(t, bobConn); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("acquire with bob's token before the reload = %v, want UNAUTHENTICATED", err)
	}
	held := acquireLease(t, aliceConn, time.Minute)

	writeFile(t, tokens, bob+" bob client\n"+ops+" ops admin\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "tokens replaced", 1)
	if err := tryAcquire(t, bobConn); err != nil {
		t.Fatalf("acquire with bob's token after the reload: %v", err)
	}
	if err := tryAcquire(t, aliceConn); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("acquire with alice's removed token after the reload = %v, want UNAUTHENTICATED", err)
	}
	_, err := brokerv1.NewPageServiceClient(aliceConn).Content(callCtx(t, 10*time.Second), &brokerv1.ContentRequest{LeaseId: held.id})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("page command on alice's held lease with her removed token = %v, want UNAUTHENTICATED", err)
	}
	held.stillHeld(t) // her stream lives on, until its TTL or its end

	writeFile(t, tokens, "# broken\n"+bob+" bob\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "keeping the previous tokens", 1)
	if !strings.Contains(p.stderr.String(), "line 2") {
		t.Errorf("reload error does not name line 2:\n%s", p.stderr.String())
	}
	if err := tryAcquire(t, bobConn); err != nil {
		t.Fatalf("acquire with bob's token after a failed reload: %v", err)
	}
	for _, tok := range []string{alice, bob, ops} {
		if strings.Contains(p.stderr.String(), tok) {
			t.Fatalf("the broker logged a token:\n%s", p.stderr.String())
		}
	}
}

// pki is a test certificate authority.
// tlsConn dials the broker with TLS, trusting ca, presenting a client
// certificate of ca for cn ("": none), and sending token ("": none).
func tlsConn(t *testing.T, ca *testcert.CA, addr, cn, token string) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.Pool}
	if cn != "" {
		cfg.Certificates = []tls.Certificate{ca.Client(t, cn).TLS}
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenCreds(token)))
	}
	return dialWith(t, addr, opts...)
}

func listLeases(t *testing.T, conn *grpc.ClientConn) (map[string]string, error) {
	t.Helper()
	resp, err := brokerv1.NewAdminServiceClient(conn).ListLeases(callCtx(t, 10*time.Second), &brokerv1.ListLeasesRequest{})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range resp.Leases {
		out[l.LeaseId] = l.Principal
	}
	return out, nil
}

// Mutual TLS: only clients with a certificate of the CA get in, the
// certificate's CN is the principal (admin when listed), a bearer token
// wins over it, and the certificate is reloaded on SIGHUP.
func TestMutualTLS(t *testing.T) {
	ca, other := testcert.NewCA(t, "test CA"), testcert.NewCA(t, "another CA")
	srv := ca.Server(t, "127.0.0.1")
	tokens := writeTokens(t, "tok-user-0123456789abc tok-user client\n")
	p := startBroker(t, "--max-leases", "3", "--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--client-ca", ca.File,
		"--admin-principals", "ops,backup-ops", "--auth-tokens", tokens)

	plain := dialWith(t, p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err := tryAcquire(t, plain); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext acquire on a TLS broker = %v, want UNAVAILABLE", err)
	}
	for _, c := range []struct {
		name string
		conn *grpc.ClientConn
	}{
		{"no client certificate", tlsConn(t, ca, p.addr, "", "")},
		{"no client certificate, a valid token", tlsConn(t, ca, p.addr, "", "tok-user-0123456789abc")},
		{"a certificate of another CA", func() *grpc.ClientConn {
			// Trusting the right server CA, presenting another CA's certificate.
			cert := other.Client(t, "intruder").TLS
			return dialWith(t, p.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{cert}})))
		}()},
	} {
		if err := tryAcquire(t, c.conn); err == nil || status.Code(err) == codes.OK {
			t.Fatalf("acquire with %s = %v, want a failed handshake", c.name, err)
		}
	}

	worker := tlsConn(t, ca, p.addr, "worker-1", "")
	opsConn := tlsConn(t, ca, p.addr, "ops", "")
	held := acquireLease(t, worker, time.Minute)
	if _, err := listLeases(t, worker); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("ListLeases as certificate principal worker-1 = %v, want PERMISSION_DENIED", err)
	}
	// A token wins over the certificate.
	withToken := tlsConn(t, ca, p.addr, "worker-1", "tok-user-0123456789abc")
	viaToken := acquireLease(t, withToken, time.Minute)
	got, err := listLeases(t, opsConn)
	if err != nil || got[held.id] != "worker-1" || got[viaToken.id] != "tok-user" || len(got) != 2 {
		t.Fatalf("ListLeases as ops = %v, %v; want %s: worker-1 and %s: tok-user", got, err, held.id, viaToken.id)
	}
	// The command-line client, with its TLS flags.
	backup := ca.Client(t, "backup-ops")
	out, err := exec.Command(filepath.Join(binDir, "client"), "--addr", p.addr, "--tls-ca", ca.File,
		"--tls-cert", backup.CertFile, "--tls-key", backup.KeyFile, "--json", "leases").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"principal": "worker-1"`) {
		t.Fatalf("client --tls-ca --tls-cert leases: %v\n%s\nwant worker-1's lease", err, out)
	}
	held.release(t)
	viaToken.release(t)

	// SIGHUP reloads the server certificate: new connections see the new one.
	serial := func() *big.Int {
		cert := ca.Client(t, "probe").TLS
		c, err := tls.Dial("tcp", p.addr, &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatalf("TLS dial: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	before := serial()
	ca.Server(t, "127.0.0.1") // overwrites the server's files
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "TLS certificate replaced", 1)
	if after := serial(); after.Cmp(before) == 0 {
		t.Fatalf("server certificate serial %v after SIGHUP, want the new certificate's", after)
	}
}
