package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/playwright-community/playwright-go"
	"go.uber.org/zap"
)

// Tuning that callers need not see.
const (
	// cancelGrace is how long a call may take to return by itself after
	// its context ended, before the page is closed under it.
	cancelGrace = 250 * time.Millisecond
	// defaultCallTimeout is Playwright's timeout for a call whose context
	// has no deadline.
	defaultCallTimeout = 30 * time.Second
	// driverWatchInterval is how often the driver's pid is checked.
	driverWatchInterval = 200 * time.Millisecond
	// newContextAttempts bounds the retries of NewContext when the browser
	// or driver it picked died under it.
	newContextAttempts = 3
)

// runMu serializes playwright.Run across every Pool of the process, so the
// driver found as "the new run-driver child" is ours.
var runMu sync.Mutex

// Stats is a snapshot of the pool.
type Stats struct {
	// Browsers is the number of browsers: local processes and remote
	// connections, retiring ones included until they are gone.
	Browsers int
	// Contexts is the number of contexts handed out by NewContext and not
	// yet Closed, lost ones included.
	Contexts int
	// Retired counts the browsers retired since the pool started, for any
	// reason: BrowserMaxContexts, BrowserMaxAge, or a hung context close.
	Retired uint64
	// Retiring is the number of retired browsers still in the pool: serving
	// their last contexts, or being closed.
	Retiring int
	// Launches counts local browser launches.
	Launches uint64
	// DriverRestarts counts driver starts after the first.
	DriverRestarts uint64
	// DriverCrashes counts driver deaths the pool did not cause.
	DriverCrashes uint64
	// BrowserCrashes counts browser disconnects the pool did not cause,
	// remote connections that dropped included.
	BrowserCrashes uint64
	// PageCrashes counts renderer crashes of context pages.
	PageCrashes uint64
	// OrphansClosed counts browser contexts SweepOrphans closed.
	OrphansClosed uint64
	// Warm is the number of warm contexts ready to be handed out.
	Warm int
	// WarmHits and WarmMisses count NewContext calls with default options
	// served from the warm pool, and not.
	WarmHits, WarmMisses uint64
	// WarmHeld is true while the warm pool is short of Config.Warm and not
	// refilled because Config.MemoryLow says memory is low.
	WarmHeld bool
	// WarmRefillYielding is true while the warm pool's refill waits for
	// live work on the pool's contexts to pause (warm.go).
	WarmRefillYielding bool
	// WarmRefillsForced counts the refills that stopped waiting for live
	// work after Config.WarmRefillMaxDelay and went ahead beside it.
	WarmRefillsForced uint64
	// Sources describes each browser source: "local" first (unless
	// Config.NoLocal), then each Config.Connect endpoint in order.
	Sources []SourceStats
	// Blocked counts requests aborted by contexts' BlockOptions.
	Blocked uint64
	// PolicyDenied counts requests refused by Config.DenyPrivateNetworks.
	PolicyDenied uint64
}

// Processes are the pids of the pool's processes, for tests and operators.
// A pid is 0 (or missing) when it could not be found. Remote browsers have
// none here.
type Processes struct {
	Driver   int
	Browsers []int
}

// Pool is a pool of browsers, launched by one Playwright driver or reached
// through it from remote browser servers, handing out isolated browser
// contexts. Its methods are safe for concurrent use.
type Pool struct {
	cfg Config
	log *zap.Logger

	// launchSem is held by the one goroutine adding a browser because none
	// has room (a launch, or a connection to a remote source); waiters
	// honour their ctx.
	launchSem chan struct{}
	// driverSem is held by the one goroutine starting a driver.
	driverSem chan struct{}
	// connecting counts connects in flight (source.go); Close waits for
	// them before it stops the driver they go through.
	connecting sync.WaitGroup

	local   *source   // nil when Config.NoLocal
	remotes []*source // one per Config.Connect endpoint

	// wg counts every goroutine the pool starts (see spawn).
	wg sync.WaitGroup

	mu        sync.Mutex
	closed    bool          // Close began: no new contexts
	closing   chan struct{} // closed when Close begins
	draining  bool          // Close waits for wg: spawn runs inline
	closeDone chan struct{} // closed when Close has finished
	closeErr  error
	inst      *instance             // the driver new browsers go to; nil when none runs
	instances []*instance           // every driver not yet stopped
	started   int                   // drivers started
	browsers  []*browser            // live browsers, retired ones included
	contexts  map[*Context]struct{} // handed out and not yet closed
	stats     Stats                 // counters only; gauges are computed
	now       func() time.Time      // the clock of browser ages; tests move it
	blocked   atomic.Uint64         // Stats.Blocked, bumped by route handlers (block.go)
	egress    *egressPolicy         // nil unless Config.DenyPrivateNetworks (policy.go)
	denied    atomic.Uint64         // Stats.PolicyDenied, bumped by the egress proxies

	warm         []*Context    // made ahead with default options, nobody's yet (warm.go)
	warmCreating int           // warm contexts being made
	warmKick     chan struct{} // wakes refillWarm; buffer of one
	warmHeld     bool          // refillWarm holds off: the pool is short and memory is low
	warmYielding bool          // refillWarm waits for live work to pause

	// Live work, which the warm refill yields to (warm.go): page commands
	// in flight, NewContext calls making a context, and warm contexts
	// handed out whose first command has not finished.
	live     atomic.Int64
	liveLast atomic.Int64  // when live work last ended: nanoseconds since epoch
	liveIdle chan struct{} // buffer of one: live fell to zero
	epoch    time.Time     // start of the monotonic clock of liveLast
}

