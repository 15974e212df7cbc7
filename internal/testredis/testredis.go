// Package testredis runs a real redis-server on a loopback port for a
// test, and stops it when the test ends. Tests of the fleet use it, and the
// benchmark's fleet section; it is no part of the broker.
package testredis

import (
	"bufio"
	"errors"
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
// without persistence on a free loopback port, for one test, and stops it
// when the test ends. Without the binary the test is skipped, or fails
// when BROKER_REQUIRE_BROWSER says every dependency must be there (make
// test sets it).
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("BROKER_REQUIRE_BROWSER") != "" || os.Getenv("BROKER_REQUIRE_REDIS") != "" {
			t.Fatal("redis-server not installed; run make setup")
		}
		t.Skip("redis-server not installed; run `make test`")
	}
	s, err := Run(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s.t = t
	t.Cleanup(s.Stop)
	return s
}

// Run runs redis-server as Start does, its files in dir, outside a test
// (the benchmark); the caller calls Stop.
func Run(dir string) (*Server, error) {
	s := &Server{dir: dir}
	// The port is free when picked, but another process (any outgoing
	// connection takes an ephemeral port) may take it before redis-server
	// binds it: then another one is picked.
	for attempt := 1; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		s.port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		log, err := s.start()
		if err == nil {
			return s, nil
		}
		if attempt == 5 || !strings.Contains(log, "Address already in use") {
			return nil, fmt.Errorf("%w:\n%s", err, log)
		}
	}
}

// Addr is host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// URL is the redis:// URL of database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// start runs redis-server on s.port and waits until it is ready; on
// failure, it returns why and what the server logged.
func (s *Server) start() (string, error) {
	cmd := exec.Command("redis-server", "--port", fmt.Sprint(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start redis-server: %w", err)
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
		return "", nil
	case <-done:
		s.cmd = nil
		return logged(), errors.New("redis-server exited at start")
	case <-time.After(20 * time.Second):
		s.Stop()
		return logged(), errors.New("redis-server not ready after 20s")
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
	if log, err := s.start(); err != nil {
		s.t.Fatalf("%v:\n%s", err, log)
	}
}
