package browser

import (
	"strings"
	"syscall"
	"time"

	"github.com/browserbroker/broker/internal/proctree"
)

// Playwright does not expose process ids, so the pool finds them in /proc:
// the driver is the child of this process whose command line says
// "run-driver", a browser the new child of the driver after a launch.
// Starts and launches are serialized, which makes the before/after
// difference exact.

// proc names one process: its pid and its start time (in clock ticks since
// boot), so that a recycled pid is never mistaken for it.
type proc struct {
	pid   int
	start uint64
}

// alive reports whether the process still runs (a zombie does not).
func (p proc) alive() bool {
	return p.pid > 0 && proctree.Alive(proctree.Proc{PID: p.pid, Start: p.start})
}

// kill sends SIGKILL if the process is still the one we knew.
func (p proc) kill() {
	if p.alive() {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
}

// children lists the live children of ppid, with their command lines.
func children(ppid int) map[proc]string {
	out := map[proc]string{}
	for _, p := range proctree.Read().Children(ppid) {
		out[proc{pid: p.PID, start: p.Start}] = p.Cmdline
	}
	return out
}

// newChild returns the one child of ppid in after but not in before whose
// command line contains want, or the zero proc.
func newChild(before, after map[proc]string, want string) proc {
	var found proc
	for p, cmd := range after {
		if _, old := before[p]; old || !strings.Contains(cmd, want) {
			continue
		}
		if found.pid != 0 {
			return proc{} // ambiguous: better no pid than a wrong one
		}
		found = p
	}
	return found
}

// waitExit polls until none of procs is alive or d has passed, and reports
// whether they all exited.
func waitExit(d time.Duration, procs ...proc) bool {
	deadline := time.Now().Add(d)
	for {
		running := false
		for _, p := range procs {
			if p.alive() {
				running = true
				break
			}
		}
		if !running {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