// instance is one Playwright driver process and its connection.
type instance struct {
	pw       *playwright.Playwright
	driver   proc
	stop     chan struct{} // closed to end the driver watch
	stopOnce sync.Once
	stopped  chan struct{} // closed once Stop has returned (or the driver was killed)
	stopCall sync.Once     // playwright-go's Stop is not safe to call twice at once
	dead     bool          // under Pool.mu: it died under us
	stopping bool          // under Pool.mu: we are stopping it
	remotes  []*browser    // under Pool.mu: remote connections made through it
}

func (in *instance) endWatch() { in.stopOnce.Do(func() { close(in.stop) }) }

// browser is one browser: a local process, or a connection to a remote
// browser server.
type browser struct {
	src      *source
	name     string // "local-3", or the endpoint and connection ordinal
	inst     *instance
	b        playwright.Browser
	proc     proc          // zero for a remote browser
	born     time.Time     // launched or connected
	gone     chan struct{} // closed once it has disconnected or been dropped
	contexts map[*Context]struct{}
	reserved int // NewContext calls creating a context on it
	created  int // contexts created on it, warm ones included
	// retiring says why it was retired by use or age (empty while it is
	// not): it takes no new contexts, serves the ones it has, and is
	// closed when the last one closes.
	retiring string
	killed   bool // a context close hung: no new contexts, being killed
	closing  bool // the pool closes it: its disconnect is no crash
	dropped  bool // out of Pool.browsers
	// disconnected: Playwright reported the disconnect (a remote
	// connection then needs no sever).
	disconnected bool
}

// NewPool checks cfg, starts the Playwright driver, connects to the remote
// sources and launches the first local browser, so that a broken setup
// fails here rather than at the first lease. A remote source that cannot be
// reached is logged and retried in the background, unless no source at all
// is up: then NewPool fails, naming the endpoints.
func NewPool(ctx context.Context, cfg Config) (*Pool, error) {
	if err := Check(cfg); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Args = slices.Clone(cfg.Args)
	cfg.Connect = slices.Clone(cfg.Connect)
	p := &Pool{
		cfg:       cfg,
		log:       cfg.Logger,
		launchSem: make(chan struct{}, 1),
		driverSem: make(chan struct{}, 1),
		now:       time.Now,
		closing:   make(chan struct{}),
		closeDone: make(chan struct{}),
		contexts:  map[*Context]struct{}{},
		warmKick:  make(chan struct{}, 1),
		liveIdle:  make(chan struct{}, 1),
		epoch:     time.Now(),
	}
	p.liveLast.Store(-int64(warmRefillQuiet)) // no live work yet: quiet from the start
	p.egress = newEgressPolicy(cfg, &p.denied)
	if cfg.local() {
		p.local = &source{name: localSourceName}
	}
	for _, ep := range cfg.Connect {
		p.remotes = append(p.remotes, &source{name: ep, endpoint: ep, kick: make(chan struct{}, 1)})
	}
	fail := func(err error) (*Pool, error) {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.CloseTimeout+cfg.LaunchTimeout)
		defer cancel()
		_ = p.Close(closeCtx) // the start error says more
		return nil, err
	}
	connectErrs, err := p.connectAll(ctx)
	if err != nil {
		return fail(err)
	}
	if p.local != nil {
		// Even beside a remote source with room: a broken local setup
		// must fail here.
		if err := p.launch(ctx, true); err != nil {
			return fail(err)
		}
	}
	up := p.local != nil
	for i, err := range connectErrs {
		if err == nil {
			up = true
		} else if p.local != nil || len(p.remotes) > 1 {
			p.log.Warn("browser source not connected at start; retrying in the background",
				zap.String("endpoint", p.remotes[i].endpoint), zap.Error(err))
		}
	}
	if !up {
		return fail(fmt.Errorf("no browser source connected: %w", errors.Join(connectErrs...)))
	}
	for i, src := range p.remotes {
		p.spawn(func() { p.keepConnected(src, connectErrs[i] != nil) })
	}
	if cfg.Warm > 0 {
		p.spawn(p.refillWarm)
		p.mu.Lock()
		p.kickWarmLocked()
		p.mu.Unlock()
	}
	return p, nil
}

// connectAll connects to every remote source at once and returns each
// one's error; its own error is ctx's.
func (p *Pool) connectAll(ctx context.Context) ([]error, error) {
	errs := make([]error, len(p.remotes))
	done := make(chan struct{}, len(p.remotes))
	for i, src := range p.remotes {
		p.spawn(func() {
			errs[i] = p.connect(src)
			done <- struct{}{}
		})
	}
	for range p.remotes {
		select {
		case <-done:
		case <-ctx.Done():
			return nil, ctxError("connect browser sources", ctx)
		}
	}
	return errs, nil
}

// spawn runs f in a goroutine the pool waits for on Close; once Close is
// draining, f runs inline (every Playwright call returns at once by then).
func (p *Pool) spawn(f func()) {
	p.mu.Lock()
	if p.draining {
		p.mu.Unlock()
		f()
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		f()
	}()
}

// within runs f in a pool goroutine and waits until it returns, d passes or
// cancel is closed (nil: never). done is false when f still runs.
func (p *Pool) within(cancel <-chan struct{}, d time.Duration, f func() error) (done bool, err error) {
	ch := make(chan error, 1)
	p.spawn(func() { ch <- f() })
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-ch:
		return true, err
	case <-t.C:
	case <-cancel:
	}
	return false, nil
}

