package browser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/playwright-community/playwright-go"
	"go.uber.org/zap"
)

// targetClosedSettle is how long a call that failed with "target closed"
// waits for the event saying why (browser disconnect, page crash), which
// may trail the failed call.
const targetClosedSettle = 500 * time.Millisecond

// Context is one isolated Playwright BrowserContext with exactly one page.
// Its commands run one at a time (callers serialize them; a second command
// waits for the first). Close may be called at any time, from any goroutine.
type Context struct {
	pool   *Pool
	br     *browser
	bc     playwright.BrowserContext
	egress *egressProxy // its own proxy under Config.DenyPrivateNetworks; else nil

	cmd       chan struct{} // held by the running command
	lost      chan struct{} // closed once, by markLost
	closing   chan struct{} // closed once, when Close begins
	closeDone chan struct{} // closed once, when Close has finished

	// fresh: handed out from the warm pool and its first command not yet
	// finished; it counts as live work until then (warm.go).
	fresh atomic.Bool

	mu           sync.Mutex
	page         playwright.Page // nil when it closed under us or is being replaced
	lostErr      error
	closeStarted bool
	closeErr     error // set before closeDone is closed
}

func newContext(p *Pool, br *browser, bc playwright.BrowserContext) *Context {
	return &Context{
		pool:      p,
		br:        br,
		bc:        bc,
		cmd:       make(chan struct{}, 1),
		lost:      make(chan struct{}),
		closing:   make(chan struct{}),
		closeDone: make(chan struct{}),
	}
}

// Browser names the browser the context lives in: "local-3" for the third
// browser the pool launched, "ws://host:port/path#2" for the second
// connection to that remote source.
func (c *Context) Browser() string { return c.br.name }

// Lost is closed when the context died under the caller: its browser
// crashed, disconnected or was killed after a hung close, the driver died,
// or its page crashed. It is not closed by Close, nor by the retirement of
// its browser by BrowserMaxContexts or BrowserMaxAge.
func (c *Context) Lost() <-chan struct{} { return c.lost }

// LostErr says why the context was lost: it wraps ErrBrowserCrashed,
// ErrDriverCrashed or ErrPageCrashed. It is nil while the context is not
// lost.
func (c *Context) LostErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lostErr
}

// markLost records why the context died and closes Lost, once. A context
// being closed is not lost: its owner is done with it.
func (c *Context) markLost(err error) {
	c.mu.Lock()
	if c.lostErr != nil || c.closeStarted {
		c.mu.Unlock()
		return
	}
	c.lostErr = err
	close(c.lost)
	c.mu.Unlock()
	c.pool.log.Info("browser context lost", zap.Error(err))
}

