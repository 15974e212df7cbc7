package browser

import (
	"os"
	"strconv"
	"time"

	"github.com/browserbroker/broker/internal/proctree"
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
	// PSSBytes is the memory of the browser's process and all its
	// descendants (renderers, GPU and utility processes): the sum of their
	// proportional set sizes (/proc/PID/smaps_rollup), which count a page
	// shared by n processes as 1/n in each, so the sum over the browsers
	// is the memory they really take. Resident sizes would count
	// Chromium's shared code once per process, several times over. 0 for
	// a remote browser or when unknown.
	PSSBytes uint64
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
			bi.Retiring = retiredHungClose
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
		out[i].PSSBytes = treeSum(tree, bi.PID, processPSS)
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

// treeSum sums size (a process's memory) over root and its descendants in
// tree, each process once.
func treeSum(tree map[int][]int, root int, size func(pid int) uint64) uint64 {
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
		total += size(pid)
		stack = append(stack, tree[pid]...)
	}
	return total
}

// processPSS is one process's proportional set size in bytes; 0 when it
// cannot be read.
func processPSS(pid int) uint64 { return uint64(max(0, proctree.PSSKB(pid))) << 10 }
