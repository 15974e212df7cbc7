package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// brokerProc is the broker under soak, run as a subprocess with JSON logs.
type brokerProc struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}

	logFile io.Writer // only the log goroutine writes it

	mu          sync.Mutex
	tail        []string // the last log lines
	errorLines  int      // log entries at level error or above
	invariantLn int      // "LEASE INVARIANT BROKEN" entries
}

const logTail = 40

// startBroker runs the broker on a free loopback port and waits until it
// listens. Its whole log goes to logFile too, when not nil.
func startBroker(ctx context.Context, path string, logFile io.Writer, args []string) (*brokerProc, error) {
	all := append([]string{"--addr", "127.0.0.1:0", "--log-format", "json"}, args...)
	cmd := exec.Command(path, all...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start broker %s: %w", path, err)
	}
	b := &brokerProc{cmd: cmd, exited: make(chan struct{}), logFile: logFile}
	addrc := make(chan string, 1)
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			b.logLine(sc.Text(), addrc)
		}
		_, _ = io.Copy(io.Discard, pr) // a line over 1 MiB: keep the pipe drained
	}()
	go func() {
		_ = cmd.Wait()
		pw.Close()
		<-logged // exited means the whole log was read
		close(b.exited)
	}()
	select {
	case b.addr = <-addrc:
		return b, nil
	case <-b.exited:
		return nil, fmt.Errorf("broker exited before listening:\n%s", b.logTail())
	case <-time.After(60 * time.Second):
		b.kill()
		return nil, fmt.Errorf("broker not listening after 60s:\n%s", b.logTail())
	case <-ctx.Done():
		b.kill()
		return nil, ctx.Err()
	}
}

func (b *brokerProc) logLine(line string, addrc chan<- string) {
	var entry struct {
		Level string `json:"level"`
		Msg   string `json:"msg"`
		Addr  string `json:"addr"`
	}
	parsed := json.Unmarshal([]byte(line), &entry) == nil
	if b.logFile != nil {
		_, _ = io.WriteString(b.logFile, line+"\n")
	}
	b.mu.Lock()
	b.tail = append(b.tail, line)
	if len(b.tail) > logTail {
		b.tail = b.tail[len(b.tail)-logTail:]
	}
	if parsed && (entry.Level == "error" || entry.Level == "dpanic" || entry.Level == "panic" || entry.Level == "fatal") {
		b.errorLines++
	}
	if strings.Contains(line, "LEASE INVARIANT BROKEN") {
		b.invariantLn++
	}
	b.mu.Unlock()
	if parsed && entry.Msg == "broker listening" {
		select {
		case addrc <- entry.Addr:
		default:
		}
	}
}

func (b *brokerProc) logTail() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.tail, "\n")
}

func (b *brokerProc) logCounts() (errorLines, invariantLines int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.errorLines, b.invariantLn
}

func (b *brokerProc) pid() int { return b.cmd.Process.Pid }

func (b *brokerProc) kill() {
	_ = b.cmd.Process.Kill()
	<-b.exited
}

// shutdown sends SIGTERM and waits for the broker to exit, killing it
// after grace. It returns the exit code (-1 when it had to be killed).
func (b *brokerProc) shutdown(grace time.Duration) int {
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
		return b.cmd.ProcessState.ExitCode()
	case <-time.After(grace):
		b.kill()
		return -1
	}
}

// buildBroker builds the broker binary into dir with `go build`; the
// working directory must be inside the module.
func buildBroker(ctx context.Context, dir string, stderr io.Writer) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir, "github.com/browserbroker/broker/cmd/broker")
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build the broker: %w", err)
	}
	return dir + string(os.PathSeparator) + "broker", nil
}
