package browser

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// The warm pool: contexts with their page created ahead of time with the
// default options, so that an acquire that asks for nothing special is
// granted without waiting for Chromium. A warm context is handed out once
// and never comes back. Warm contexts live in their browser's context set
// (the browser counts them) but not in p.contexts (they are nobody's yet).
//
// Memory: while Config.MemoryLow says memory is low the refill holds off;
// the warm contexts already made stay (they are paid for) and are handed
// out as usual. In the broker a default acquire still waits under low
// memory even when a warm context could serve it: the lease manager admits
// (capacity, then memory) before it calls the backend, and hands the
// request over unexamined. Letting warm hits past memory admission would
// take the manager claiming a pooled context before Open (a second
// backend interface) and would let later default acquires overtake the
// queued ones; the wait lasts until admission next says yes (each second).
//
// Live work first: making a context and its page costs 230-300 ms of
// Chromium and driver CPU, much of it on what every context of the browser
// shares (the browser process, the driver's one event loop), so a refill
// made at once, beside the job of the lease that just took a warm context,
// lands on that job's first commands: on 2 busy cores its navigate took
// two to three times as long as in-process (README, Figures).
// The refill is speculative work, so it yields to live work: before each
// context it waits until no page command has run on the pool's contexts
// for warmRefillQuiet, no NewContext call is making a context for a
// caller, and every warm context handed out has finished its first
// command (the gap between the grant and that command is the lease's,
// however long). It never starves: after Config.WarmRefillMaxDelay it
// makes the context anyway (Stats.WarmRefillsForced), so under work that
// never pauses the pool still refills, one context per delay at worst.
// Nor does it wait once the pool is empty: the next default acquire would
// then make its context on its own critical path, which costs it more than
// sharing the machine with a refill (and a worker that runs jobs back to
// back, never pausing, would otherwise drain the pool to misses).
// Live work is an atomic counter bumped around each command, cheap beside
// a round trip to the driver; the refill waits on a channel and timers,
// never polls.

// warmRefillQuiet is how long live work must have paused before the warm
// refill makes a context. It spans the gaps between a job's commands (a
// round trip from the worker, a few ms) with room to spare on a loaded
// machine, and is short beside the context's own cost.
const warmRefillQuiet = 100 * time.Millisecond

// isDefault reports whether o asks for nothing: only such requests can take
// a warm context, made with the default options.
func (o ContextOptions) isDefault() bool {
	return o.Viewport == nil && o.UserAgent == "" && o.Locale == "" && o.TimezoneID == "" &&
		len(o.ExtraHTTPHeaders) == 0 && o.Proxy == nil && !o.IsMobile && !o.HasTouch &&
		o.DeviceScaleFactor == 0 && o.JavaScriptEnabled == nil && !o.IgnoreHTTPSErrors &&
		o.StorageState == nil
}

// takeWarm hands out a warm context, or returns nil when none is ready.
func (p *Pool) takeWarm() *Context {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeLater(p.pruneWarmLocked())
	if len(p.warm) > 0 && !p.closed {
		c := p.warm[len(p.warm)-1]
		p.warm = p.warm[:len(p.warm)-1]
		p.contexts[c] = struct{}{}
		// Live work until its first command has run (Context.endFresh).
		c.fresh.Store(true)
		p.liveBegin()
		p.stats.WarmHits++
		p.kickWarmLocked()
		return c
	}
	p.stats.WarmMisses++
	p.kickWarmLocked()
	return nil
}

// makeRoomLocked takes warm contexts out so that one more context fits
// under MaxContexts (the warm pool yields to leases), and returns them for
// the caller to close once it has unlocked.
func (p *Pool) makeRoomLocked() []*Context {
	if p.cfg.MaxContexts <= 0 {
		return nil
	}
	// Contexts being closed still count until they are gone, so a burst of
	// leases may close a few more warm ones than strictly needed; the
	// refill brings them back.
	var out []*Context
	for need := p.totalLocked() + 1 - p.cfg.MaxContexts; need > 0 && len(p.warm) > 0; need-- {
		out = append(out, p.warm[0])
		p.warm = p.warm[1:]
	}
	return out
}

// closeLater closes contexts in the background; callable with p.mu held.
func (p *Pool) closeLater(cs []*Context) {
	for _, c := range cs {
		go func() {
			p.spawn(func() { _ = c.Close(context.Background()) })
		}()
	}
}

// totalLocked counts the contexts that exist (warm, handed out, or being
// closed) or are being made, from the browsers' own books.
func (p *Pool) totalLocked() int {
	n := 0
	for _, br := range p.browsers {
		n += len(br.contexts) + br.reserved
	}
	return n
}

// warmWantedLocked says whether the warm pool should grow by one.
func (p *Pool) warmWantedLocked() bool {
	if p.closed || len(p.warm)+p.warmCreating >= p.cfg.Warm {
		return false
	}
	return p.cfg.MaxContexts <= 0 || p.totalLocked() < p.cfg.MaxContexts
}

func (p *Pool) kickWarmLocked() {
	if p.cfg.Warm <= 0 {
		return
	}
	select {
	case p.warmKick <- struct{}{}:
	default:
	}
}

// liveBegin and liveEnd bracket live work (see "Live work first" above).
// Without a warm pool there is no refill to yield, and they do nothing.
func (p *Pool) liveBegin() {
	if p.cfg.Warm > 0 {
		p.live.Add(1)
	}
}

