package browser

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// BrowserInfo describes one browser of the pool, for operators.
type BrowserInfo struct {
	// Name is "local-N" for a local browser, else its endpoint and
	// connection ordinal.
	Name string
	// Remote is true for a connection to a remote browser server.
	Remote bool
	// PID is the local browser's process id; 0 for a remote one, or when
	// it could not be found.
	PID int
	// Contexts is the number of contexts open in it for leases; Created
	// counts every context made in it, warm ones included.
	Contexts, Created int
	// Age is the time since it was launched or connected.
	Age time.Duration
	// Retiring says why it takes no new contexts (empty while it does).
	Retiring string
	// RSSBytes is the resident memory of the browser's process and all
	// its descendants (renderers, GPU and utility processes), read from
	// /proc; 0 for a remote browser or when unknown.
	RSSBytes uint64
}

// Browsers describes the pool's browsers, retiring ones included, in the
// order they were added.
func (p *Pool) Browsers() []BrowserInfo {
	p.mu.Lock()
	now := p.now()
	out := make([]BrowserInfo, 0, len(p.browsers))
	for _, br := range p.browsers {
		bi := BrowserInfo{Name: br.name, Remote: br.src.remote(), PID: br.proc.pid,
			Contexts: len(br.contexts), Created: br.created, Age: now.Sub(br.born), Retiring: br.retiring}
		if br.killed && bi.Retiring == "" {
			bi.Retiring = "a context close hung"
		}
		out = append(out, bi)
	}
	p.mu.Unlock()
	// /proc is read outside the lock: it is I/O.
	var tree map[int][]int
	for i, bi := range out {
		if bi.PID <= 0 {
			continue
		}
		if tree == nil {
			tree = processTree()
		}
		out[i].RSSBytes = treeRSS(tree, bi.PID, processRSS)
	}
	return out
}

// processTree maps each live process id to its children's.
func processTree() map[int][]int {
	tree := map[int][]int{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return tree
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, _, ok := procStat(pid); ok {
			tree[ppid] = append(tree[ppid], pid)
		}
	}
	return tree
}

// treeRSS sums the resident memory (as rss reads it) of root and its
// descendants in tree, each process once.
func treeRSS(tree map[int][]int, root int, rss func(pid int) uint64) uint64 {
	var total uint64
	stack := []int{root}
	seen := map[int]bool{}
	for len(stack) > 0 {
		pid := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		total += rss(pid)
		stack = append(stack, tree[pid]...)
	}
	return total
}

// processRSS is one process's resident memory from /proc/PID/statm; 0 when
// it cannot be read.
func processRSS(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}
