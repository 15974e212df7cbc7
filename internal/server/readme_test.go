package server

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/lease"
)

// readmeRecipes returns the command lines of the README's "grpcurl
// recipes" section, in order.
func readmeRecipes(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	in, inBlock := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## grpcurl recipes"
		case in && strings.HasPrefix(line, "```"):
			inBlock = !inBlock
		case in && inBlock && line != "" && !strings.HasPrefix(line, "#"):
			out = append(out, line)
		}
	}
	return out
}

// Every grpcurl recipe in the README runs against a real broker and does
// what the README says.
func TestReadmeGrpcurlRecipes(t *testing.T) {
	bin := needGrpcurl(t)
	pool := needBrowser(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := newBrokerOn(t, pool, lease.Config{Capacity: 2}, lis)
	held := b.acquire(t, &brokerv1.Acquire{Ttl: durationpb.New(10 * time.Minute), Labels: map[string]string{"who": "me"}})

	recipes := readmeRecipes(t)
	if len(recipes) < 20 {
		t.Fatalf("found %d recipes in the README, want every page and admin RPC", len(recipes))
	}
	// What each recipe must print, by the RPC or verb it ends with.
	want := map[string]string{
		" list":                                  "browserbroker.v1.PageService",
		"describe browserbroker.v1.LeaseService": "rpc Lease",
		"Health/Check":                           "SERVING",
		"LeaseService/Lease":                     "RECLAIM_REASON_RELEASED",
		"PageService/Navigate":                   `"status": 200`,
		"PageService/WaitForSelector":            `"found": true`,
		"PageService/Text":                       "Hello",
		"PageService/Content":                    `\u003ch1\u003eHello`, // grpcurl escapes < and >
		"PageService/Screenshot":                 `"data":`,
		"PageService/GetCookies":                 `"session"`,
		"AdminService/GetStats":                  `"capacity": 2`,
		"AdminService/ListLeases":                held.id,
		"AdminService/GetLease":                  held.id,
		"AdminService/RevokeLease":               "RECLAIM_REASON_REVOKED",
		"AdminService/Drain":                     "{",
		"AdminService/Undrain":                   "{",
	}
	seen := map[string]bool{}
	for _, recipe := range recipes {
		cmd := strings.ReplaceAll(recipe, "localhost:7070", b.lis.Addr().String())
		cmd = strings.ReplaceAll(cmd, "https://example.com", site.URL)
		cmd = strings.ReplaceAll(cmd, "sleep 5", "sleep 1")
		sh := exec.Command("sh", "-c", cmd)
		sh.Env = append(os.Environ(), "LEASE="+held.id, "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
		out, err := sh.CombinedOutput()
		if err != nil {
			t.Errorf("README recipe failed: %s\n%v\n%s", recipe, err, out)
			continue
		}
		for suffix, w := range want {
			if strings.HasSuffix(recipe, suffix) {
				seen[suffix] = true
				if !strings.Contains(string(out), w) {
					t.Errorf("README recipe %s printed:\n%s\nwant it to contain %q", recipe, out, w)
				}
			}
		}
		if strings.Contains(recipe, `"service": "browserbroker.v1.LeaseService"`) && !strings.Contains(string(out), "NOT_SERVING") {
			t.Errorf("health of the lease service after Drain printed %s, want NOT_SERVING", out)
		}
		if strings.Contains(recipe, `"expression": "document.title"`) && !strings.Contains(string(out), `Test Site`) {
			t.Errorf("Evaluate recipe printed %s, want the title", out)
		}
		if strings.Contains(recipe, `"arg_json"`) && !strings.Contains(string(out), `42`) {
			t.Errorf("Evaluate-with-argument recipe printed %s, want 42", out)
		}
	}
	for suffix := range want {
		if !seen[suffix] {
			t.Errorf("no README recipe ends with %q", suffix)
		}
	}
	// Every PageService and AdminService RPC has a recipe.
	for _, sd := range []string{"PageService", "AdminService"} {
		desc := brokerv1.File_browserbroker_v1_broker_proto.Services().ByName(protoreflect.Name(sd))
		for i := 0; i < desc.Methods().Len(); i++ {
			m := string(desc.Methods().Get(i).Name())
			found := false
			for _, r := range recipes {
				if strings.HasSuffix(r, sd+"/"+m) {
					found = true
				}
			}
			if !found {
				t.Errorf("README has no grpcurl recipe for %s/%s", sd, m)
			}
		}
	}
	if rev := held.revoked(); rev.Reason != brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED {
		t.Fatalf("the held lease ended with %v, want REVOKED by the recipe", rev)
	}
}
