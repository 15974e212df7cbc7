package main

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/playwright-community/playwright-go"

	"github.com/browserbroker/broker/internal/browser"
)

// chromiumArgs are the flags the broker's pool launches Chromium with; the
// other paths use the same, so that every path drives the same browser.
var chromiumArgs = browser.ChromiumArgs()

// logTail keeps the last lines a child process printed, for errors.
type logTail struct {
	mu    sync.Mutex
	lines []string
}

func (t *logTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > 30 {
		t.lines = t.lines[len(t.lines)-30:]
	}
}

func (t *logTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// brokerProc is a broker run as a subprocess with JSON logs on loopback.
type brokerProc struct {
	cmd      *exec.Cmd
	addr     string
	tail     logTail
	exited   chan struct{}
	stopOnce sync.Once
}

// startBroker runs the broker on a free loopback port, with env added to
// its environment, and waits until its "broker listening" log line names
// the address.
func startBroker(ctx context.Context, path, driverDir, chromium string, env []string, args ...string) (*brokerProc, error) {
	all := append([]string{"--addr", "127.0.0.1:0", "--log-format", "json",
		"--driver-dir", driverDir, "--chromium", chromium, "--state-dir", ""}, args...)
	cmd := exec.Command(path, all...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start broker %s: %w", path, err)
	}
	b := &brokerProc{cmd: cmd, exited: make(chan struct{})}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			b.tail.add(line)
			var entry struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "broker listening" {
				select {
				case addrc <- entry.Addr:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(b.exited)
	}()
	select {
	case b.addr = <-addrc:
		return b, nil
	case <-b.exited:
		return nil, fmt.Errorf("broker exited before listening:\n%s", b.tail.String())
	case <-time.After(60 * time.Second):
		b.kill()
		return nil, fmt.Errorf("broker not listening after 60s:\n%s", b.tail.String())
	case <-ctx.Done():
		b.kill()
		return nil, ctx.Err()
	}
}

func (b *brokerProc) pid() int { return b.cmd.Process.Pid }

// toggleProfile starts, then (the next call) stops, the CPU profile of a
// broker built with -tags benchprofile and run with BROKER_CPUPROFILE
// (cmd/broker/profile_bench.go): SIGUSR1 toggles it.
func (b *brokerProc) toggleProfile() error {
	if err := b.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return fmt.Errorf("toggle the broker's CPU profile: %w", err)
	}
	time.Sleep(50 * time.Millisecond) // let the broker act on it before the work starts
	return nil
}

func (b *brokerProc) kill() {
	_ = b.cmd.Process.Kill()
	<-b.exited
}

// stop sends SIGTERM and waits for the broker to exit, killing it after
// 30 s. Later calls do nothing.
func (b *brokerProc) stop() {
	b.stopOnce.Do(func() {
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.exited:
		case <-time.After(30 * time.Second):
			b.kill()
		}
	})
}

// buildBroker builds the broker into dir; the working directory must be
// inside the module. profile adds the benchprofile tag (a CPU profile
// toggled by SIGUSR1, see toggleProfile).
func buildBroker(ctx context.Context, dir string, profile bool, stderr io.Writer) (string, error) {
	args := []string{"build", "-o", dir}
	if profile {
		args = append(args, "-tags", "benchprofile")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "github.com/browserbroker/broker/cmd/broker")...)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build the broker: %w", err)
	}
	return filepath.Join(dir, "broker"), nil
}

//go:embed launch_server.js
var launchServerJS []byte

// browserServer is Playwright's browser server (chromium.launchServer from
// the driver's playwright-core), run by node.
type browserServer struct {
	cmd        *exec.Cmd
	stdin      io.WriteCloser
	wsEndpoint string
	tail       logTail
	exited     chan struct{}
	stopOnce   sync.Once
}

// startBrowserServer writes the launch script to dir and runs it with the
// driver's node launcher (which kills node when we die).
func startBrowserServer(ctx context.Context, driverDir, chromium, dir string) (*browserServer, error) {
	script := filepath.Join(dir, "launch_server.js")
	if err := os.WriteFile(script, launchServerJS, 0o644); err != nil {
		return nil, err
	}
	argsJSON, err := json.Marshal(chromiumArgs)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(driverDir, "node"), script,
		filepath.Join(driverDir, "package"), chromium, string(argsJSON))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s := &browserServer{cmd: cmd, stdin: stdin, exited: make(chan struct{})}
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
			s.tail.add(l)
		}
		return len(p), nil
	})
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start browser server: %w", err)
	}
	wsc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var msg struct {
				WSEndpoint string `json:"wsEndpoint"`
			}
			if json.Unmarshal(sc.Bytes(), &msg) == nil && msg.WSEndpoint != "" {
				select {
				case wsc <- msg.WSEndpoint:
				default:
				}
				continue
			}
			s.tail.add(sc.Text())
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	select {
	case s.wsEndpoint = <-wsc:
		return s, nil
	case <-s.exited:
		return nil, fmt.Errorf("browser server exited before listening:\n%s", s.tail.String())
	case <-time.After(60 * time.Second):
		s.kill()
		return nil, fmt.Errorf("browser server not listening after 60s:\n%s", s.tail.String())
	case <-ctx.Done():
		s.kill()
		return nil, ctx.Err()
	}
}

func (s *browserServer) kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// stop closes the script's stdin, on which it closes the server and its
// Chromium and exits; it is killed after 15 s. Later calls do nothing.
func (s *browserServer) stop() {
	s.stopOnce.Do(func() {
		s.stdin.Close()
		select {
		case <-s.exited:
		case <-time.After(15 * time.Second):
			s.kill()
		}
	})
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// inProcess is playwright-go's own driver with one Chromium, as a worker
// without the broker runs it.
type inProcess struct {
	pw       *playwright.Playwright
	browser  playwright.Browser
	stopOnce sync.Once
}

func startInProcess(driverDir, chromium string) (*inProcess, error) {
	type result struct {
		pw  *playwright.Playwright
		err error
	}
	ch := make(chan result, 1)
	go func() {
		pw, err := playwright.Run(&playwright.RunOptions{DriverDirectory: driverDir, SkipInstallBrowsers: true, Verbose: false})
		ch <- result{pw, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-time.After(60 * time.Second):
		return nil, errors.New("playwright driver did not start within 60s")
	}
	if r.err != nil {
		return nil, fmt.Errorf("start playwright driver in %s: %w", driverDir, r.err)
	}
	// Retried as the broker does (internal/browser launchLocal): a
	// Chromium that exits while it starts is no fault of the alternative.
	var b playwright.Browser
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		b, err = r.pw.Chromium.Launch(playwright.BrowserTypeLaunchOptions{
			ExecutablePath: playwright.String(chromium),
			Headless:       playwright.Bool(true),
			Args:           chromiumArgs,
		})
		if err == nil {
			break
		}
		time.Sleep(time.Duration(attempt) * 250 * time.Millisecond)
	}
	if err != nil {
		_ = r.pw.Stop()
		return nil, fmt.Errorf("launch chromium %s: %w", chromium, err)
	}
	return &inProcess{pw: r.pw, browser: b}, nil
}

// stop closes the browser and the driver. Later calls do nothing.
func (p *inProcess) stop() {
	p.stopOnce.Do(func() {
		_ = p.browser.Close()
		_ = p.pw.Stop()
	})
}

// newContextOptions are the context options the broker uses by default.
func newContextOptions() playwright.BrowserNewContextOptions {
	return playwright.BrowserNewContextOptions{
		Viewport:        &playwright.Size{Width: 1280, Height: 720},
		AcceptDownloads: playwright.Bool(false),
	}
}
