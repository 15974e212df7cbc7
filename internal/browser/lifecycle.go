package browser

import (
	"time"

	"go.uber.org/zap"
)

// Retirement by use and age. A browser that has had BrowserMaxContexts
// contexts, or is older than BrowserMaxAge, retires: it takes no new
// contexts but serves the ones it has, undisturbed, and is closed (a remote
// one disconnected) when the last of them closes. New contexts go to
// another browser, launched or connected as needed. This is apart from the
// retirement of a browser whose context close hung (Pool.retire), which
// kills it at once.

// Why a browser retired, for the log.
const (
	retiredMaxContexts = "max contexts"
	retiredMaxAge      = "max age"
	retiredHungClose   = "a context close hung"
)

// retireAgedLocked retires the browsers past BrowserMaxAge.
func (p *Pool) retireAgedLocked() {
	if p.cfg.BrowserMaxAge <= 0 {
		return
	}
	now := p.now()
	for _, br := range p.browsers {
		if br.retiring == "" && !br.killed && !br.closing && !br.dropped && now.Sub(br.born) >= p.cfg.BrowserMaxAge {
			p.retireLocked(br, retiredMaxAge)
		}
	}
}

// retireLocked retires br by use or age. A browser retired by age drops
// its warm contexts: they would be handed out on a browser already past
// its time. One retired by use keeps them, since they are among the
// contexts its limit allowed (dropping them would make a warm pool at
// least BrowserMaxContexts large replace browsers forever).
func (p *Pool) retireLocked(br *browser, reason string) {
	br.retiring = reason
	p.stats.Retired++
	var warm []*Context
	if reason == retiredMaxAge {
		warm = p.takeWarmOfLocked(br)
		p.closeLater(warm)
	}
	p.log.Info("browser retired", zap.String("browser", br.name), zap.String("reason", reason),
		zap.Int("contexts", len(br.contexts)-len(warm)), zap.Int("warm_dropped", len(warm)),
		zap.Duration("age", p.now().Sub(br.born).Round(time.Millisecond)), zap.Int("created", br.created))
	br.src.kickLocked() // a remote source reconnects afresh
	p.kickWarmLocked()  // the warm pool refills elsewhere
	p.closeIfDrainedLocked(br)
}

// takeWarmOfLocked takes br's warm contexts out of the warm pool and
// returns them for closing.
func (p *Pool) takeWarmOfLocked(br *browser) []*Context {
	var out []*Context
	kept := p.warm[:0]
	for _, c := range p.warm {
		if c.br == br {
			out = append(out, c)
			continue
		}
		kept = append(kept, c)
	}
	clear(p.warm[len(kept):])
	p.warm = kept
	return out
}

// closeIfDrainedLocked starts closing a browser retired by use or age once
// no context lives on it or is being made there.
func (p *Pool) closeIfDrainedLocked(br *browser) {
	if br.retiring == "" || br.killed || br.closing || br.dropped || p.closed || br.loadLocked() > 0 {
		return
	}
	br.closing = true
	p.log.Info("closing retired browser", zap.String("browser", br.name), zap.String("reason", br.retiring))
	p.spawnLocked(func() { p.closeBrowser(br) })
}

// spawnLocked is spawn for a caller holding p.mu (which spawn takes). It
// is not for use once Close has begun: the pool's own goroutines are
// tracked only until Close drains them.
func (p *Pool) spawnLocked(f func()) {
	if p.draining {
		go f()
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
}
