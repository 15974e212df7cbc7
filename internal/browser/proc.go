package browser

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
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

// procStat reads the fields of /proc/<pid>/stat the pool needs.
func procStat(pid int) (ppid int, state byte, start uint64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, false
	}
	// The command name (field 2) is in parentheses and may hold anything,
	// so count fields from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0, 0, 0, false
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 20 {
		return 0, 0, 0, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	start, err2 := strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil || len(f[0]) == 0 {
		return 0, 0, 0, false
	}
	return ppid, f[0][0], start, true
}

// alive reports whether the process still runs (a zombie does not).
func (p proc) alive() bool {
	if p.pid <= 0 {
		return false
	}
	_, state, start, ok := procStat(p.pid)
	return ok && start == p.start && state != 'Z' && state != 'X'
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
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		pp, state, start, ok := procStat(pid)
		if !ok || pp != ppid || state == 'Z' {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		out[proc{pid: pid, start: start}] = string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
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
