package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/browserbroker/broker/internal/proctree"
)

// The broker has no goroutine or memory endpoint, so the soak reads what it
// needs about the broker and its Chromium from /proc.

// procCounts summarises the processes below the broker.
type procCounts struct {
	total, renderers int
	rssKB            int64            // summed VmRSS
	byRole           map[string]int   // see role
	rssByRole        map[string]int64 // VmRSS in kB
}

func countProcs(root int) procCounts {
	c := procCounts{byRole: map[string]int{}, rssByRole: map[string]int64{}}
	for _, e := range proctree.Tree(root) {
		c.total++
		if strings.Contains(e.Cmdline, "--type=renderer") {
			c.renderers++
		}
		rss := proctree.StatusField(e.PID, "VmRSS")
		c.rssKB += rss
		r := role(e.Cmdline)
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
	for _, e := range proctree.Tree(root) {
		if strings.Contains(e.Cmdline, "--type=renderer") {
			out = append(out, e.PID)
		}
	}
	return out
}

// markedRenderer waits until exactly one renderer below root runs a
// dedicated worker and returns its pid: Chromium runs the worker as a
// thread named "DedicatedWorker" in the renderer of the page that started
// it.
func markedRenderer(root int, within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	for {
		var marked []int
		for _, pid := range renderers(root) {
			if proctree.HasThread(pid, "DedicatedWorker") {
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