// Stats returns a snapshot of the pool's gauges and counters.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Browsers = len(p.browsers)
	s.Contexts = len(p.contexts)
	s.Warm = len(p.warm)
	s.WarmHeld = p.warmHeld
	s.WarmRefillYielding = p.warmYielding
	for _, br := range p.browsers {
		if br.retiring != "" || br.killed {
			s.Retiring++
		}
	}
	s.Sources = p.sourceStatsLocked()
	s.Blocked = p.blocked.Load()
	s.PolicyDenied = p.denied.Load()
	return s
}

// Contexts lists the contexts handed out by NewContext and not yet closed.
func (p *Pool) Contexts() []*Context {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Context, 0, len(p.contexts))
	for c := range p.contexts {
		out = append(out, c)
	}
	return out
}

// SweepOrphans closes the browser contexts that exist in a browser but that
// the pool does not know: none should, so each one is a leak the pool's
// books missed. Browsers with a context being created are skipped this
// time. It returns how many it closed.
func (p *Pool) SweepOrphans(ctx context.Context) int {
	type orphan struct {
		br *browser
		bc playwright.BrowserContext
	}
	var orphans []orphan
	p.mu.Lock()
	for _, br := range p.browsers {
		if br.reserved > 0 || br.closing || br.killed || br.dropped {
			continue
		}
		known := make(map[playwright.BrowserContext]bool, len(br.contexts))
		for c := range br.contexts {
			known[c.bc] = true
		}
		for _, bc := range br.b.Contexts() {
			if !known[bc] {
				orphans = append(orphans, orphan{br, bc})
			}
		}
	}
	p.mu.Unlock()
	closed := 0
	for _, o := range orphans {
		limit := p.cfg.CloseTimeout
		if dl, ok := ctx.Deadline(); ok {
			limit = min(limit, time.Until(dl))
		}
		done, err := p.within(ctx.Done(), limit, func() error { return o.bc.Close() })
		if done && err == nil {
			closed++
		}
		p.log.Warn("closed an orphan browser context", zap.String("browser", o.br.name),
			zap.Bool("in_time", done), zap.Error(err))
	}
	p.mu.Lock()
	p.stats.OrphansClosed += uint64(closed)
	p.mu.Unlock()
	return closed
}

// Processes returns the pids of the current driver and of the live local
// browsers.
func (p *Pool) Processes() Processes {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out Processes
	if p.inst != nil {
		out.Driver = p.inst.driver.pid
	}
	for _, br := range p.browsers {
		if !br.src.remote() {
			out.Browsers = append(out.Browsers, br.proc.pid)
		}
	}
	return out
}

// NewContext opens a new isolated browser context with one page, on a
// browser with room, launching one (and restarting the driver) if needed.
func (p *Pool) NewContext(ctx context.Context, opts ContextOptions) (*Context, error) {
	pwOpts, err := opts.playwright()
	if err != nil {
		return nil, err
	}
	if err := p.egress.checkOptions(opts); err != nil {
		return nil, err
	}
	if p.cfg.Warm > 0 && opts.isDefault() {
		if c := p.takeWarm(); c != nil {
			return p.installBlock(ctx, c, opts.Block)
		}
	}
	// Making a context for a caller is live work: the warm refill waits.
	p.liveBegin()
	defer p.liveEnd()
	for attempt := 1; ; attempt++ {
		c, err := p.newContext(ctx, pwOpts)
		if err == nil {
			return p.installBlock(ctx, c, opts.Block)
		}
		// A browser or driver that died under us is replaced by the next
		// attempt; anything else is the caller's to see.
		retry := errors.Is(err, ErrBrowserCrashed) || errors.Is(err, ErrDriverCrashed)
		if !retry || attempt == newContextAttempts || ctx.Err() != nil {
			return nil, err
		}
		p.log.Info("new context: retrying on another browser", zap.Error(err))
	}
}

func (p *Pool) newContext(ctx context.Context, opts playwright.BrowserNewContextOptions) (*Context, error) {
	br, err := p.reserve(ctx, true)
	if err != nil {
		return nil, err
	}
	return p.open(ctx, br, opts)
}

// reserve returns a browser with a slot reserved for the caller, launching
// one when none has room. A lease's reservation (evict) first closes warm
// contexts that stand in its way under MaxContexts, in the same locked step.
func (p *Pool) reserve(ctx context.Context, evict bool) (*browser, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, fmt.Errorf("new context: %w", ErrClosed)
		}
		if evict {
			p.closeLater(p.makeRoomLocked())
		}
		if br := p.pickLocked(); br != nil {
			br.reserved++
			p.mu.Unlock()
			return br, nil
		}
		p.mu.Unlock()
		if err := p.launch(ctx, false); err != nil {
			return nil, err
		}
	}
}

// pickLocked returns a browser with room for one more context, retiring
// the browsers past BrowserMaxAge on the way. It takes the least loaded
// source, so that contexts spread over the remote servers and the local
// launcher, and within it the fullest browser, so that contexts pack onto
// few processes and an idle one stays idle.
func (p *Pool) pickLocked() *browser {
	p.retireAgedLocked()
	load := map[*source]int{}
	for _, br := range p.browsers {
		if br.usableLocked() {
			load[br.src] += br.loadLocked()
		}
	}
	var best *browser
	for _, br := range p.browsers {
		if !br.usableLocked() || !p.hasRoomLocked(br) {
			continue
		}
		switch {
		case best == nil:
			best = br
		case load[br.src] != load[best.src]:
			if load[br.src] < load[best.src] {
				best = br
			}
		case br.loadLocked() > best.loadLocked():
			best = br
		}
	}
	return best
}

