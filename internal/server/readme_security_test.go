package server

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/browserbroker/broker/internal/lease"
)

// The README's grpcurl recipe with a bearer token works with a valid token
// and is UNAUTHENTICATED without one.
func TestReadmeSecurityTokenRecipe(t *testing.T) {
	bin := needGrpcurl(t)
	f, err := os.Open(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recipes []string
	in := false
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## Security"
		case in && strings.HasPrefix(line, "grpcurl -plaintext -H"):
			recipes = append(recipes, line)
		}
	}
	if len(recipes) == 0 {
		t.Fatal("no `grpcurl -plaintext -H` recipe in the README's Security section")
	}
	pool := needBrowser(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := newBrokerOn(t, pool, lease.Config{Capacity: 1}, lis, withAuth(0))
	for _, recipe := range recipes {
		for token, want := range map[string]string{opsToken: `"capacity": 1`, "wrong-token-0123456789": "Unauthenticated"} {
			sh := exec.Command("sh", "-c", strings.ReplaceAll(recipe, "localhost:7070", b.lis.Addr().String()))
			sh.Env = append(os.Environ(), "BROKER_TOKEN="+token, "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
			out, err := sh.CombinedOutput()
			if (err == nil) != (token == opsToken) || !strings.Contains(string(out), want) {
				t.Errorf("README recipe %s with token %.5s…: %v\n%s\nwant %q", recipe, token, err, out, want)
			}
		}
	}
}
