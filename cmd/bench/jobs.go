package main

import (
	"context"
	"fmt"
	"time"

	"github.com/playwright-community/playwright-go"

	"github.com/browserbroker/broker/client"
)

// The steps of a scraper job, in order.
var jobSteps = []string{"acquire", "navigate", "fill", "click", "text", "release"}

// stopwatch times consecutive steps.
type stopwatch struct {
	start, last time.Time
	steps       map[string]time.Duration
}

func newStopwatch() *stopwatch {
	now := time.Now()
	return &stopwatch{start: now, last: now, steps: map[string]time.Duration{}}
}

func (s *stopwatch) lap(step string) {
	now := time.Now()
	s.steps[step] = now.Sub(s.last)
	s.last = now
}

func (s *stopwatch) total() time.Duration { return s.last.Sub(s.start) }

// path is one way a worker gets a fresh browser context and drives it.
type path interface {
	// key names the path in the JSON.
	key() string
	// job runs the unit of scraper work: get a fresh context with a page,
	// navigate to url, fill the input, click the button, read the items'
	// texts, give the context back.
	job(ctx context.Context, url string, sw *stopwatch) error
}

// brokerPath leases from the broker with the Go client.
type brokerPath struct{ c *client.Client }

func (brokerPath) key() string { return "broker" }

func (p brokerPath) job(ctx context.Context, url string, sw *stopwatch) (err error) {
	l, err := p.c.Acquire(ctx, client.AcquireOptions{TTL: time.Minute})
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	sw.lap("acquire")
	defer func() {
		if err != nil {
			_, _ = l.Release(context.WithoutCancel(ctx))
		}
	}()
	if _, err := l.Navigate(ctx, url); err != nil {
		return fmt.Errorf("navigate: %w", err)
	}
	sw.lap("navigate")
	if err := l.Fill(ctx, "#q", jobQuery); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	sw.lap("fill")
	if err := l.Click(ctx, "#go"); err != nil {
		return fmt.Errorf("click: %w", err)
	}
	sw.lap("click")
	texts, err := l.Text(ctx, "li.item")
	if err != nil {
		return fmt.Errorf("text: %w", err)
	}
	sw.lap("text")
	if err := checkTexts(texts); err != nil {
		return err
	}
	if _, err := l.Release(ctx); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	sw.lap("release")
	return nil
}

// inProcessPath opens a new context per job on a browser this process
// launched through playwright-go.
type inProcessPath struct{ p *inProcess }

func (inProcessPath) key() string { return "in_process" }

func (p inProcessPath) job(_ context.Context, url string, sw *stopwatch) error {
	bctx, err := p.p.browser.NewContext(newContextOptions())
	if err != nil {
		return fmt.Errorf("new context: %w", err)
	}
	defer bctx.Close()
	page, err := bctx.NewPage()
	if err != nil {
		return fmt.Errorf("new page: %w", err)
	}
	sw.lap("acquire")
	if err := drivePage(page, url, sw); err != nil {
		return err
	}
	if err := bctx.Close(); err != nil {
		return fmt.Errorf("close context: %w", err)
	}
	sw.lap("release")
	return nil
}

// browserServerPath connects to Playwright's browser server for every job
// and opens a new context on the connection, as workers that share a
// browser server do.
type browserServerPath struct {
	p          *inProcess // whose driver makes the connection
	wsEndpoint string
}

func (browserServerPath) key() string { return "browser_server" }

func (p browserServerPath) job(_ context.Context, url string, sw *stopwatch) error {
	b, err := p.p.pw.Chromium.Connect(p.wsEndpoint)
	if err != nil {
		return fmt.Errorf("connect %s: %w", p.wsEndpoint, err)
	}
	defer b.Close()
	bctx, err := b.NewContext(newContextOptions())
	if err != nil {
		return fmt.Errorf("new context: %w", err)
	}
	page, err := bctx.NewPage()
	if err != nil {
		return fmt.Errorf("new page: %w", err)
	}
	sw.lap("acquire")
	if err := drivePage(page, url, sw); err != nil {
		return err
	}
	if err := bctx.Close(); err != nil {
		return fmt.Errorf("close context: %w", err)
	}
	if err := b.Close(); err != nil {
		return fmt.Errorf("disconnect: %w", err)
	}
	sw.lap("release")
	return nil
}

// drivePage runs the job's page steps with playwright-go, with the calls
// the broker makes for the same commands.
func drivePage(page playwright.Page, url string, sw *stopwatch) error {
	if _, err := page.Goto(url, playwright.PageGotoOptions{WaitUntil: playwright.WaitUntilStateLoad}); err != nil {
		return fmt.Errorf("navigate: %w", err)
	}
	sw.lap("navigate")
	if err := page.Fill("#q", jobQuery); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	sw.lap("fill")
	if err := page.Click("#go"); err != nil {
		return fmt.Errorf("click: %w", err)
	}
	sw.lap("click")
	texts, err := page.Locator("li.item").AllInnerTexts()
	if err != nil {
		return fmt.Errorf("text: %w", err)
	}
	sw.lap("text")
	return checkTexts(texts)
}