// loadLocked counts the contexts on br and being made there.
func (br *browser) loadLocked() int { return len(br.contexts) + br.reserved }

// hasRoomLocked reports whether br may take one more context, under
// ContextsPerBrowser and BrowserMaxContexts.
func (p *Pool) hasRoomLocked(br *browser) bool {
	if br.loadLocked() >= p.cfg.ContextsPerBrowser {
		return false
	}
	return p.cfg.BrowserMaxContexts <= 0 || br.created+br.reserved < p.cfg.BrowserMaxContexts
}

func (br *browser) usableLocked() bool {
	return br.retiring == "" && !br.killed && !br.closing && !br.dropped && !br.inst.dead && !br.inst.stopping
}

func (br *browser) idleLocked() bool {
	return br.usableLocked() && len(br.contexts) == 0 && br.reserved == 0
}

// launch adds one browser to the pool, unless another launch already made
// room: a local one when the pool launches its own, else one more
// connection to the least loaded remote source that is up. first launches
// a local browser regardless. It returns when the browser is up or ctx
// ends; a launch cut short by ctx still completes and leaves its browser
// idle in the pool.
func (p *Pool) launch(ctx context.Context, first bool) error {
	select {
	case p.launchSem <- struct{}{}:
	case <-ctx.Done():
		return ctxError("launch browser", ctx)
	case <-p.closing:
		return fmt.Errorf("launch browser: %w", ErrClosed)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.launchSem
		return fmt.Errorf("launch browser: %w", ErrClosed)
	}
	if !first && p.pickLocked() != nil {
		p.mu.Unlock()
		<-p.launchSem
		return nil
	}
	src := p.growSourceLocked()
	if src == nil {
		err := p.noSourceErrorLocked()
		p.mu.Unlock()
		<-p.launchSem
		return err
	}
	p.mu.Unlock()
	done := make(chan error, 1)
	p.spawn(func() {
		defer func() { <-p.launchSem }()
		if src.remote() {
			done <- p.connect(src)
		} else {
			done <- p.launchLocal()
		}
	})
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctxError("launch browser", ctx)
	}
}

// chromiumArgs are the flags every local Chromium is launched with (before
// Config.Args, which may override them).
//
// --disable-features: headless Chromium opens a window per context's first
// page, and each window made a renderer process of its own for the omnibox
// popup (chrome://omnibox-popup.top-chrome), about 50 MiB of PSS per
// context for browser UI that headless never shows: half of what a lease
// cost. Turning it off changes nothing a page can see or share; contexts
// still never share a renderer (Chromium keeps each browser context's
// renderers apart). Chromium keeps only the last --disable-features, and
// Playwright passes its own first, so ours repeats Playwright's list
// (playwrightDisabledFeatures): without it, features Playwright relies on
// (DeferRendererTasksAfterInput for waiting after a click, HttpsUpgrades,
// ...) would be back on. One in Config.Args must name all of these too.
var chromiumArgs = []string{
	"--disable-gpu", "--disable-quic", "--disable-background-networking",
	"--disable-component-update", "--disable-sync", "--no-first-run",
	"--disable-features=" + strings.Join(append(slices.Clone(playwrightDisabledFeatures),
		"WebUIOmniboxPopup", "WebUIOmniboxAimPopup", "WebUIOmniboxFullPopup"), ","),
}

// playwrightDisabledFeatures are the features the pinned driver
// (playwright-core 1.52.0, lib/server/chromium/chromiumSwitches.js)
// disables; a test checks the list against the installed driver.
var playwrightDisabledFeatures = []string{
	"AcceptCHFrame", "AutoExpandDetailsElement", "AvoidUnnecessaryBeforeUnloadCheckSync",
	"CertificateTransparencyComponentUpdater", "DeferRendererTasksAfterInput", "DestroyProfileOnBrowserClose",
	"DialMediaRouteProvider", "ExtensionManifestV2Disabled", "GlobalMediaControls", "HttpsUpgrades",
	"ImprovedCookieControls", "LazyFrameLoading", "LensOverlay", "MediaRouter", "PaintHolding",
	"ThirdPartyStoragePartitioning", "Translate",
}

// ChromiumArgs returns the flags the pool launches local Chromium with, for
// programs (the benchmark) that launch Chromium beside it the same way.
func ChromiumArgs() []string { return slices.Clone(chromiumArgs) }

// launchAttempts is how many times launchLocal tries, launchBackoff the
// pause before the second try (doubled for each one after). A Chromium that
// exits while it starts, seen once in hundreds of CI runs on a loaded
// machine, must not fail a broker's start or a lease's acquire; a broken
// setup (no executable, bad flags) fails every attempt, and so costs
// a second more to report. A launch that times out is not tried again.
const (
	launchAttempts = 3
	launchBackoff  = 250 * time.Millisecond
)

// errLaunchTimeout marks a launch (or driver start) that ran out of
// LaunchTimeout. It is not ErrTimeout: to the client a launch failure is
// the backend being unavailable, whatever the cause.
var errLaunchTimeout = errors.New("timed out")

