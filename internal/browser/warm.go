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
