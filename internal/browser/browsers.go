package browser

import (
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
	var procs *proctree.Snapshot
	for i, bi := range out {
		if bi.PID <= 0 {
			continue
		}
		if procs == nil {
			procs = proctree.Read()
		}
		pss := proctree.PSSKB(bi.PID)
		for _, c := range procs.Tree(bi.PID) {
			pss += proctree.PSSKB(c.PID)
		}
		out[i].PSSBytes = uint64(pss) << 10
	}
	return out
}