// launchLocal runs launchBrowser until it succeeds, launchAttempts times,
// or the pool closes. launchBrowser logs each failure whole, with the
// browser's own output that Playwright appends to the error.
func (p *Pool) launchLocal() error {
	backoff := launchBackoff
	for attempt := 1; ; attempt++ {
		err := p.launchBrowser()
		// A launch that timed out is not tried again: it held launchSem
		// for LaunchTimeout already, and every acquire waits behind it.
		if err == nil || errors.Is(err, ErrClosed) || errors.Is(err, errLaunchTimeout) || attempt == launchAttempts {
			return err
		}
		p.log.Warn("retrying the browser launch", zap.Int("attempt", attempt+1), zap.Int("of", launchAttempts),
			zap.Duration("after", backoff))
		select {
		case <-time.After(backoff):
		case <-p.closing:
			return err
		}
		backoff *= 2
	}
}

// launchBrowser starts the driver if none runs, then launches a browser
// and adds it to the pool. The caller holds launchSem, so the browser is
// the one new child of the driver.
func (p *Pool) launchBrowser() error {
	inst, err := p.driver()
	if err != nil {
		return err
	}

	var before map[proc]string
	if inst.driver.pid > 0 {
		before = children(inst.driver.pid)
	}
	opts := playwright.BrowserTypeLaunchOptions{
		Headless: playwright.Bool(true),
		Args:     p.cfg.Args,
		Timeout:  playwright.Float(float64(p.cfg.LaunchTimeout.Milliseconds())),
		// The broker shuts down on its own terms: a Ctrl-C must not make
		// the driver close the browsers under live leases.
		HandleSIGINT:  playwright.Bool(false),
		HandleSIGTERM: playwright.Bool(false),
		HandleSIGHUP:  playwright.Bool(false),
	}
	what := p.cfg.BrowserType
	if p.cfg.BrowserType == Chromium {
		opts.ExecutablePath = &p.cfg.ExecutablePath
		opts.Args = append(slices.Clone(chromiumArgs), p.cfg.Args...)
		if p.egress != nil {
			// Last, so that it wins: WebRTC may send no UDP outside the
			// egress proxy (policy.go).
			opts.Args = append(opts.Args, "--webrtc-ip-handling-policy=disable_non_proxied_udp")
		}
		what += " " + p.cfg.ExecutablePath
	}
	start := time.Now()
	b, err := p.browserType(inst).Launch(opts)
	if err != nil {
		p.log.Warn("browser launch failed", zap.String("browser", what), zap.String("error", fullMessage(err)))
		if isConnectionError(err) {
			p.driverDied(inst, "launch failed: "+shortMessage(err))
			return fmt.Errorf("%w: %w: %s", ErrLaunch, ErrDriverCrashed, shortMessage(err))
		}
		if errors.Is(err, playwright.ErrTimeout) {
			return fmt.Errorf("%w: %s: %w: %s", ErrLaunch, what, errLaunchTimeout, shortMessage(err))
		}
		return fmt.Errorf("%w: %s: %s", ErrLaunch, what, shortMessage(err))
	}
	var bproc proc
	if inst.driver.pid > 0 {
		bproc = newChild(before, children(inst.driver.pid), "")
	}
	br := &browser{src: p.local, inst: inst, b: b, proc: bproc, gone: make(chan struct{}), contexts: map[*Context]struct{}{}}
	b.OnDisconnected(func(playwright.Browser) { p.browserDisconnected(br) })

	p.mu.Lock()
	if p.closed || inst.dead || inst.stopping {
		p.mu.Unlock()
		p.closeBrowser(br)
		if p.isClosed() {
			return fmt.Errorf("launch browser: %w", ErrClosed)
		}
		return fmt.Errorf("launch browser: %w", ErrDriverCrashed)
	}
	if br.dropped { // disconnected before it was in the pool
		p.mu.Unlock()
		return fmt.Errorf("%w: %w: browser disconnected at once", ErrLaunch, ErrBrowserCrashed)
	}
	p.local.opened++
	br.name = fmt.Sprintf("local-%d", p.local.opened)
	br.born = p.now()
	p.browsers = append(p.browsers, br)
	p.stats.Launches++
	p.mu.Unlock()
	if !b.IsConnected() { // died before the handler was in place
		p.browserDisconnected(br)
	}
	p.log.Info("browser launched", zap.String("browser", br.name), zap.Int("pid", bproc.pid),
		zap.Duration("took", time.Since(start)))
	return nil
}

func (p *Pool) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// driver returns the pool's driver, starting one if none runs.
func (p *Pool) driver() (*instance, error) {
	select {
	case p.driverSem <- struct{}{}:
	case <-p.closing:
		return nil, fmt.Errorf("start driver: %w", ErrClosed)
	}
	defer func() { <-p.driverSem }()
	p.mu.Lock()
	inst := p.inst
	p.mu.Unlock()
	if inst != nil {
		return inst, nil
	}
	return p.startDriver()
}

