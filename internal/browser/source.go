package browser

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unsafe"

	"github.com/playwright-community/playwright-go"
	"go.uber.org/zap"
)

// Browser sources. The local source launches browsers on the pool's
// driver; a remote source is one Playwright browser-server endpoint, each
// of whose browsers is one connection to it, made through the same driver.
// Every browser, whatever its source, sits in Pool.browsers and takes
// contexts the same way; a remote one has no pid, and closing it only
// disconnects. Each remote source has a goroutine (keepConnected) that
// keeps at least one usable connection open, reconnecting with backoff.

// Reconnection backoff of a remote source.
const (
	reconnectMin = 250 * time.Millisecond
	reconnectMax = 30 * time.Second
)

// localSourceName is the name of the local source in SourceStats.
const localSourceName = "local"

// SourceStats describes one browser source.
type SourceStats struct {
	// Name is "local" for launched browsers, else the endpoint.
	Name string
	// Connected is true while a remote source has at least one connection
	// open; always true for "local".
	Connected bool
	// Browsers counts the source's browsers: processes for "local",
	// connections for a remote source (retiring ones included).
	Browsers int
	// Contexts counts the contexts handed out on the source's browsers and
	// not yet closed, lost ones included.
	Contexts int
	// Disconnects counts the connections to a remote source that dropped
	// without the pool closing them (the server died, the network broke,
	// the driver died).
	Disconnects uint64
	// LastError is the last connection error or disconnect reason of a
	// remote source; empty once a connection succeeds.
	LastError string
}

// source is where browsers come from. Its fields are under Pool.mu.
type source struct {
	name     string // localSourceName, or the endpoint
	endpoint string // empty for the local source
	opened   int    // browsers launched or connections made, for their names
	// disconnects and lastErr: see SourceStats.
	disconnects uint64
	lastErr     string
	kick        chan struct{} // wakes keepConnected; buffer of one; nil for local
}

func (s *source) remote() bool { return s.endpoint != "" }

// kickLocked wakes the source's reconnect loop, if it has one.
func (s *source) kickLocked() {
	if s.kick == nil {
		return
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// sources lists the local source (if any) then the remote ones.
func (p *Pool) sources() []*source {
	if p.local == nil {
		return p.remotes
	}
	return append([]*source{p.local}, p.remotes...)
}

// sourceStatsLocked computes the per-source part of Stats.
func (p *Pool) sourceStatsLocked() []SourceStats {
	all := p.sources()
	out := make([]SourceStats, len(all))
	index := make(map[*source]int, len(all))
	for i, src := range all {
		index[src] = i
		out[i] = SourceStats{Name: src.name, Disconnects: src.disconnects, LastError: src.lastErr}
	}
	for _, br := range p.browsers {
		out[index[br.src]].Browsers++
	}
	for c := range p.contexts {
		out[index[c.br.src]].Contexts++
	}
	for i, src := range all {
		out[i].Connected = !src.remote() || out[i].Browsers > 0
	}
	return out
}

// hasUsableLocked reports whether src has a browser that takes new
// contexts.
func (p *Pool) hasUsableLocked(src *source) bool {
	for _, br := range p.browsers {
		if br.src == src && br.usableLocked() {
			return true
		}
	}
	return false
}

// growSourceLocked picks the source of the next browser when none has
// room: local when enabled, else the least loaded remote source with a
// connection up. It returns nil when there is none.
func (p *Pool) growSourceLocked() *source {
	if p.local != nil {
		return p.local
	}
	var best *source
	bestLoad := 0
	for _, src := range p.remotes {
		up, load := false, 0
		for _, br := range p.browsers {
			if br.src == src && !br.closing && !br.dropped && !br.killed {
				up = true
				load += len(br.contexts) + br.reserved
			}
		}
		if up && (best == nil || load < bestLoad) {
			best, bestLoad = src, load
		}
	}
	return best
}

// noSourceErrorLocked says why no browser source can take a context.
func (p *Pool) noSourceErrorLocked() error {
	var why []string
	for _, src := range p.remotes {
		msg := src.lastErr
		if msg == "" {
			msg = "not connected"
		}
		if !strings.Contains(msg, src.endpoint) {
			msg = src.endpoint + ": " + msg
		}
		why = append(why, msg)
	}
	return fmt.Errorf("%w: no browser source connected (%s)", ErrLaunch, strings.Join(why, "; "))
}

// browserType is the pool's engine on inst.
func (p *Pool) browserType(inst *instance) playwright.BrowserType {
	switch p.cfg.BrowserType {
	case Firefox:
		return inst.pw.Firefox
	case WebKit:
		return inst.pw.WebKit
	default:
		return inst.pw.Chromium
	}
}

// connect opens one connection to a remote source and adds it to the pool.
// Close waits for connects in flight before it stops the driver.
func (p *Pool) connect(src *source) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return fmt.Errorf("connect %s: %w", src.endpoint, ErrClosed)
	}
	p.connecting.Add(1)
	p.mu.Unlock()
	defer p.connecting.Done()

	err := p.connectOnce(src)
	if err != nil && !errors.Is(err, ErrClosed) {
		p.mu.Lock()
		src.lastErr = shortMessage(err)
		p.mu.Unlock()
	}
	return err
}

