package server

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseTokens(t *testing.T) {
	const (
		tokA = "alice-secret-token-0001"
		tokB = "bob-secret-token-000002"
	)
	type want struct {
		token     string
		principal Principal
	}
	tests := []struct {
		name    string
		file    string
		want    []want
		limits  map[string]int
		wantErr string // "" for success
	}{
		{name: "one per line, comments and blanks",
			file: "# who\n\n" + tokA + " alice client\n\t" + tokB + "\tbob\tadmin   \n  # indented comment\n",
			want: []want{{tokA, Principal{"alice", RoleClient}}, {tokB, Principal{"bob", RoleAdmin}}}},
		{name: "max_leases",
			file:   tokA + " alice client max_leases=3\n" + tokB + " alice admin max_leases=3\n",
			want:   []want{{tokA, Principal{"alice", RoleClient}}, {tokB, Principal{"alice", RoleAdmin}}},
			limits: map[string]int{"alice": 3, "bob": 0}},
		{name: "two tokens, one principal, one max_leases",
			file:   tokA + " alice client max_leases=2\n" + tokB + " alice client\n",
			limits: map[string]int{"alice": 2}},
		{name: "empty", file: "# nothing\n\n", wantErr: "no tokens"},
		{name: "too few fields", file: "# x\n" + tokA + " alice\n", wantErr: "line 2: want TOKEN PRINCIPAL ROLE"},
		{name: "too many fields", file: tokA + " alice client max_leases=1 extra\n", wantErr: "line 1: want TOKEN PRINCIPAL ROLE"},
		{name: "weak token", file: tokA + " alice client\nshort-token bob client\n", wantErr: "line 2: token shorter than 16"},
		{name: "token not ASCII", file: "ééééééééééééééééé alice client\n", wantErr: "line 1: token holds a character that is not printable ASCII"},
		{name: "unknown role", file: tokA + " alice root\n", wantErr: "line 1: the third field must be the role, client or admin"},
		{name: "duplicate token", file: tokA + " alice client\n\n" + tokA + " bob admin\n", wantErr: "line 3: the same token as on line 1"},
		{name: "bad option", file: tokA + " alice client max=3\n", wantErr: "line 1: the fourth field, if any, must be max_leases=N"},
		{name: "zero max_leases", file: tokA + " alice client max_leases=0\n", wantErr: "line 1: the fourth field"},
		{name: "conflicting max_leases", file: tokA + " alice client max_leases=1\n" + tokB + " alice client max_leases=2\n",
			wantErr: `line 2: principal "alice" has max_leases=2 here and 1 on an earlier line`},
		{name: "long principal", file: tokA + " " + strings.Repeat("p", 129) + " client\n", wantErr: "line 1: principal name must be 1-128 bytes"},
		{name: "line too long", file: strings.Repeat("x", 70<<10) + " alice client\n", wantErr: "over 64 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTokens(strings.NewReader(tt.file))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseTokens(%q) = %v, want an error containing %q", tt.file, err, tt.wantErr)
				}
				for _, tok := range []string{tokA, tokB} {
					if strings.Contains(err.Error(), tok) {
						t.Fatalf("ParseTokens error %q quotes a token", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseTokens(%q) = %v, want success", tt.file, err)
			}
			for _, w := range tt.want {
				if p, ok := got.lookup(w.token); !ok || p != w.principal {
					t.Errorf("lookup(%q) = %v, %v; want %v", w.token, p, ok, w.principal)
				}
			}
			for name, n := range tt.limits {
				if got.MaxLeases(name) != n {
					t.Errorf("MaxLeases(%q) = %d, want %d", name, got.MaxLeases(name), n)
				}
			}
			for _, bad := range []string{"", "nope-nope-nope-nope", tokA[:len(tokA)-1], tokA + "x", strings.ToUpper(tokA)} {
				if p, ok := got.lookup(bad); ok {
					t.Errorf("lookup(%q) = %v, want no principal", bad, p)
				}
			}
		})
	}
}

func TestLoadTokensNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("x y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTokens(path); err == nil || !strings.Contains(err.Error(), path+": line 1") {
		t.Fatalf("LoadTokens(bad file) = %v, want an error naming %s and line 1", err, path)
	}
	if _, err := LoadTokens(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("LoadTokens(missing file) = nil error")
	}
}

func TestCertPrincipal(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://example.org/worker")
	tests := []struct {
		name string
		cert x509.Certificate
		want string
	}{
		{"common name first", x509.Certificate{Subject: pkix.Name{CommonName: "worker-1"}, DNSNames: []string{"w.example"}, URIs: []*url.URL{spiffe}}, "worker-1"},
		{"then the URI SAN", x509.Certificate{DNSNames: []string{"w.example"}, URIs: []*url.URL{spiffe}}, "spiffe://example.org/worker"},
		{"then the DNS SAN", x509.Certificate{DNSNames: []string{"w.example", "x.example"}}, "w.example"},
		{"none", x509.Certificate{Subject: pkix.Name{Organization: []string{"org"}}}, ""},
	}
	for _, tt := range tests {
		if got := CertPrincipal(&tt.cert); got != tt.want {
			t.Errorf("%s: CertPrincipal = %q, want %q", tt.name, got, tt.want)
		}
	}
}