// startDriver runs a new Playwright driver and makes it the pool's. The
// caller holds driverSem.
func (p *Pool) startDriver() (*instance, error) {
	runMu.Lock()
	defer runMu.Unlock()
	self := os.Getpid()
	before := children(self)
	type result struct {
		pw  *playwright.Playwright
		err error
	}
	ch := make(chan result, 1)
	p.spawn(func() {
		pw, err := playwright.Run(&playwright.RunOptions{
			DriverDirectory:     p.cfg.DriverDir,
			SkipInstallBrowsers: true,
			Verbose:             false,
		})
		ch <- result{pw, err}
	})
	var r result
	select {
	case r = <-ch:
	case <-time.After(p.cfg.LaunchTimeout):
		// Run has no timeout of its own: kill the driver it started, which
		// makes it return.
		driver := newChild(before, children(self), "run-driver")
		driver.kill()
		p.spawn(func() {
			if r := <-ch; r.err == nil {
				_ = r.pw.Stop()
			}
		})
		return nil, fmt.Errorf("%w: %w: playwright driver did not start within %s", ErrLaunch, errLaunchTimeout, p.cfg.LaunchTimeout)
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: playwright driver in %s: %s", ErrLaunch, p.cfg.DriverDir, shortMessage(r.err))
	}
	inst := &instance{pw: r.pw, stop: make(chan struct{}), stopped: make(chan struct{})}
	inst.driver = newChild(before, children(self), "run-driver")
	if inst.driver.pid == 0 {
		p.log.Warn("playwright driver pid not found; driver deaths are seen from call errors only")
	}

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.stopDriver(inst)
		return nil, fmt.Errorf("start driver: %w", ErrClosed)
	}
	p.started++
	if p.started > 1 {
		p.stats.DriverRestarts++
	}
	p.inst = inst
	p.instances = append(p.instances, inst)
	p.mu.Unlock()

	if inst.driver.pid > 0 {
		p.spawn(func() { p.watchDriver(inst) })
	}
	p.log.Info("playwright driver started", zap.Int("pid", inst.driver.pid))
	return inst, nil
}

// watchDriver notices the driver's death even when no call is pending.
func (p *Pool) watchDriver(inst *instance) {
	t := time.NewTicker(driverWatchInterval)
	defer t.Stop()
	for {
		select {
		case <-inst.stop:
			return
		case <-t.C:
			if !inst.driver.alive() {
				p.driverDied(inst, "driver process exited")
				return
			}
		}
	}
}

// driverDied handles the death of a driver: every context on its browsers
// is lost, and the next launch starts a new driver.
func (p *Pool) driverDied(inst *instance, why string) {
	p.mu.Lock()
	if inst.dead || inst.stopping {
		p.mu.Unlock()
		return
	}
	inst.dead = true
	p.stats.DriverCrashes++
	if p.inst == inst {
		p.inst = nil
	}
	var lost []*Context
	var dead []*browser
	for _, br := range p.browsers {
		if br.inst != inst {
			continue
		}
		dead = append(dead, br)
		for c := range br.contexts {
			lost = append(lost, c)
		}
	}
	for _, br := range dead {
		if br.src.remote() && !br.closing {
			br.src.disconnects++
			br.src.lastErr = "playwright driver died: " + why
		}
		p.dropLocked(br)
	}
	p.mu.Unlock()

	p.log.Error("playwright driver died", zap.Int("pid", inst.driver.pid), zap.String("why", why),
		zap.Int("browsers", len(dead)), zap.Int("contexts_lost", len(lost)))
	err := fmt.Errorf("%w: %s", ErrDriverCrashed, why)
	for _, c := range lost {
		c.markLost(err)
	}
	p.spawn(func() {
		p.stopDriver(inst) // which severs the remote connections
		// Chromium exits when its pipe to the driver closes; make sure.
		for _, br := range dead {
			br.proc.kill()
		}
	})
}

// stopDriver stops a driver's connection and process, killing it when Stop
// hangs, and forgets it.
func (p *Pool) stopDriver(inst *instance) {
	p.mu.Lock()
	inst.stopping = true
	if p.inst == inst {
		p.inst = nil
	}
	p.mu.Unlock()
	inst.endWatch()
	inst.stopCall.Do(func() {
		if done, _ := p.within(nil, p.cfg.CloseTimeout, inst.pw.Stop); !done {
			p.log.Warn("playwright driver did not stop; killing it", zap.Int("pid", inst.driver.pid))
			inst.driver.kill()
		}
		close(inst.stopped)
	})
	<-inst.stopped
	p.mu.Lock()
	var cut []*browser
	for _, br := range inst.remotes {
		if !br.disconnected {
			cut = append(cut, br)
		}
	}
	inst.remotes = nil
	p.instances = slices.DeleteFunc(p.instances, func(i *instance) bool { return i == inst })
	p.mu.Unlock()
	// A remote connection the driver did not close before it stopped
	// would never learn it is gone.
	for _, br := range cut {
		if !sever(br.b) {
			p.log.Error("could not end a remote browser's connection", zap.String("browser", br.name))
		}
	}
}

// dropLocked takes br out of the pool. A remote source that lost a
// connection is woken to see whether it needs another.
func (p *Pool) dropLocked(br *browser) {
	if br.dropped {
		return
	}
	br.dropped = true
	close(br.gone)
	p.browsers = slices.DeleteFunc(p.browsers, func(b *browser) bool { return b == br })
	br.src.kickLocked()
}

