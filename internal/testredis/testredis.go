// Package testredis runs a real redis-server on a loopback port for a
// test, and stops it when the test ends. Tests of the fleet use it; it is
// no part of the broker.
package testredis

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is a redis-server process of a test.
type Server struct {
	t    testing.TB
	port int
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs redis-server (Debian's package, which `make setup` installs)
// without persistence on a free loopback port. Without the binary the
// test is skipped, or fails when BROKER_REQUIRE_BROWSER says every
// dependency must be there (make test sets it).
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("BROKER_REQUIRE_BROWSER") != "" || os.Getenv("BROKER_REQUIRE_REDIS") != "" {
			t.Fatal("redis-server not installed; run make setup")
		}
		t.Skip("redis-server not installed; run `make test`")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{t: t, port: port, dir: t.TempDir()}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// Addr is host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// URL is the redis:// URL of database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

func (s *Server) start() {
	s.t.Helper()
	cmd := exec.Command("redis-server", "--port", fmt.Sprint(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no")
	out, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	ready := make(chan struct{})
	var (
		mu  sync.Mutex
		log strings.Builder
	)
	logged := func() string { mu.Lock(); defer mu.Unlock(); return log.String() }
	done := s.done
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if signalled {
				continue
			}
			mu.Lock()
			log.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), "Ready to accept connections") {
				close(ready)
				signalled = true
			}
		}
		cmd.Wait()
		close(done)
	}()
	select {
	case <-ready:
	case <-done:
		s.t.Fatalf("redis-server exited at start:\n%s", logged())
	case <-time.After(20 * time.Second):
		s.t.Fatalf("redis-server not ready after 20s:\n%s", logged())
	}
}

// Stop kills the server (SIGKILL: nothing is saved) and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same port, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}