// runJobs runs warmup rounds, then jobs rounds; a round runs one job on
// every path in turn, starting with a different path each round so that no
// path always runs right after the same one.
func runJobs(ctx context.Context, paths []path, url string, warmup, jobs int, progress func(string)) (JobResult, error) {
	totals := map[string][]time.Duration{}
	steps := map[string]map[string][]time.Duration{}
	for _, p := range paths {
		steps[p.key()] = map[string][]time.Duration{}
	}
	for round := range warmup + jobs {
		for k := range paths {
			p := paths[(round+k)%len(paths)]
			sw := newStopwatch()
			if err := p.job(ctx, url, sw); err != nil {
				return JobResult{}, fmt.Errorf("job %d on %s: %w", round, p.key(), err)
			}
			if round < warmup {
				continue
			}
			totals[p.key()] = append(totals[p.key()], sw.total())
			for s, d := range sw.steps {
				steps[p.key()][s] = append(steps[p.key()][s], d)
			}
		}
		if err := ctx.Err(); err != nil {
			return JobResult{}, err
		}
		if (round+1)%10 == 0 {
			progress(fmt.Sprintf("scraper jobs: round %d of %d", round+1, warmup+jobs))
		}
	}
	r := JobResult{
		Job:           fmt.Sprintf("acquire, navigate to a local page with %d items, fill an input, click a button, read the %d texts, release", itemCount, itemCount),
		Broker:        summarize(totals["broker"]),
		InProcess:     summarize(totals["in_process"]),
		BrowserServer: summarize(totals["browser_server"]),
		Steps:         map[string]map[string]Latency{},
	}
	for key, byStep := range steps {
		r.Steps[key] = map[string]Latency{}
		for _, s := range jobSteps {
			r.Steps[key][s] = summarize(byStep[s])
		}
	}
	r.BrokerOverInProcess = ratio(r.Broker, r.InProcess)
	r.BrokerOverBrowserServer = ratio(r.Broker, r.BrowserServer)
	return r, nil
}

// runEvaluate times Evaluate("1") on one loaded page per path, the paths
// interleaved call by call.
func runEvaluate(ctx context.Context, c *client.Client, inproc *inProcess, wsEndpoint, url string, n int) (EvalResult, error) {
	l, err := c.Acquire(ctx, client.AcquireOptions{TTL: time.Minute})
	if err != nil {
		return EvalResult{}, fmt.Errorf("acquire: %w", err)
	}
	defer l.Release(context.WithoutCancel(ctx))
	if _, err := l.Navigate(ctx, url); err != nil {
		return EvalResult{}, fmt.Errorf("broker navigate: %w", err)
	}

	bctx, err := inproc.browser.NewContext(newContextOptions())
	if err != nil {
		return EvalResult{}, err
	}
	defer bctx.Close()
	page, err := bctx.NewPage()
	if err != nil {
		return EvalResult{}, err
	}
	if _, err := page.Goto(url); err != nil {
		return EvalResult{}, fmt.Errorf("in-process navigate: %w", err)
	}

	remote, err := inproc.pw.Chromium.Connect(wsEndpoint)
	if err != nil {
		return EvalResult{}, fmt.Errorf("connect %s: %w", wsEndpoint, err)
	}
	defer remote.Close()
	rctx, err := remote.NewContext(newContextOptions())
	if err != nil {
		return EvalResult{}, err
	}
	defer rctx.Close()
	rpage, err := rctx.NewPage()
	if err != nil {
		return EvalResult{}, err
	}
	if _, err := rpage.Goto(url); err != nil {
		return EvalResult{}, fmt.Errorf("browser server navigate: %w", err)
	}

	calls := []struct {
		key  string
		eval func() (any, error)
	}{
		{"broker", func() (any, error) {
			raw, err := l.Evaluate(ctx, "1", nil)
			return string(raw), err
		}},
		{"in_process", func() (any, error) { return page.Evaluate("1") }},
		{"browser_server", func() (any, error) { return rpage.Evaluate("1") }},
	}
	const warmup = 5
	sample := map[string][]time.Duration{}
	for i := range warmup + n {
		for k := range calls {
			call := calls[(i+k)%len(calls)]
			start := time.Now()
			v, err := call.eval()
			took := time.Since(start)
			if err != nil {
				return EvalResult{}, fmt.Errorf("%s Evaluate(1): %w", call.key, err)
			}
			if fmt.Sprint(v) != "1" {
				return EvalResult{}, fmt.Errorf("%s Evaluate(1) = %v, want 1", call.key, v)
			}
			if i >= warmup {
				sample[call.key] = append(sample[call.key], took)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return EvalResult{}, err
	}
	r := EvalResult{
		Broker:        summarize(sample["broker"]),
		InProcess:     summarize(sample["in_process"]),
		BrowserServer: summarize(sample["browser_server"]),
	}
	r.BrokerOverInProcess = ratio(r.Broker, r.InProcess)
	r.BrokerOverBrowserServer = ratio(r.Broker, r.BrowserServer)
	r.BrokerOverheadP50Ms = round(r.Broker.P50Ms - r.InProcess.P50Ms)
	return r, nil
}