// browserDisconnected runs (on playwright-go's dispatch goroutine) when a
// browser's connection ends. Unless the pool closed it, that is a crash and
// its contexts are lost.
func (p *Pool) browserDisconnected(br *browser) {
	p.mu.Lock()
	br.disconnected = true
	br.inst.remotes = slices.DeleteFunc(br.inst.remotes, func(b *browser) bool { return b == br })
	if br.dropped {
		p.mu.Unlock()
		return
	}
	crashed := !br.closing && !br.killed
	var lost []*Context
	if crashed {
		p.stats.BrowserCrashes++
		for c := range br.contexts {
			lost = append(lost, c)
		}
		if br.src.remote() {
			br.src.disconnects++
			br.src.lastErr = "disconnected"
		}
	}
	p.dropLocked(br)
	p.mu.Unlock()
	if !crashed {
		return
	}
	p.log.Error("browser disconnected", zap.String("browser", br.name), zap.Int("pid", br.proc.pid),
		zap.Int("contexts_lost", len(lost)))
	err := fmt.Errorf("%w: browser process disconnected", ErrBrowserCrashed)
	if br.src.remote() {
		err = fmt.Errorf("%w: remote browser %s disconnected", ErrBrowserCrashed, br.src.endpoint)
	}
	for _, c := range lost {
		c.markLost(err)
	}
}

// closeBrowser closes a browser, killing it when the close hangs, and waits
// until it is gone. A remote browser is disconnected, never killed: the
// server is not ours.
func (p *Pool) closeBrowser(br *browser) {
	p.mu.Lock()
	br.closing = true
	p.mu.Unlock()
	if done, _ := p.within(nil, p.cfg.CloseTimeout, func() error { return br.b.Close() }); !done {
		p.log.Warn("browser close hung; killing it", zap.String("browser", br.name), zap.Int("pid", br.proc.pid))
		br.proc.kill()
	}
	p.awaitGone(br)
}

// retire takes a browser whose context close hung out of service: its other
// contexts are lost and its process is killed.
func (p *Pool) retire(br *browser, closing *Context) {
	p.mu.Lock()
	if br.killed || br.dropped {
		p.mu.Unlock()
		return
	}
	br.killed = true
	if br.retiring == "" { // counted once per browser
		p.stats.Retired++
	}
	br.src.kickLocked()
	var lost []*Context
	for c := range br.contexts {
		if c != closing {
			lost = append(lost, c)
		}
	}
	p.mu.Unlock()
	p.log.Error("context close hung; retiring its browser", zap.String("browser", br.name),
		zap.String("reason", retiredHungClose), zap.Int("pid", br.proc.pid), zap.Int("contexts_lost", len(lost)))
	err := fmt.Errorf("%w: browser retired after a hung context close", ErrBrowserCrashed)
	for _, c := range lost {
		c.markLost(err)
	}
	p.spawn(func() {
		if br.proc.pid > 0 {
			br.proc.kill()
		} else if done, _ := p.within(nil, p.cfg.CloseTimeout, func() error { return br.b.Close() }); !done {
			p.log.Error("retired browser pid unknown and close hung; it may linger until the driver stops")
		}
		p.awaitGone(br)
	})
}

// awaitGone waits (up to CloseTimeout) for br's disconnect, then drops it
// from the pool anyway.
func (p *Pool) awaitGone(br *browser) {
	select {
	case <-br.gone:
	case <-time.After(p.cfg.CloseTimeout):
		p.log.Warn("browser did not disconnect", zap.String("browser", br.name), zap.Int("pid", br.proc.pid))
		p.mu.Lock()
		p.dropLocked(br)
		p.mu.Unlock()
	}
	waitExit(p.cfg.CloseTimeout, br.proc)
}

// open creates a context on br, whose slot the caller reserved. If ctx ends
// first, the context is still created and then closed in the background.
func (p *Pool) open(ctx context.Context, br *browser, opts playwright.BrowserNewContextOptions) (*Context, error) {
	type result struct {
		c   *Context
		err error
	}
	var (
		mu        sync.Mutex
		abandoned bool
	)
	ch := make(chan result, 1)
	p.spawn(func() {
		c, err := p.create(br, opts)
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			if c != nil {
				p.spawn(func() { _ = c.Close(context.Background()) })
			}
			return
		}
		ch <- result{c, err}
	})
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		if err := p.handOut(r.c); err != nil {
			_ = r.c.Close(context.Background())
			return nil, err
		}
		return r.c, nil
	case <-ctx.Done():
		mu.Lock()
		abandoned = true
		select {
		case r := <-ch: // finished just now
			if r.c != nil {
				p.spawn(func() { _ = r.c.Close(context.Background()) })
			}
		default:
		}
		mu.Unlock()
		return nil, ctxError("new context", ctx)
	}
}

// create makes the BrowserContext and its page and registers the Context on
// br. On failure it gives the reservation back.
func (p *Pool) create(br *browser, opts playwright.BrowserNewContextOptions) (*Context, error) {
	var egress *egressProxy // the context's own proxy (policy.go)
	var err error
	if p.egress != nil {
		if egress, err = p.egress.listen(); err != nil {
			err = fmt.Errorf("new context: %w", err)
		} else {
			opts.Proxy = egress.proxyOption()
		}
	}
	var bc playwright.BrowserContext
	if err == nil {
		if bc, err = br.b.NewContext(opts); err != nil {
			err = p.createError(br, err)
			egress.close(p.cfg.CloseTimeout)
		}
	}
	if err != nil {
		p.mu.Lock()
		br.reserved--
		p.closeIfDrainedLocked(br)
		p.mu.Unlock()
		return nil, err
	}
	c := newContext(p, br, bc)
	c.egress = egress
	p.mu.Lock()
	br.reserved--
	br.created++
	br.contexts[c] = struct{}{}
	if limit := p.cfg.BrowserMaxContexts; limit > 0 && br.created >= limit && br.retiring == "" && !br.killed && !br.dropped {
		p.retireLocked(br, retiredMaxContexts)
	}
	dropped, dead := br.dropped, br.inst.dead
	p.mu.Unlock()
	if dropped || dead {
		// The browser died between NewContext and now, and its crash
		// handler did not see c.
		lostErr := fmt.Errorf("%w: browser process disconnected", ErrBrowserCrashed)
		if dead {
			lostErr = fmt.Errorf("%w: driver died", ErrDriverCrashed)
		}
		c.markLost(lostErr)
	}
	page, err := bc.NewPage()
	if err != nil {
		err = p.createError(br, err)
		_ = c.Close(context.Background())
		return nil, err
	}
	c.install(page)
	return c, nil
}

