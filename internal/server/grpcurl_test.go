package server

import (
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/browserbroker/broker/internal/lease"
)

// grpcurl, the operators' tool, lists and describes every service through
// reflection.
func TestGrpcurlListAndDescribe(t *testing.T) {
	bin := needGrpcurl(t)
	pool := needBrowser(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := newBrokerOn(t, pool, lease.Config{Capacity: 1}, lis)
	addr := b.lis.Addr().String()

	// grpcurl [flags] address verb-or-method [symbol]
	run := func(flags []string, verb ...string) string {
		t.Helper()
		args := append(append(append([]string{"-plaintext"}, flags...), addr), verb...)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}

	list := run(nil, "list")
	for _, svc := range []string{"browserbroker.v1.LeaseService", "browserbroker.v1.PageService",
		"browserbroker.v1.AdminService", "grpc.health.v1.Health"} {
		if !strings.Contains(list, svc) {
			t.Errorf("grpcurl list = %q, missing %s", list, svc)
		}
	}
	desc := run(nil, "describe")
	for _, want := range []string{"rpc Lease ( stream .browserbroker.v1.LeaseRequest ) returns ( stream .browserbroker.v1.LeaseResponse )",
		"rpc Navigate", "rpc Screenshot", "rpc RevokeLease", "rpc GetStats"} {
		if !strings.Contains(desc, want) {
			t.Errorf("grpcurl describe lacks %q", want)
		}
	}
	if msg := run(nil, "describe", "browserbroker.v1.Acquire"); !strings.Contains(msg, "google.protobuf.Duration wait_timeout") {
		t.Errorf("describe Acquire = %s, want its fields", msg)
	}
	stats := run([]string{"-d", "{}"}, "browserbroker.v1.AdminService/GetStats")
	if !strings.Contains(stats, `"capacity": 1`) || !strings.Contains(stats, `"invariantOk": true`) {
		t.Errorf("GetStats through grpcurl = %s", stats)
	}
	health := run(nil, "grpc.health.v1.Health/Check")
	if !strings.Contains(health, "SERVING") {
		t.Errorf("health check = %s, want SERVING", health)
	}
}