// install makes pg the context's page and watches it.
func (c *Context) install(pg playwright.Page) {
	pg.OnCrash(func(crashed playwright.Page) { c.pageCrashed(crashed) })
	pg.OnClose(func(closed playwright.Page) {
		c.mu.Lock()
		if c.page == closed {
			c.page = nil // closed by a script (window.close()); replaced on next use
		}
		c.mu.Unlock()
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeStarted || c.lostErr != nil {
		return // the BrowserContext's close takes the page along
	}
	c.page = pg
}

func (c *Context) pageCrashed(pg playwright.Page) {
	c.mu.Lock()
	current := c.page == pg
	c.mu.Unlock()
	if !current {
		return
	}
	c.pool.mu.Lock()
	c.pool.stats.PageCrashes++
	c.pool.mu.Unlock()
	c.markLost(fmt.Errorf("%w: renderer crashed", ErrPageCrashed))
}

// Close closes the BrowserContext (and its page), making any command in
// flight return at once with ErrClosed. It waits at most until ctx's
// deadline (but at least a short grace) or Config.CloseTimeout, whichever
// is sooner; if the close has not finished by then, the context's browser
// is retired: it takes no new contexts, its other contexts are lost with
// ErrBrowserCrashed, and its process is killed. Close is idempotent; every
// call returns once the first has finished (or its own ctx ends).
func (c *Context) Close(ctx context.Context) error {
	c.mu.Lock()
	first := !c.closeStarted
	if first {
		c.closeStarted = true
		close(c.closing)
	}
	c.mu.Unlock()
	if first {
		limit := c.pool.cfg.CloseTimeout
		if dl, ok := ctx.Deadline(); ok {
			limit = min(limit, max(time.Until(dl), cancelGrace))
		}
		c.pool.spawn(func() { c.close(limit) })
	}
	select {
	case <-c.closeDone:
		return c.closeErr
	case <-ctx.Done():
		return ctxError("close context", ctx)
	}
}

// close does Close's work, once, within limit (and the egress's handlers
// at most cancelGrace more, once the context is closed or retired).
func (c *Context) close(limit time.Duration) {
	deadline := time.Now().Add(limit)
	c.endFresh() // no first command is coming
	var err error
	if done, _ := c.pool.within(nil, limit, func() error { return c.bc.Close() }); !done {
		// An error from a finished close is no concern: the context is gone
		// either way (crashed browser, dead driver).
		c.pool.retire(c.br, c)
		err = fmt.Errorf("close context: %w: close took over %s; browser retired", ErrTimeout, limit)
	}
	c.egress.close(max(time.Until(deadline), cancelGrace))
	c.pool.contextClosed(c)
	c.closeErr = err
	close(c.closeDone)
}

// stateErr is the error of a command on a closed or lost context.
func (c *Context) stateErr(op string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeStarted {
		return fmt.Errorf("%s: %w", op, ErrClosed)
	}
	if c.lostErr != nil {
		return fmt.Errorf("%s: %w", op, c.lostErr)
	}
	return nil
}

// callScope says what a call holds: a page call can be stopped by closing
// the page; a context call (cookies) holds no page and ends by itself.
type callScope int

const (
	pageCall callScope = iota
	contextCall
	// observeCall is a page call made by an observer (the dashboard's
	// thumbnails, ScreenshotOptions.Untouched), not by the lease's
	// holder: it is no live work for the warm refill to yield to, and it
	// does not end a warm context's first command.
	observeCall
)

// errKind selects how a call's Playwright error is classified.
type errKind int

const (
	kindPlain errKind = iota
	kindSelector
	kindNavigate
	kindEvaluate
	kindCookies
)

// callTimeout is the Playwright timeout for a call under ctx: the time left
// until its deadline, or defaultCallTimeout.
func callTimeout(ctx context.Context) (ms float64, fromDeadline bool) {
	dl, ok := ctx.Deadline()
	if !ok {
		return float64(defaultCallTimeout.Milliseconds()), false
	}
	left := time.Until(dl)
	if left <= 0 {
		return 0, true
	}
	return max(1, float64(left)/float64(time.Millisecond)), true
}

// do runs one Playwright call under ctx. The call runs in its own
// goroutine; if ctx ends first and the call does not return within
// cancelGrace, the page is closed under it (which makes it return), a new
// page is opened, and the error wraps ctx.Err().
func (c *Context) do(ctx context.Context, op string, scope callScope, kind errKind,
	call func(pg playwright.Page, timeoutMS float64) error) error {
	select {
	case c.cmd <- struct{}{}:
	case <-ctx.Done():
		return ctxError(op, ctx)
	case <-c.closing:
		return fmt.Errorf("%s: %w", op, ErrClosed)
	}
	defer func() { <-c.cmd }()
	// Live work: the warm refill waits until it pauses (warm.go).
	if scope != observeCall {
		c.pool.liveBegin()
		defer func() {
			c.endFresh()
			c.pool.liveEnd()
		}()
	}
	if err := c.stateErr(op); err != nil {
		return err
	}
	timeout, fromDeadline := callTimeout(ctx)
	if ctx.Err() != nil || timeout <= 0 {
		return ctxError(op, ctx)
	}
	var pg playwright.Page
	if scope != contextCall {
		var err error
		if pg, err = c.currentPage(ctx, op); err != nil {
			return err
		}
	}

	res := make(chan error, 1)
	c.pool.spawn(func() { res <- call(pg, timeout) })
	select {
	case err := <-res:
		return c.classify(op, kind, pg, err, fromDeadline)
	case <-c.lost:
		return c.afterLost(op, pg, res)
	case <-c.closing:
		return c.afterClosing(op, res)
	case <-ctx.Done():
	}

	if kind == kindEvaluate && pg != nil {
		// A script that spins keeps its renderer busy even after its page
		// is closed: interrupt it first (CDP Runtime.terminateExecution).
		c.pool.spawn(func() { _ = c.cdp(pg, "Runtime.terminateExecution") })
	}
	grace := time.NewTimer(cancelGrace)
	defer grace.Stop()
	select {
	case err := <-res:
		if err == nil {
			return nil
		}
		if errors.Is(err, playwright.ErrTimeout) {
			return ctxError(op, ctx)
		}
		return c.classify(op, kind, pg, err, fromDeadline)
	case <-c.lost:
		return c.afterLost(op, pg, res)
	case <-c.closing:
		return c.afterClosing(op, res)
	case <-grace.C:
	}
	if scope == contextCall {
		return ctxError(op, ctx)
	}
	return c.replacePage(op, pg, res, ctxError(op, ctx))
}

// currentPage returns the context's page, opening a new one if a script
// closed it.
func (c *Context) currentPage(ctx context.Context, op string) (playwright.Page, error) {
	c.mu.Lock()
	pg := c.page
	c.mu.Unlock()
	if pg != nil {
		return pg, nil
	}
	if err := c.openPage(ctx.Done()); err != nil {
		if ctx.Err() != nil {
			return nil, ctxError(op, ctx)
		}
		if serr := c.stateErr(op); serr != nil {
			return nil, serr
		}
		return nil, fmt.Errorf("%s: open page: %s", op, shortMessage(err))
	}
	c.mu.Lock()
	pg = c.page
	c.mu.Unlock()
	if pg == nil {
		if err := c.stateErr(op); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s: open page: page closed at once", op)
	}
	return pg, nil
}

var errPageOpenTimeout = errors.New("new page timed out")

// openPage opens and installs a new page, waiting until cancel is closed or
// CloseTimeout at most (the page is installed later if it comes).
func (c *Context) openPage(cancel <-chan struct{}) error {
	done, err := c.pool.within(cancel, c.pool.cfg.CloseTimeout, func() error {
		pg, err := c.bc.NewPage()
		if err != nil {
			return err
		}
		c.install(pg)
		return nil
	})
	if !done {
		return errPageOpenTimeout
	}
	return err
}

// closePage closes pg in the background; the caller waits for what it needs.
func (c *Context) closePage(pg playwright.Page) {
	c.pool.spawn(func() {
		_ = pg.Close(playwright.PageCloseOptions{RunBeforeUnload: playwright.Bool(false)})
	})
}

// replacePage stops a call that outlived its context by closing its page,
// waits for the call to return, and opens a fresh page in the same
// BrowserContext. It returns cause.
func (c *Context) replacePage(op string, old playwright.Page, res <-chan error, cause error) error {
	c.mu.Lock()
	if c.page == old {
		c.page = nil
	}
	c.mu.Unlock()
	c.pool.log.Info("command outlived its context; replacing the page", zap.String("op", op))
	c.closePage(old)
	// The new page opens while the old one closes (a busy renderer takes
	// Chromium's unload timeout, about 500ms, to close).
	opened := make(chan error, 1)
	c.pool.spawn(func() { opened <- c.openPage(nil) })
	t := time.NewTimer(c.pool.cfg.CloseTimeout)
	defer t.Stop()
	select {
	case <-res:
	case <-c.closing:
		return cause // the context's close ends the call
	case <-c.lost:
		return cause
	case <-t.C:
		c.markLost(fmt.Errorf("%w: page did not stop after a cancelled %s", ErrPageCrashed, op))
		return cause
	}
	if err := <-opened; err != nil && c.stateErr(op) == nil {
		c.markLost(fmt.Errorf("%w: could not replace the page after a cancelled %s: %s", ErrPageCrashed, op, shortMessage(err)))
	}
	return cause
}

// afterLost ends a command whose context was lost while it ran. A crashed
// browser or driver ends the call at once; a crashed page may leave it
// hanging, so the page is closed under it.
func (c *Context) afterLost(op string, pg playwright.Page, res <-chan error) error {
	t := time.NewTimer(cancelGrace)
	defer t.Stop()
	select {
	case <-res:
	case <-c.closeDone:
	case <-t.C:
		if pg != nil {
			c.closePage(pg)
		}
		t.Reset(c.pool.cfg.CloseTimeout)
		select {
		case <-res:
		case <-c.closeDone:
		case <-t.C:
		}
	}
	if err := c.stateErr(op); err != nil {
		return err
	}
	return fmt.Errorf("%s: %w", op, ErrClosed) // unreachable: lost stays lost
}

// afterClosing ends a command whose context is being closed: the close
// makes the call return.
func (c *Context) afterClosing(op string, res <-chan error) error {
	select {
	case <-res:
	case <-c.closeDone:
	}
	return fmt.Errorf("%s: %w", op, ErrClosed)
}

// classify turns a call's error into this package's: short, safe, and
// wrapping the right sentinel.
func (c *Context) classify(op string, kind errKind, pg playwright.Page, err error, fromDeadline bool) error {
	if err == nil {
		return nil
	}
	if serr := c.stateErr(op); serr != nil {
		return serr
	}
	if errors.Is(err, ErrTooLarge) {
		return fmt.Errorf("%s: %w", op, err) // the call's own refusal
	}
	msg := shortMessage(err)
	inst := c.br.inst
	if isConnectionError(err) {
		c.pool.driverDied(inst, "call failed: "+msg)
		if serr := c.stateErr(op); serr != nil {
			return serr
		}
		return fmt.Errorf("%s: %w: %s", op, ErrDriverCrashed, msg)
	}
	if errors.Is(err, playwright.ErrTimeout) {
		if fromDeadline {
			return fmt.Errorf("%s: %w: %w", op, ErrTimeout, context.DeadlineExceeded)
		}
		return fmt.Errorf("%s: %w: %s", op, ErrTimeout, msg)
	}
	if errors.Is(err, playwright.ErrTargetClosed) {
		t := time.NewTimer(targetClosedSettle)
		select {
		case <-c.lost:
		case <-c.closing:
		case <-c.br.gone:
		case <-t.C:
		}
		t.Stop()
		if inst.driver.pid > 0 && !inst.driver.alive() {
			c.pool.driverDied(inst, "driver process exited")
		}
		if serr := c.stateErr(op); serr != nil {
			return serr
		}
		select {
		case <-c.br.gone:
			return fmt.Errorf("%s: %w: %s", op, ErrBrowserCrashed, msg)
		default:
		}
		// The page closed under us (a script called window.close()); the
		// next command opens a new one.
		c.mu.Lock()
		if c.page == pg {
			c.page = nil
		}
		c.mu.Unlock()
		return fmt.Errorf("%s: page closed: %s", op, msg)
	}
	if isNavigatedAway(msg) {
		return fmt.Errorf("%s: %w: %s", op, ErrNavigated, msg)
	}
	switch kind {
	case kindSelector:
		// What Playwright refuses once timeouts, closed targets and
		// navigations are told apart above is the request's fault: a bad
		// selector, or an element the command cannot act on (a fill of a
		// heading, an unknown key).
		var pe *playwright.Error
		if errors.As(err, &pe) {
			return fmt.Errorf("%s: %w: %s", op, ErrInvalidArgument, msg)
		}
	case kindNavigate:
		switch {
		case strings.Contains(msg, "net::ERR_UNSAFE_REDIRECT"):
			// A redirect to a scheme a web page may not open (policy.go).
			return fmt.Errorf("%s: %w: %s", op, ErrPolicy, msg)
		case strings.Contains(msg, "net::ERR_"), strings.Contains(msg, "interrupted by another navigation"),
			strings.Contains(msg, "Download is starting"):
			return fmt.Errorf("%s: %w: %s", op, ErrNavigation, msg)
		case strings.Contains(msg, "invalid URL"), strings.Contains(msg, "Invalid url"):
			return fmt.Errorf("%s: %w: %s", op, ErrInvalidArgument, msg)
		}
	case kindEvaluate:
		var pe *playwright.Error
		if errors.As(err, &pe) {
			return fmt.Errorf("%s: %w: %s", op, ErrEvaluation, scriptMessage(pe))
		}
	case kindCookies:
		var pe *playwright.Error
		if errors.As(err, &pe) {
			return fmt.Errorf("%s: %w: %s", op, ErrInvalidArgument, msg)
		}
	}
	return fmt.Errorf("%s: %s", op, msg)
}

func checkSelector(op, selector string) error {
	if strings.TrimSpace(selector) == "" {
		return fmt.Errorf("%s: %w: empty selector", op, ErrInvalidArgument)
	}
	return nil
}

// Navigate loads url (absolute http or https, or about:blank) and waits
// for o.WaitUntil. A response that never completes ends with ErrTimeout at
// ctx's deadline; network failures wrap ErrNavigation.
func (c *Context) Navigate(ctx context.Context, url string, o NavigateOptions) (NavigateResult, error) {
	const op = "navigate"
	if err := checkNavigateURL(url); err != nil {
		return NavigateResult{}, fmt.Errorf("%s: %w: %v", op, ErrInvalidArgument, err)
	}
	waitUntil, err := waitUntilState(o.WaitUntil)
	if err != nil {
		return NavigateResult{}, fmt.Errorf("%s: %w", op, err)
	}
	var out NavigateResult
	mark := c.egress.denialMark()
	err = c.do(ctx, op, pageCall, kindNavigate, func(pg playwright.Page, timeout float64) error {
		opts := playwright.PageGotoOptions{Timeout: &timeout, WaitUntil: waitUntil}
		if o.Referer != "" {
			opts.Referer = &o.Referer
		}
		resp, err := pg.Goto(url, opts)
		if err != nil {
			return err
		}
		if resp != nil {
			out.Status = resp.Status()
		}
		out.URL = pg.URL()
		// The navigation is done; a title lost to a script that navigates
		// again at once is no reason to fail it.
		if out.Title, err = pg.Title(); err != nil && (errors.Is(err, playwright.ErrTargetClosed) || isConnectionError(err)) {
			return err
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			c.stopLoading()
		}
		if errors.Is(err, ErrNavigation) {
			// The network error of a request the egress refused (the page
			// or a leg of its redirects) says only "tunnel failed" or
			// "empty response": say why.
			if why := c.egress.deniedSince(mark); why != "" {
				return NavigateResult{}, fmt.Errorf("%s: %w: %s", op, ErrPolicy, why)
			}
		}
		return NavigateResult{}, err
	}
	return out, nil
}

// cdp sends one DevTools command to pg's target, within CloseTimeout, and
// reports whether it was carried out.
func (c *Context) cdp(pg playwright.Page, method string) bool {
	done, err := c.pool.within(c.closing, c.pool.cfg.CloseTimeout, func() error {
		s, err := c.bc.NewCDPSession(pg)
		if err != nil {
			return err
		}
		defer s.Detach()
		_, err = s.Send(method, nil)
		return err
	})
	if !done || err != nil {
		c.pool.log.Info("DevTools command failed", zap.String("method", method), zap.Bool("in_time", done), zap.Error(err))
		return false
	}
	return true
}

// stopLoading stops a navigation that outlived its command: Playwright's
// timeout only stops the waiting, and the page would otherwise go on
// loading and commit later, under the next command. It is the browser's
// stop button (CDP Page.stopLoading): the previous document stays.
func (c *Context) stopLoading() {
	c.mu.Lock()
	pg := c.page
	c.mu.Unlock()
	if pg == nil || c.cdp(pg, "Page.stopLoading") {
		return
	}
	// The stop button could not be pressed (the page was between
	// documents): close the page, which ends its loads, and open a new one.
	c.mu.Lock()
	if c.page == pg {
		c.page = nil
	}
	c.mu.Unlock()
	c.pool.log.Info("timed-out navigation not stoppable; replacing the page")
	c.closePage(pg)
	if err := c.openPage(nil); err != nil && c.stateErr("navigate") == nil {
		c.markLost(fmt.Errorf("%w: could not replace the page after a timed-out navigation: %s", ErrPageCrashed, shortMessage(err)))
	}
}

// Click clicks the first element matching selector, waiting for it to be
// actionable.
func (c *Context) Click(ctx context.Context, selector string) error {
	const op = "click"
	if err := checkSelector(op, selector); err != nil {
		return err
	}
	return c.do(ctx, op, pageCall, kindSelector, func(pg playwright.Page, timeout float64) error {
		return pg.Click(selector, playwright.PageClickOptions{Timeout: &timeout})
	})
}

// Fill sets the value of the input, textarea or contenteditable element
// matching selector.
func (c *Context) Fill(ctx context.Context, selector, value string) error {
	const op = "fill"
	if err := checkSelector(op, selector); err != nil {
		return err
	}
	return c.do(ctx, op, pageCall, kindSelector, func(pg playwright.Page, timeout float64) error {
		return pg.Fill(selector, value, playwright.PageFillOptions{Timeout: &timeout})
	})
}

// Press focuses the element matching selector and presses key ("Enter",
// "ArrowDown", "Control+A").
func (c *Context) Press(ctx context.Context, selector, key string) error {
	const op = "press"
	if err := checkSelector(op, selector); err != nil {
		return err
	}
	if key == "" {
		return fmt.Errorf("%s: %w: empty key", op, ErrInvalidArgument)
	}
	return c.do(ctx, op, pageCall, kindSelector, func(pg playwright.Page, timeout float64) error {
		return pg.Press(selector, key, playwright.PagePressOptions{Timeout: &timeout})
	})
}

// WaitForSelector waits until an element matching selector reaches state
// ("attached", "detached", "visible" or "hidden"; empty: "visible"). found
// says whether an element matched when the wait ended: false when
// "detached" or "hidden" was reached by absence. Timing out is an error
// (ErrTimeout).
func (c *Context) WaitForSelector(ctx context.Context, selector, state string) (found bool, err error) {
	const op = "wait for selector"
	if err := checkSelector(op, selector); err != nil {
		return false, err
	}
	st, err := selectorState(state)
	if err != nil {
		return false, fmt.Errorf("%s: %w", op, err)
	}
	err = c.do(ctx, op, pageCall, kindSelector, func(pg playwright.Page, timeout float64) error {
		h, err := pg.WaitForSelector(selector, playwright.PageWaitForSelectorOptions{State: st, Timeout: &timeout})
		if err != nil {
			return err
		}
		if h != nil {
			found = true
			_ = h.Dispose()
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	return found, nil
}

// Evaluate runs a JavaScript expression, or a function such as
// "(arg) => arg.x + 1" that receives argJSON (empty: no argument), and
// returns its value as JSON ("null" for undefined). Promises are awaited.
// A script that throws gives ErrEvaluation; one that never finishes is
// stopped when ctx ends (the page is replaced; see the package doc).
func (c *Context) Evaluate(ctx context.Context, expression string, argJSON string) (resultJSON string, err error) {
	const op = "evaluate"
	if strings.TrimSpace(expression) == "" {
		return "", fmt.Errorf("%s: %w: empty expression", op, ErrInvalidArgument)
	}
	var args []any
	if argJSON != "" {
		var arg any
		if err := json.Unmarshal([]byte(argJSON), &arg); err != nil {
			return "", fmt.Errorf("%s: %w: argument is not valid JSON", op, ErrInvalidArgument)
		}
		args = append(args, arg)
	}
	var out string
	err = c.do(ctx, op, pageCall, kindEvaluate, func(pg playwright.Page, _ float64) error {
		v, err := pg.Evaluate(expression, args...)
		if err != nil {
			return err
		}
		out, err = resultJSONOf(v)
		return err
	})
	if err != nil {
		return "", err
	}
	return out, nil
}

// resultJSONOf converts an Evaluate result, reporting a value JSON cannot
// carry as a script error.
func resultJSONOf(v any) (string, error) {
	s, err := resultJSON(v)
	if err != nil {
		return "", &playwright.Error{Name: "Error", Message: "result not representable as JSON: " + err.Error()}
	}
	return s, nil
}

// Content returns the page's HTML.
func (c *Context) Content(ctx context.Context) (string, error) {
	var out string
	err := c.do(ctx, "content", pageCall, kindPlain, func(pg playwright.Page, _ float64) error {
		var err error
		out, err = pg.Content()
		return err
	})
	if err != nil {
		return "", err
	}
	return out, nil
}

// Text returns the inner text of every element matching selector, in
// document order, without waiting; an empty slice when none matches.
func (c *Context) Text(ctx context.Context, selector string) ([]string, error) {
	const op = "text"
	if err := checkSelector(op, selector); err != nil {
		return nil, err
	}
	var out []string
	err := c.do(ctx, op, pageCall, kindSelector, func(pg playwright.Page, _ float64) error {
		var err error
		out, err = pg.Locator(selector).AllInnerTexts()
		return err
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}

// MaxScreenshotSide bounds a full-page screenshot: a page wider or longer
// than this, in CSS pixels, is refused with ErrTooLarge, as its image would
// cost hundreds of megabytes in Chromium and the driver.
const MaxScreenshotSide = 16384

// checkFullPage refuses a full-page screenshot of a page over
// MaxScreenshotSide. It asks Chromium for the page's size (DevTools
// Page.getLayoutMetrics), which the page's scripts cannot fake; a browser
// without DevTools is not checked.
func (c *Context) checkFullPage(pg playwright.Page) error {
	s, err := c.bc.NewCDPSession(pg)
	if err != nil {
		return nil
	}
	defer s.Detach()
	res, err := s.Send("Page.getLayoutMetrics", nil)
	if err != nil {
		return err
	}
	metrics, _ := res.(map[string]any) // nil for an empty result
	size, _ := metrics["cssContentSize"].(map[string]any)
	w, _ := size["width"].(float64)
	h, _ := size["height"].(float64)
	if w > MaxScreenshotSide || h > MaxScreenshotSide {
		return fmt.Errorf("%w: the full page is %.0fx%.0f CSS pixels, over the limit of %d a side; take the viewport instead",
			ErrTooLarge, w, h, MaxScreenshotSide)
	}
	return nil
}

// Screenshot captures the viewport (or the whole page, up to
// MaxScreenshotSide) as PNG or JPEG.
func (c *Context) Screenshot(ctx context.Context, o ScreenshotOptions) ([]byte, error) {
	const op = "screenshot"
	opts := playwright.PageScreenshotOptions{FullPage: playwright.Bool(o.FullPage)}
	scope := pageCall
	if o.Untouched {
		opts.Caret = playwright.ScreenshotCaretInitial
		scope = observeCall
	}
	switch o.Format {
	case "", "png":
		opts.Type = playwright.ScreenshotTypePng
		if o.Quality != 0 {
			return nil, fmt.Errorf("%s: %w: quality applies to jpeg only", op, ErrInvalidArgument)
		}
	case "jpeg", "jpg":
		opts.Type = playwright.ScreenshotTypeJpeg
		if o.Quality < 0 || o.Quality > 100 {
			return nil, fmt.Errorf("%s: %w: quality %d not in 1-100", op, ErrInvalidArgument, o.Quality)
		}
		if o.Quality > 0 {
			opts.Quality = playwright.Int(o.Quality)
		}
	default:
		return nil, fmt.Errorf("%s: %w: format %q is not png or jpeg", op, ErrInvalidArgument, o.Format)
	}
	var out []byte
	err := c.do(ctx, op, scope, kindPlain, func(pg playwright.Page, timeout float64) error {
		if o.FullPage {
			if err := c.checkFullPage(pg); err != nil {
				return err
			}
		}
		opts.Timeout = &timeout
		var err error
		out, err = pg.Screenshot(opts)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Cookies returns the context's cookies that would be sent to urls (all of
// them when urls is empty).
func (c *Context) Cookies(ctx context.Context, urls ...string) ([]Cookie, error) {
	const op = "cookies"
	for _, u := range urls {
		if err := checkHTTPURL(u); err != nil {
			return nil, fmt.Errorf("%s: %w: %v", op, ErrInvalidArgument, err)
		}
	}
	var got []playwright.Cookie
	err := c.do(ctx, op, contextCall, kindCookies, func(playwright.Page, float64) error {
		var err error
		got, err = c.bc.Cookies(urls...)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]Cookie, 0, len(got))
	for _, ck := range got {
		out = append(out, cookieFromPlaywright(ck))
	}
	return out, nil
}

// SetCookies adds cookies to the context. Each needs a name and either a
// URL or a domain (path defaults to "/").
func (c *Context) SetCookies(ctx context.Context, cookies []Cookie) error {
	const op = "set cookies"
	list := make([]playwright.OptionalCookie, 0, len(cookies))
	for _, ck := range cookies {
		pc, err := ck.playwright()
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		list = append(list, pc)
	}
	if len(list) == 0 {
		return nil
	}
	return c.do(ctx, op, contextCall, kindCookies, func(playwright.Page, float64) error {
		return c.bc.AddCookies(list)
	})
}