// createError classifies a failure to create a context or its page.
func (p *Pool) createError(br *browser, err error) error {
	msg := shortMessage(err)
	if isConnectionError(err) {
		p.driverDied(br.inst, "call failed: "+msg)
		return fmt.Errorf("new context: %w: %s", ErrDriverCrashed, msg)
	}
	if errors.Is(err, playwright.ErrTargetClosed) {
		return fmt.Errorf("new context: %w: %s", ErrBrowserCrashed, msg)
	}
	if pe := (*playwright.Error)(nil); errors.As(err, &pe) {
		// What Playwright refuses here is the options: some (time zone,
		// locale, proxy) it checks only when it creates the context or
		// applies them to the page.
		return fmt.Errorf("new context: %w: %s", ErrInvalidArgument, msg)
	}
	return fmt.Errorf("new context: %s", msg)
}

// handOut counts c as the caller's, unless it died while being made.
func (p *Pool) handOut(c *Context) error {
	if err := c.LostErr(); err != nil {
		return fmt.Errorf("new context: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("new context: %w", ErrClosed)
	}
	p.contexts[c] = struct{}{}
	return nil
}

// contextClosed does the pool's part of closing c, once: c leaves its
// browser and the count, a retired browser left with no context is closed,
// and so is a browser left idle beside another idle one of its source.
func (p *Pool) contextClosed(c *Context) {
	br := c.br
	p.mu.Lock()
	delete(p.contexts, c)
	delete(br.contexts, c)
	p.closeIfDrainedLocked(br)
	closeIdle := false
	if !p.closed && br.idleLocked() {
		for _, other := range p.browsers {
			if other != br && other.src == br.src && other.idleLocked() {
				closeIdle = true
				br.closing = true // no new context may pick it
				break
			}
		}
	}
	p.kickWarmLocked() // room may have freed up
	p.mu.Unlock()
	if closeIdle {
		p.log.Info("closing surplus idle browser", zap.String("browser", br.name), zap.Int("pid", br.proc.pid))
		p.spawn(func() { p.closeBrowser(br) })
	}
}

// Close closes every context and browser, stops the driver and waits until
// the pool's goroutines and processes are gone. Contexts still held by
// callers are closed: their commands fail with ErrClosed and their Close
// returns nil. Close is idempotent; later calls wait for the first.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		done := p.closeDone
		p.mu.Unlock()
		select {
		case <-done:
			return p.closeErr
		case <-ctx.Done():
			return ctxError("close pool", ctx)
		}
	}
	p.closed = true
	close(p.closing)
	var all []*Context
	for c := range p.contexts {
		all = append(all, c)
	}
	for _, br := range p.browsers {
		for c := range br.contexts {
			if _, ok := p.contexts[c]; !ok {
				all = append(all, c)
			}
		}
	}
	p.mu.Unlock()

	var errs []error
	var wg sync.WaitGroup
	for _, c := range all {
		wg.Go(func() { _ = c.Close(ctx) })
	}
	wg.Wait()

	// Wait out a launch in flight: it sees closed and undoes itself. So do
	// connects, which need the driver for that.
	select {
	case p.launchSem <- struct{}{}:
	case <-ctx.Done():
		errs = append(errs, ctxError("close pool: wait for launch", ctx))
	}
	connected := make(chan struct{})
	go func() {
		p.connecting.Wait()
		close(connected)
	}()
	select {
	case <-connected:
	case <-ctx.Done():
		errs = append(errs, ctxError("close pool: wait for connects", ctx))
	}

	p.mu.Lock()
	browsers := slices.Clone(p.browsers)
	p.mu.Unlock()
	for _, br := range browsers {
		wg.Go(func() { p.closeBrowser(br) })
	}
	wg.Wait()

	p.mu.Lock()
	insts := slices.Clone(p.instances)
	p.mu.Unlock()
	var procs []proc
	for _, inst := range insts {
		p.stopDriver(inst)
		procs = append(procs, inst.driver)
	}
	for _, br := range browsers {
		procs = append(procs, br.proc)
	}

	p.mu.Lock()
	p.draining = true
	p.mu.Unlock()
	drained := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		errs = append(errs, ctxError("close pool: wait for goroutines", ctx))
	}

	// Stop has reaped the driver; make sure nothing it started outlives us.
	if !waitExit(p.cfg.CloseTimeout, procs...) {
		for _, pr := range procs {
			pr.kill()
		}
		errs = append(errs, errors.New("close pool: processes had to be killed"))
	}
	p.closeErr = errors.Join(errs...)
	close(p.closeDone)
	p.log.Info("browser pool closed")
	return p.closeErr
}
