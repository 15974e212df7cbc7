package browser

import (
	"slices"
	"testing"
	"time"

	"github.com/browserbroker/broker/internal/proctree"
)

func TestBrowsersDescribesTheLocalBrowsers(t *testing.T) {
	p := sharedPool(t)
	openContext(t, p, ContextOptions{})
	pids := p.Processes().Browsers
	bs := p.Browsers()
	if len(bs) == 0 {
		t.Fatalf("Browsers() = none, want the shared pool's browser")
	}
	contexts := 0
	for _, b := range bs {
		if b.Remote || b.PID <= 0 || !slices.Contains(pids, b.PID) {
			t.Errorf("Browsers() has %+v; want a local browser whose pid is one of Processes().Browsers %v", b, pids)
		}
		// A Chromium with a page, its renderer and helpers, holds tens of
		// MB; less than the sum of their resident sizes, which count the
		// pages they share once per process.
		if b.PSSBytes < 10<<20 || b.Age <= 0 {
			t.Errorf("Browsers() has %s with PSS %d bytes and age %v; want over 10 MiB and a positive age", b.Name, b.PSSBytes, b.Age)
		}
		rss := proctree.StatusField(b.PID, "VmRSS")
		for _, pr := range proctree.Tree(b.PID) {
			rss += proctree.StatusField(pr.PID, "VmRSS")
		}
		if b.PSSBytes >= uint64(rss)<<10 {
			t.Errorf("Browsers() has %s with PSS %d bytes, its processes' resident sizes sum to %d: want PSS below (shared pages split)", b.Name, b.PSSBytes, rss<<10)
		}
		contexts += b.Contexts
	}
	if contexts != p.Stats().Contexts {
		t.Errorf("Browsers() count %d contexts, Stats() %d; want the same", contexts, p.Stats().Contexts)
	}
}

func TestUntouchedScreenshotLeavesTheDOMAlone(t *testing.T) {
	p := sharedPool(t)
	c := openContext(t, p, ContextOptions{})
	navigate(t, c, site.URL("/"))
	ctx := timeout(t, 30*time.Second)
	const watch = `() => { window.__mutations = 0; document.querySelector('#name').focus();
		new MutationObserver(ms => { window.__mutations += ms.length })
			.observe(document, {subtree: true, childList: true, attributes: true, characterData: true}); }`
	if _, err := c.Evaluate(ctx, watch, ""); err != nil {
		t.Fatalf("Evaluate(watch mutations) = %v", err)
	}
	mutations := func() string {
		t.Helper()
		// A task later, so that pending observer callbacks have run.
		got, err := c.Evaluate(ctx, `() => new Promise(r => setTimeout(() => r(window.__mutations), 50))`, "")
		if err != nil {
			t.Fatalf("Evaluate(mutations) = %v", err)
		}
		return got
	}
	if _, err := c.Screenshot(ctx, ScreenshotOptions{Format: "jpeg", Quality: 50, Untouched: true}); err != nil {
		t.Fatalf("Screenshot(Untouched) = %v", err)
	}
	if got := mutations(); got != "0" {
		t.Fatalf("after Screenshot(Untouched), the page saw %s DOM mutations; want 0", got)
	}
	// The check can see what it guards against: a default screenshot
	// adds (and removes) Playwright's caret style.
	if _, err := c.Screenshot(ctx, ScreenshotOptions{}); err != nil {
		t.Fatalf("Screenshot() = %v", err)
	}
	if got := mutations(); got == "0" {
		t.Errorf("a default screenshot made no DOM mutation either: the check does not see Playwright's caret style")
	}
}
