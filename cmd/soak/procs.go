package main

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The broker has no goroutine or memory endpoint, so the soak reads what it
// needs about the broker and its Chromium from /proc.

// procEntry is one live process below the broker.
type procEntry struct {
	pid, ppid int
	cmdline   string
}

// procTree lists the live (non-zombie) processes below root.
func procTree(root int) []procEntry {
	type info struct {
		ppid int
		ok   bool
	}
	all := map[int]info{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		all[pid] = info{ppid: ppid, ok: f[0] != "Z" && f[0] != "X"}
	}
	children := map[int][]int{}
	for pid, in := range all {
		children[in.ppid] = append(children[in.ppid], pid)
	}
	var out []procEntry
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			if all[c].ok {
				cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c))
				if err == nil {
					out = append(out, procEntry{pid: c, ppid: p, cmdline: string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))})
				}
			}
			walk(c)
		}
	}
	walk(root)
	return out
}

// procCounts summarises the processes below the broker.
type procCounts struct {
	total, renderers int
	rssKB            int64            // summed VmRSS
	byRole           map[string]int   // see role
	rssByRole        map[string]int64 // VmRSS in kB
}

func countProcs(root int) procCounts {
	c := procCounts{byRole: map[string]int{}, rssByRole: map[string]int64{}}
	for _, e := range procTree(root) {
		c.total++
		if strings.Contains(e.cmdline, "--type=renderer") {
			c.renderers++
		}
		rss := statusKB(e.pid, "VmRSS")
		c.rssKB += rss
		r := role(e.cmdline)
		c.byRole[r]++
		c.rssByRole[r] += rss
	}
	return c
}

// role names what a process below the broker is: "driver", "browser", or
// Chromium's --type (with --utility-sub-type for utility processes).
func role(cmdline string) string {
	if strings.Contains(cmdline, "run-driver") {
		return "driver"
	}
	flag := func(name string) string {
		i := strings.Index(cmdline, "--"+name+"=")
		if i < 0 {
			return ""
		}
		v := cmdline[i+len(name)+3:]
		if j := strings.IndexByte(v, ' '); j >= 0 {
			v = v[:j]
		}
		return v
	}
	t := flag("type")
	switch {
	case t == "" && strings.Contains(cmdline, "chrom"):
		return "browser"
	case t == "":
		return strings.Fields(cmdline + " ?")[0]
	case t == "utility":
		return "utility:" + flag("utility-sub-type")
	}
	return t
}

// leaked lists the roles that have more processes now than in base, in
// two groups: services Chromium started once during the run (a role absent
// from base with one process now: a singleton such as a utility service
// started on first use, not a leak), and the rest, which is.
func (now procCounts) leaked(base procCounts) (started, leaked []string) {
	for r, n := range now.byRole {
		switch b := base.byRole[r]; {
		case n <= b:
		case b == 0 && n == 1 && r != "renderer" && r != "browser" && r != "driver":
			started = append(started, r)
		default:
			leaked = append(leaked, fmt.Sprintf("%s %d → %d", r, b, n))
		}
	}
	slices.Sort(started)
	slices.Sort(leaked)
	return started, leaked
}

// renderers lists the renderer processes below the broker.
func renderers(root int) []int {
	var out []int
	for _, e := range procTree(root) {
		if strings.Contains(e.cmdline, "--type=renderer") {
			out = append(out, e.pid)
		}
	}
	return out
}

// statusKB reads a "Name: N kB" (or plain number) field of
// /proc/PID/status; 0 when it cannot.
func statusKB(pid int, name string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, name+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		return n
	}
	return 0
}

// openFDs counts a process's open file descriptors.
func openFDs(pid int) int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(entries)
}

// hasWorkerThread reports whether a process runs a dedicated worker:
// Chromium runs one as a thread named "DedicatedWorker" in the renderer of
// the page that started it.
func hasWorkerThread(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false
	}
	for _, task := range tasks {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/comm", pid, task.Name()))
		if err == nil && strings.HasPrefix(string(comm), "DedicatedWorker") {
			return true
		}
	}
	return false
}

// markedRenderer waits until exactly one renderer below root runs a
// dedicated worker and returns its pid.
func markedRenderer(root int, within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	for {
		var marked []int
		for _, pid := range renderers(root) {
			if hasWorkerThread(pid) {
				marked = append(marked, pid)
			}
		}
		if len(marked) == 1 {
			return marked[0], nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("renderers running a worker: %v, want exactly one", marked)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
