package browser

import (
	"context"
	"testing"
)

func TestSweepOrphansClosesUnknownContexts(t *testing.T) {
	p := newPool(t, nil)
	mine := openContext(t, p, ContextOptions{})
	p.mu.Lock()
	br := p.browsers[0]
	p.mu.Unlock()
	// A context made behind the pool's back, as a bookkeeping bug would.
	if _, err := br.b.NewContext(); err != nil {
		t.Fatalf("NewContext behind the pool: %v", err)
	}
	if n := p.SweepOrphans(context.Background()); n != 1 {
		t.Fatalf("SweepOrphans = %d, want 1", n)
	}
	if got := len(br.b.Contexts()); got != 1 {
		t.Fatalf("browser has %d contexts after the sweep, want only the pool's own", got)
	}
	if st := p.Stats(); st.OrphansClosed != 1 || st.Contexts != 1 {
		t.Fatalf("stats %+v: want 1 orphan closed and the handed-out context kept", st)
	}
	if got := evaluate(t, mine, "1 + 1"); got != "2" {
		t.Fatalf("the pool's own context after the sweep: %s", got)
	}
	if n := p.SweepOrphans(context.Background()); n != 0 {
		t.Fatalf("second SweepOrphans = %d, want 0", n)
	}
}
