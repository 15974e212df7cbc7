package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/playwright-community/playwright-go"

	"github.com/browserbroker/broker/client"
	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
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

// brokerPath leases from the broker with the Go client, cold: its context
// options are not the default, so every job gets a new context even from a
// broker with a warm pool.
type brokerPath struct{ c *client.Client }

func (brokerPath) key() string { return "broker" }

func (p brokerPath) job(ctx context.Context, url string, sw *stopwatch) error {
	return brokerJob(ctx, p.c, coldContext(), url, sw)
}

// warmBrokerPath leases from the broker with default options, so that the
// acquire takes a context from the broker's warm pool when one is ready.
// Around each job (untimed) it reads GetStats to tell a hit from a miss.
type warmBrokerPath struct {
	c *client.Client
	// hit says, per job in order, whether its acquire hit the warm pool.
	hit []bool
	// before are the warm_hits and warm_misses read before the running job.
	hits0, misses0 uint64
}

func (*warmBrokerPath) key() string { return "broker_warm_pool" }

func (p *warmBrokerPath) job(ctx context.Context, url string, sw *stopwatch) error {
	return brokerJob(ctx, p.c, nil, url, sw)
}

func (p *warmBrokerPath) before(ctx context.Context) error {
	st, err := p.c.Stats(ctx)
	if err != nil {
		return fmt.Errorf("GetStats: %w", err)
	}
	p.hits0, p.misses0 = st.GetWarmHits(), st.GetWarmMisses()
	return nil
}

func (p *warmBrokerPath) after(ctx context.Context) error {
	st, err := p.c.Stats(ctx)
	if err != nil {
		return fmt.Errorf("GetStats: %w", err)
	}
	hits, misses := st.GetWarmHits()-p.hits0, st.GetWarmMisses()-p.misses0
	if hits+misses != 1 {
		return fmt.Errorf("one default acquire moved warm_hits by %d and warm_misses by %d, want 1 in all", hits, misses)
	}
	p.hit = append(p.hit, hits == 1)
	return nil
}

// jobObserver is a path that looks at the broker around each of its jobs,
// outside the timed part.
type jobObserver interface {
	before(ctx context.Context) error
	after(ctx context.Context) error
}