func (p *Pool) connectOnce(src *source) error {
	inst, err := p.driver()
	if err != nil {
		return err
	}
	start := time.Now()
	b, err := p.browserType(inst).Connect(src.endpoint, playwright.BrowserTypeConnectOptions{
		Timeout: playwright.Float(float64(p.cfg.LaunchTimeout.Milliseconds())),
	})
	if err != nil {
		if isConnectionError(err) {
			p.driverDied(inst, "connect failed: "+shortMessage(err))
			return fmt.Errorf("%w: connect %s: %w: %s", ErrLaunch, src.endpoint, ErrDriverCrashed, shortMessage(err))
		}
		return fmt.Errorf("%w: connect %s: %s", ErrLaunch, src.endpoint, shortMessage(err))
	}
	br := &browser{src: src, inst: inst, b: b, gone: make(chan struct{}), contexts: map[*Context]struct{}{}}
	b.OnDisconnected(func(playwright.Browser) { p.browserDisconnected(br) })

	p.mu.Lock()
	if p.closed || inst.dead || inst.stopping {
		dead := inst.dead
		p.mu.Unlock()
		if dead {
			sever(b)
		} else {
			p.closeBrowser(br)
		}
		if p.isClosed() {
			return fmt.Errorf("connect %s: %w", src.endpoint, ErrClosed)
		}
		return fmt.Errorf("connect %s: %w", src.endpoint, ErrDriverCrashed)
	}
	if br.dropped { // disconnected before it was in the pool
		p.mu.Unlock()
		return fmt.Errorf("%w: connect %s: disconnected at once", ErrLaunch, src.endpoint)
	}
	src.opened++
	br.name = fmt.Sprintf("%s#%d", src.endpoint, src.opened)
	br.born = p.now()
	src.lastErr = ""
	p.browsers = append(p.browsers, br)
	inst.remotes = append(inst.remotes, br)
	p.kickWarmLocked() // a new browser may have room
	p.mu.Unlock()
	if !b.IsConnected() { // dropped before the handler was in place
		p.browserDisconnected(br)
	}
	p.log.Info("browser connected", zap.String("browser", br.name), zap.String("version", b.Version()),
		zap.Duration("took", time.Since(start)))
	return nil
}

// keepConnected runs for the pool's life, one per remote source: whenever
// the source has no usable connection (it dropped, or retired), it
// connects, retrying with exponential backoff. failed says the attempt
// NewPool made failed, so the first retry waits.
func (p *Pool) keepConnected(src *source, failed bool) {
	var (
		last     time.Time // of the last attempt
		failures int       // since the last success
	)
	if failed {
		last, failures = time.Now(), 1
	}
	for {
		p.mu.Lock()
		need := !p.closed && !p.hasUsableLocked(src)
		p.mu.Unlock()
		if !need {
			select {
			case <-p.closing:
				return
			case <-src.kick:
			}
			continue
		}
		// Attempts are spaced even after a success: a server that accepts
		// and drops at once is not hammered.
		if wait := time.Until(last.Add(reconnectDelay(failures))); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-p.closing:
				t.Stop()
				return
			case <-t.C:
			}
		}
		last = time.Now()
		err := p.connect(src)
		if err == nil {
			failures = 0
			continue
		}
		if errors.Is(err, ErrClosed) {
			return
		}
		failures++
		p.log.Warn("browser source: reconnect failed", zap.String("endpoint", src.endpoint),
			zap.Duration("retry_in", reconnectDelay(failures)), zap.Error(err))
	}
}

// reconnectDelay is the least time between two connection attempts after
// failures failed ones: reconnectMin doubling to reconnectMax.
func reconnectDelay(failures int) time.Duration {
	d := reconnectMin
	for i := 1; i < failures && d < reconnectMax; i++ {
		d *= 2
	}
	return min(d, reconnectMax)
}

// sever ends the client side of a remote browser's connection whose
// driver is gone. Playwright-go tears a Connect connection down only when
// the driver reports its pipe closed; with the driver dead that report
// never comes, and the connection's reader goroutine, with every call
// pending on it, would wait forever. Handing the reader the end-of-pipe
// marker (a nil message) makes it clean up as on a real close: pending
// calls fail and the goroutine exits. Playwright-go offers no API for
// this, so it is reached by reflection; a layout it does not expect (a
// playwright-go upgrade) makes sever report false, and the pool's goleak
// tests fail.
func sever(b playwright.Browser) (ok bool) {
	defer func() {
		if recover() != nil { // the pipe closed by itself meanwhile
			ok = true
		}
	}()
	v := reflect.ValueOf(b)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return false
	}
	conn := v.Elem().FieldByName("connection")
	if !conn.IsValid() || conn.Kind() != reflect.Pointer || conn.IsNil() {
		return false
	}
	tr := conn.Elem().FieldByName("transport")
	if !tr.IsValid() || tr.Kind() != reflect.Interface || tr.IsNil() {
		return false
	}
	pipe := tr.Elem()
	if pipe.Kind() != reflect.Pointer || pipe.IsNil() || pipe.Elem().Type().Name() != "jsonPipe" {
		return false // not a Connect connection: never touch the driver's own pipe
	}
	field := pipe.Elem().FieldByName("msgChan")
	if !field.IsValid() || field.Kind() != reflect.Chan {
		return false
	}
	ch := reflect.NewAt(field.Type(), unsafe.Pointer(field.UnsafeAddr())).Elem()
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	chosen, _, _ := reflect.Select([]reflect.SelectCase{
		{Dir: reflect.SelectSend, Chan: ch, Send: reflect.Zero(ch.Type().Elem())},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)},
	})
	return chosen == 0
}