func (p *Pool) liveEnd() {
	if p.cfg.Warm <= 0 {
		return
	}
	// The time first: a refill that sees live at zero reads a current one.
	p.liveLast.Store(int64(time.Since(p.epoch)))
	if p.live.Add(-1) == 0 {
		select {
		case p.liveIdle <- struct{}{}:
		default:
		}
	}
}

// endFresh ends the live work a warm context stands for from its hand-out
// to the end of its first command (or its close), once.
func (c *Context) endFresh() {
	if c.fresh.CompareAndSwap(true, false) {
		c.pool.liveEnd()
	}
}

// quietIn says how long until live work has paused for warmRefillQuiet:
// 0 when it has, -1 while live work runs.
func (p *Pool) quietIn() time.Duration {
	if p.live.Load() > 0 {
		return -1
	}
	since := time.Since(p.epoch) - time.Duration(p.liveLast.Load())
	return max(0, warmRefillQuiet-since)
}

// yieldToLive waits until live work has paused for warmRefillQuiet or the
// warm pool is empty, for Config.WarmRefillMaxDelay at most (forced), or
// until the pool closes (open false).
func (p *Pool) yieldToLive() (forced, open bool) {
	wait := p.quietIn()
	if wait == 0 || p.warmEmpty() {
		return false, true
	}
	p.setYielding(true)
	defer p.setYielding(false)
	deadline := time.NewTimer(p.cfg.WarmRefillMaxDelay)
	defer deadline.Stop()
	quiet := time.NewTimer(warmRefillQuiet) // (re)armed below, before each use
	defer quiet.Stop()
	for ; wait != 0 && !p.warmEmpty(); wait = p.quietIn() {
		var quietC <-chan time.Time // nil while live work runs: wait for liveIdle
		if wait > 0 {
			quiet.Reset(wait)
			quietC = quiet.C
		}
		select {
		case <-p.closing:
			return false, false
		case <-deadline.C:
			return true, true
		case <-p.liveIdle: // may be stale; quietIn tells
		case <-quietC:
		case <-p.warmKick: // a warm context taken: the pool may be empty
		}
	}
	return false, true
}

func (p *Pool) setYielding(on bool) {
	p.mu.Lock()
	p.warmYielding = on
	p.mu.Unlock()
}

func (p *Pool) warmEmpty() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.warm) == 0
}

// warmWanted says whether the refill would make a context now.
func (p *Pool) warmWanted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.warmWantedLocked()
}

// memoryLow reports Config.MemoryLow's answer; false when there is none.
func (p *Pool) memoryLow() bool {
	return p.cfg.MemoryLow != nil && p.cfg.MemoryLow()
}

// refillWarm runs for the pool's life, topping the warm pool up whenever
// it is kicked (a context taken, a context closed, a browser replaced).
// A tick also catches warm contexts lost with their browser, and resumes
// the refill once memory is no longer low.
func (p *Pool) refillWarm() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-p.closing:
			return
		case <-p.warmKick:
		case <-tick.C:
		}
		for {
			// Speculative work yields to live work (see above). Under low
			// memory nothing is made: no reason to wait.
			if p.warmWanted() && !p.memoryLow() {
				forced, open := p.yieldToLive()
				if !open {
					return
				}
				if forced {
					p.mu.Lock()
					p.stats.WarmRefillsForced++
					p.mu.Unlock()
				}
			}
			// Asked before each context, so that a refill of several stops
			// as soon as memory runs low.
			low := p.memoryLow()
			p.mu.Lock()
			p.closeLater(p.pruneWarmLocked())
			want := p.warmWantedLocked()
			held := want && low
			changed := held != p.warmHeld
			p.warmHeld = held
			want = want && !low
			if want {
				p.warmCreating++
			}
			p.mu.Unlock()
			if changed {
				p.log.Info("warm pool refill", zap.Bool("held_for_memory", held))
			}
			if !want {
				break
			}
			err := p.addWarm()
			p.mu.Lock()
			p.warmCreating--
			p.mu.Unlock()
			if err != nil {
				p.log.Warn("warm pool: could not create a context", zap.Error(err))
				break // the next kick tries again
			}
		}
	}
}

// pruneWarmLocked takes out the warm contexts that died unused, and
// returns them for closing. Those on browsers past BrowserMaxAge go too
// (retireLocked closes them).
func (p *Pool) pruneWarmLocked() []*Context {
	p.retireAgedLocked()
	var dead []*Context
	kept := p.warm[:0]
	for _, c := range p.warm {
		if c.LostErr() != nil {
			dead = append(dead, c)
			continue
		}
		kept = append(kept, c)
	}
	clear(p.warm[len(kept):])
	p.warm = kept
	return dead
}

// addWarm creates one context with the default options and parks it.
func (p *Pool) addWarm() error {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.LaunchTimeout)
	defer cancel()
	opts, err := ContextOptions{}.playwright()
	if err != nil {
		return err
	}
	br, err := p.reserve(ctx, false)
	if err != nil {
		return err
	}
	c, err := p.create(br, opts)
	if err != nil {
		return err
	}
	p.mu.Lock()
	// A lease may have taken the room while this one was being made.
	over := p.cfg.MaxContexts > 0 && p.totalLocked() > p.cfg.MaxContexts
	park := !p.closed && !over && c.LostErr() == nil
	if park {
		p.warm = append(p.warm, c)
	}
	p.mu.Unlock()
	if !park {
		_ = c.Close(context.Background())
	}
	return nil
}