// brokerJob is the scraper job through the broker, with the given context
// options (nil: the defaults).
func brokerJob(ctx context.Context, c *client.Client, opts *brokerv1.ContextOptions, url string, sw *stopwatch) (err error) {
	l, err := c.Acquire(ctx, client.AcquireOptions{TTL: time.Minute, Context: opts})
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
// every path, in an order shuffled each round (with a fixed seed, so runs
// compare), so that no path always runs right after the same one: work one
// path leaves behind (the warm pool's refill) lands on every path alike. The warm-pool path's jobs are
// told apart into hits and misses; the run fails when none hit, or when
// anything but that path's acquires moved the warm pool's counters.
func runJobs(ctx context.Context, c *client.Client, paths []path, url string, warmup, jobs int, progress func(string)) (JobResult, error) {
	totals := map[string][]time.Duration{}
	steps := map[string]map[string][]time.Duration{}
	for _, p := range paths {
		steps[p.key()] = map[string][]time.Duration{}
	}
	start, err := c.Stats(ctx)
	if err != nil {
		return JobResult{}, fmt.Errorf("GetStats: %w", err)
	}
	var warmJob []time.Duration // timed warm-pool jobs, in the order of warm.hit[warmup:]
	var warm *warmBrokerPath
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range warmup + jobs {
		for _, k := range rng.Perm(len(paths)) {
			p := paths[k]
			obs, _ := p.(jobObserver)
			if obs != nil {
				if err := obs.before(ctx); err != nil {
					return JobResult{}, fmt.Errorf("job %d on %s: %w", round, p.key(), err)
				}
			}
			sw := newStopwatch()
			if err := p.job(ctx, url, sw); err != nil {
				return JobResult{}, fmt.Errorf("job %d on %s: %w", round, p.key(), err)
			}
			if obs != nil {
				if err := obs.after(ctx); err != nil {
					return JobResult{}, fmt.Errorf("job %d on %s: %w", round, p.key(), err)
				}
			}
			if w, ok := p.(*warmBrokerPath); ok {
				warm = w
				if round >= warmup {
					warmJob = append(warmJob, sw.total())
				}
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
	end, err := c.Stats(ctx)
	if err != nil {
		return JobResult{}, fmt.Errorf("GetStats: %w", err)
	}
	r := JobResult{
		Job:           fmt.Sprintf("acquire, navigate to a local page with %d items, fill an input, click a button, read the %d texts, release", itemCount, itemCount),
		Broker:        summarize(totals["broker"]),
		BrokerWarm:    summarize(totals["broker_warm_pool"]),
		InProcess:     summarize(totals["in_process"]),
		BrowserServer: summarize(totals["browser_server"]),
		BrokerMethod: fmt.Sprintf("client.Acquire with context option viewport %dx%d (not the default), which bypasses the warm pool: a new context and page per job",
			coldViewport.Width, coldViewport.Height),
		WarmMethod: "client.Acquire with no context options on the same broker (--warm), served from the warm pool when a context is ready; " +
			"the broker refills the pool in the background, while the other paths' jobs run",
		Steps: map[string]map[string]Latency{},
	}
	for key, byStep := range steps {
		r.Steps[key] = map[string]Latency{}
		for _, s := range jobSteps {
			r.Steps[key][s] = summarize(byStep[s])
		}
	}
	r.BrokerOverInProcess = ratio(r.Broker, r.InProcess)
	r.BrokerOverBrowserServer = ratio(r.Broker, r.BrowserServer)
	r.BrokerWarmOverInProcess = ratio(r.BrokerWarm, r.InProcess)
	r.BrokerWarmOverBrowserServer = ratio(r.BrokerWarm, r.BrowserServer)
	r.BrokerWarmOverBroker = ratio(r.BrokerWarm, r.Broker)
	if warm == nil {
		return r, nil
	}

	wu := WarmUse{Method: "GetStats read before and after each warm-pool job (untimed): warm_hits +1 is a hit, warm_misses +1 a miss " +
		"(no warm context was ready: the refill had not caught up, and the acquire opened a new context)"}
	var hitJobs, missJobs []time.Duration
	for i, h := range warm.hit {
		timed := i >= warmup
		switch {
		case h && timed:
			wu.Hits++
			hitJobs = append(hitJobs, warmJob[i-warmup])
		case timed:
			wu.Misses++
			missJobs = append(missJobs, warmJob[i-warmup])
		}
		if h {
			wu.AllHits++
		} else {
			wu.AllMisses++
		}
	}
	if n := wu.Hits + wu.Misses; n > 0 {
		wu.HitRate = round(float64(wu.Hits) / float64(n))
	}
	wu.HitLatency, wu.MissLatency = summarize(hitJobs), summarize(missJobs)
	r.WarmPool = wu
	dh, dm := end.GetWarmHits()-start.GetWarmHits(), end.GetWarmMisses()-start.GetWarmMisses()
	if dh != uint64(wu.AllHits) || dm != uint64(wu.AllMisses) {
		return r, fmt.Errorf("warm pool over the jobs: warm_hits rose by %d and warm_misses by %d, but the warm-pool path saw %d and %d "+
			"(did a cold acquire touch the pool?)", dh, dm, wu.AllHits, wu.AllMisses)
	}
	if wu.AllHits == 0 {
		return r, fmt.Errorf("none of the %d warm-pool jobs hit the warm pool (%d misses)", len(warm.hit), wu.AllMisses)
	}
	return r, nil
}

// runEvaluate times Evaluate("1") on one loaded page per path, the paths
// interleaved call by call.
func runEvaluate(ctx context.Context, c *client.Client, inproc *inProcess, wsEndpoint, url string, n int) (EvalResult, error) {
	// Cold, so that the warm pool stays full and no refill runs meanwhile.
	l, err := c.Acquire(ctx, client.AcquireOptions{TTL: time.Minute, Context: coldContext()})
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
