// Command bench measures the browser-lease broker against the two ways a
// worker gets a browser without it, on one machine, with the same Chromium
// and a local test site, all on loopback:
//
//  1. grant latency through the broker (acquire → granted), cold (a new
//     context) and from the broker's warm pool (--warm);
//  2. a small scraper job (acquire, navigate to a page with 50 items, fill,
//     click, read the 50 texts, release) through the broker, cold and from
//     its warm pool, with playwright-go in-process (a new context per job)
//     and through Playwright's browser server (a new connection and context
//     per job), interleaved job by job;
//     2b. the same job through the broker on a page that also has 50
//     images, with the images loaded and blocked (block {image}),
//     interleaved;
//  3. the per-command overhead: Evaluate("1") on a loaded page;
//  4. lease churn: acquire+release cycles/s with real Chromium at
//     concurrency = capacity, and through the lease core and gRPC alone
//     over a fake backend;
//  5. reclaim latency by trigger (release, stream cancel, TTL expiry);
//  6. memory (PSS) of the broker, its driver and Chromium at 0, 10 and 50
//     leases;
//  7. a fleet of two brokers on a local redis-server: a command routed to
//     the lease's broker through the other one, and an acquire forwarded by
//     a full broker, beside the same calls made directly.
//
// It builds the broker (or takes --broker), starts what it needs, prints a
// table and writes every figure, with its unit, as JSON.
//
//	go run ./cmd/bench                    # bench/results.json
//	go run ./cmd/bench --quick            # small sizes, about 3 minutes
//	go run ./cmd/bench --smoke            # the least that exercises it all (the test)
//	go run ./cmd/bench --sections memory  # only the memory measurement
//
// It also prints the targets beside the measured values, and
// writes them to the JSON's "targets".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/browserbroker/broker/client"
	"github.com/browserbroker/broker/internal/browser"
)

// playwrightVersion is the driver version playwright-go v0.5200.1 drives.
const playwrightVersion = "1.52.0"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	out          string
	quick        bool
	smoke        bool
	sections     map[string]bool // which measurements run
	cpuProfile   string          // the broker's CPU profile over the scraper jobs
	brokerPath   string
	driverDir    string
	chromium     string
	capacity     int
	warm         int
	jobs         int
	warmup       int
	grants       int
	evals        int
	reclaims     int
	reclaimTTL   time.Duration
	pollInterval time.Duration
	churnCycles  int
	coreCycles   int
	coreConc     []int
	memLevels    []int
	memSettle    time.Duration
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: bench [flags]\n\nBenchmarks the broker against playwright-go in-process and Playwright's browser server. Flags:\n")
		fs.PrintDefaults()
	}
	cpus := runtime.NumCPU()
	fs.StringVar(&c.out, "out", filepath.Join("bench", "results.json"), "write the JSON results to this file")
	fs.BoolVar(&c.quick, "quick", false, "small sizes (a few minutes); explicit size flags still win")
	fs.BoolVar(&c.smoke, "smoke", false, "the smallest sizes that still run every path once or twice (under a minute; what the test runs); explicit size flags still win")
	sections := fs.String("sections", strings.Join(allSections, ","), "measurements to run, comma-separated, of "+strings.Join(allSections, ","))
	fs.StringVar(&c.cpuProfile, "broker-cpuprofile", "", "write a CPU profile (pprof) of the broker over the scraper jobs to this file; builds the broker with -tags benchprofile")
	fs.StringVar(&c.brokerPath, "broker", "", "broker binary to run (default: go build ./cmd/broker into a temporary folder)")
	fs.StringVar(&c.driverDir, "driver-dir", "", "Playwright driver folder (default: $PLAYWRIGHT_DRIVER_PATH, else <repo>/.cache/playwright/"+playwrightVersion+")")
	fs.StringVar(&c.chromium, "chromium", cmpOrString(os.Getenv("BROKER_CHROMIUM"), "/usr/bin/chromium"), "Chromium executable, for every path")
	fs.IntVar(&c.capacity, "capacity", 4*cpus, "the broker's --max-leases, and the concurrency of the real-Chromium churn")
	fs.IntVar(&c.warm, "warm", 4, "the --warm (warm pool size) of the broker that runs the grant latency, the scraper jobs and the Evaluate calls; less than --capacity")
	fs.IntVar(&c.jobs, "jobs", 30, "scraper jobs per path (and per variant of the images-blocked job)")
	fs.IntVar(&c.warmup, "warmup", 2, "untimed scraper jobs per path first")
	fs.IntVar(&c.grants, "grants", 50, "acquires timed for the grant latency, cold and warm-pool each")
	fs.IntVar(&c.evals, "evals", 200, "Evaluate calls per path")
	fs.IntVar(&c.reclaims, "reclaims", 20, "reclaims timed per trigger")
	fs.DurationVar(&c.reclaimTTL, "reclaim-ttl", time.Second, "idle TTL of the leases left to expire")
	fs.DurationVar(&c.pollInterval, "poll-interval", time.Millisecond, "GetStats polling interval when timing reclaims")
	fs.IntVar(&c.churnCycles, "churn-cycles", 400, "acquire+release cycles with real Chromium")
	fs.IntVar(&c.coreCycles, "core-cycles", 20000, "acquire+release cycles per concurrency over the fake backend")
	coreConc := fs.String("core-concurrency", "1,"+strconv.Itoa(4*cpus)+",64", "concurrencies of the fake-backend churn, comma-separated")
	memLevels := fs.String("memory-leases", "0,10,50", "lease counts at which memory is read, comma-separated")
	fs.DurationVar(&c.memSettle, "memory-settle", 3*time.Second, "wait after loading the pages before reading memory")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.smoke {
		smoke := map[string]func(){
			"capacity":         func() { c.capacity = 3 },
			"warm":             func() { c.warm = 1 },
			"jobs":             func() { c.jobs = 2 },
			"warmup":           func() { c.warmup = 0 },
			"grants":           func() { c.grants = 2 },
			"evals":            func() { c.evals = 5 },
			"reclaims":         func() { c.reclaims = 1 },
			"reclaim-ttl":      func() { c.reclaimTTL = 300 * time.Millisecond },
			"churn-cycles":     func() { c.churnCycles = 3 },
			"core-cycles":      func() { c.coreCycles = 200 },
			"core-concurrency": func() { *coreConc = "1,3" },
			"memory-leases":    func() { *memLevels = "0,2" },
			"memory-settle":    func() { c.memSettle = 0 },
		}
		for name, apply := range smoke {
			if !set[name] {
				apply()
			}
		}
	} else if c.quick {
		quick := map[string]func(){
			"jobs":             func() { c.jobs = 3 },
			"warmup":           func() { c.warmup = 1 },
			"grants":           func() { c.grants = 5 },
			"evals":            func() { c.evals = 20 },
			"reclaims":         func() { c.reclaims = 2 },
			"reclaim-ttl":      func() { c.reclaimTTL = 300 * time.Millisecond },
			"churn-cycles":     func() { c.churnCycles = 2 * c.capacity },
			"core-cycles":      func() { c.coreCycles = 500 },
			"core-concurrency": func() { *coreConc = "1,4" },
			"memory-leases":    func() { *memLevels = "0,2" },
			"memory-settle":    func() { c.memSettle = 500 * time.Millisecond },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	var err error
	if c.sections, err = parseSections(*sections); err != nil {
		return c, fmt.Errorf("--sections: %w", err)
	}
	if c.coreConc, err = parseInts(*coreConc); err != nil {
		return c, fmt.Errorf("--core-concurrency: %w", err)
	}
	if c.memLevels, err = parseInts(*memLevels); err != nil {
		return c, fmt.Errorf("--memory-leases: %w", err)
	}
	slices.Sort(c.memLevels)
	c.memLevels = slices.Compact(c.memLevels)
	for name, v := range map[string]int{"capacity": c.capacity, "jobs": c.jobs, "grants": c.grants,
		"evals": c.evals, "reclaims": c.reclaims, "churn-cycles": c.churnCycles, "core-cycles": c.coreCycles} {
		if v < 1 {
			return c, fmt.Errorf("--%s must be at least 1, got %d", name, v)
		}
	}
	if c.warm < 1 || c.warm >= c.capacity {
		return c, fmt.Errorf("--warm must be at least 1 and less than --capacity (%d), got %d", c.capacity, c.warm)
	}
	if c.warmup < 0 || c.reclaimTTL <= 0 || c.pollInterval <= 0 || c.memSettle < 0 {
		return c, errors.New("--warmup, --reclaim-ttl, --poll-interval and --memory-settle must not be negative")
	}
	if c.driverDir == "" {
		c.driverDir = os.Getenv("PLAYWRIGHT_DRIVER_PATH")
	}
	if c.driverDir == "" {
		root, err := moduleRoot()
		if err != nil {
			return c, fmt.Errorf("no --driver-dir and no PLAYWRIGHT_DRIVER_PATH: %w", err)
		}
		c.driverDir = filepath.Join(root, ".cache", "playwright", playwrightVersion)
	}
	// Node resolves a relative package path from the script's folder.
	abs, err := filepath.Abs(c.driverDir)
	if err != nil {
		return c, err
	}
	c.driverDir = abs
	return c, nil
}

// allSections names the measurements --sections selects from, in the
// order they run.
var allSections = []string{"grant", "jobs", "blocked", "evaluate", "reclaim", "churn", "core", "memory", "fleet"}

func parseSections(s string) (map[string]bool, error) {
	out := map[string]bool{}
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "all" {
			for _, name := range allSections {
				out[name] = true
			}
			continue
		}
		if !slices.Contains(allSections, f) {
			return nil, fmt.Errorf("unknown section %q (sections: %s)", f, strings.Join(allSections, ","))
		}
		out[f] = true
	}
	return out, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a list of non-negative numbers", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func cmpOrString(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// moduleRoot is the nearest folder at or above the working directory with
// a go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("not inside the module (no go.mod above the working directory)")
		}
		dir = up
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	progress := func(msg string) { fmt.Fprintf(stderr, "bench: %s\n", msg) }
	res, err := measure(ctx, c, stderr, progress)
	if err != nil {
		return err
	}
	printTable(stdout, res)
	if err := writeJSON(c.out, res); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	fmt.Fprintf(stdout, "results: %s\n", c.out)
	return nil
}

// measure starts everything, runs the selected measurements in order and
// stops everything again.
func measure(ctx context.Context, c config, stderr io.Writer, progress func(string)) (*Results, error) {
	res := &Results{
		Started: time.Now(),
		Quick:   c.quick,
		Smoke:   c.smoke,
		Host: Host{
			CPUs:              runtime.NumCPU(),
			MemTotalMiB:       memTotalMiB(),
			LoadAvg1Start:     loadAvg1(),
			GoVersion:         runtime.Version(),
			ChromiumPath:      c.chromium,
			PlaywrightVersion: playwrightVersion,
		},
		Settings: Settings{
			Capacity:           c.capacity,
			Jobs:               c.jobs,
			WarmupRounds:       c.warmup,
			Grants:             c.grants,
			Evals:              c.evals,
			Reclaims:           c.reclaims,
			ReclaimTTLMs:       ms(c.reclaimTTL),
			PollIntervalMs:     ms(c.pollInterval),
			ChurnCycles:        c.churnCycles,
			CoreCycles:         c.coreCycles,
			CoreConcurrency:    c.coreConc,
			MemoryLevels:       c.memLevels,
			MemorySettleMs:     ms(c.memSettle),
			ContextsPerBrowser: 8,
			Warm:               c.warm,
			Brokers: fmt.Sprintf("grant latency, scraper jobs and Evaluate: a broker with --max-leases %d --warm %d; "+
				"reclaim latency and real-Chromium churn: a broker with --max-leases %d and no warm pool; memory: its own broker, no warm pool",
				c.capacity, c.warm, c.capacity),
		},
	}
	for _, name := range allSections {
		if c.sections[name] {
			res.Settings.Sections = append(res.Settings.Sections, name)
		}
	}
	want := func(names ...string) bool {
		return slices.ContainsFunc(names, func(n string) bool { return c.sections[n] })
	}

	// Chromium and the drivers leave profiles in TMPDIR: keep them in a
	// folder of ours, removed at the end. Children inherit it.
	tmp, _, err := browser.MkdirTemp("bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if old, ok := os.LookupEnv("TMPDIR"); ok {
		defer os.Setenv("TMPDIR", old)
	} else {
		defer os.Unsetenv("TMPDIR")
	}

	brokerBin := c.brokerPath
	if brokerBin == "" && want("grant", "jobs", "blocked", "evaluate", "reclaim", "churn", "memory", "fleet") {
		progress("building the broker")
		if brokerBin, err = buildBroker(ctx, tmp, c.cpuProfile != "", stderr); err != nil {
			return nil, err
		}
	}
	res.Host.BrokerPath = brokerBin
	os.Setenv("TMPDIR", tmp)

	site := newSite()
	defer site.Close()
	url := site.URL + "/items"

	if want("grant", "jobs", "blocked", "evaluate") {
		if err := measureWarmBroker(ctx, c, res, brokerBin, site, tmp, progress); err != nil {
			return nil, err
		}
	}

	// Reclaims and churn run on a broker without a warm pool: warm
	// contexts share the capacity, and churn at concurrency = capacity
	// would keep evicting and refilling them.
	if want("reclaim", "churn") {
		progress("starting a broker without a warm pool for reclaims and churn")
		plain, err := startBroker(ctx, brokerBin, c.driverDir, c.chromium, nil, "--max-leases", strconv.Itoa(c.capacity))
		if err != nil {
			return nil, err
		}
		defer plain.stop()
		pconn, err := grpc.NewClient(plain.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		defer pconn.Close()
		pc := client.New(pconn)
		defer pc.Close()

		if want("reclaim") {
			progress(fmt.Sprintf("reclaim latency: %d per trigger", c.reclaims))
			if res.Reclaim, err = runReclaims(ctx, newReclaimer(pconn, url, c.pollInterval), c.reclaims, c.reclaimTTL, progress); err != nil {
				return nil, fmt.Errorf("reclaim latency: %w", err)
			}
		}
		if want("churn") {
			progress(fmt.Sprintf("lease churn with real Chromium: %d cycles at concurrency %d", c.churnCycles, c.capacity))
			res.Churn.Cycle = "acquire → granted → release → revoked{RELEASED}, no page commands"
			if res.Churn.RealChromium, err = runChurn(ctx, pc, c.capacity, c.churnCycles); err != nil {
				return nil, fmt.Errorf("churn: %w", err)
			}
		}
		// What follows measures without the browsers above running.
		plain.stop()
		pc.Close()
		pconn.Close()
	}

	if want("core") {
		res.Churn.CoreFakeSetup = "lease.Manager (capacity = concurrency) over a fake backend whose sessions are counters, " +
			"the broker's gRPC server (server.New + server.NewGRPCServer) on loopback TCP in this process, one Go client"
		for _, n := range c.coreConc {
			progress(fmt.Sprintf("lease core churn over the fake backend: %d cycles at concurrency %d", c.coreCycles, n))
			t, err := runCore(ctx, n, c.coreCycles)
			if err != nil {
				return nil, fmt.Errorf("core churn at concurrency %d: %w", n, err)
			}
			res.Churn.CoreFake = append(res.Churn.CoreFake, t)
		}
	}

	if !want("memory") {
		res.Memory.Method = "skipped (not in --sections)"
	} else {
		progress(fmt.Sprintf("memory at %s leases", joinInts(c.memLevels)))
		if res.Memory, err = runMemory(ctx, brokerBin, c.driverDir, c.chromium, url, c.memLevels, c.memSettle, progress); err != nil {
			return nil, fmt.Errorf("memory: %w", err)
		}
	}

	if want("fleet") {
		if res.Fleet, err = runFleet(ctx, brokerBin, c.driverDir, c.chromium, url, c.evals, c.grants, progress); err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
	}

	res.Targets = targets(res)
	res.Host.LoadAvg1End = loadAvg1()
	res.Took = time.Since(res.Started)
	res.TookS = round(res.Took.Seconds())
	return res, nil
}

// measureWarmBroker runs the measurements that use the broker with a warm
// pool beside playwright-go in-process and Playwright's browser server:
// grant latency, the scraper jobs, the images-blocked jobs and Evaluate.
// It stops all three before it returns.
func measureWarmBroker(ctx context.Context, c config, res *Results, brokerBin string, site *benchSite, tmp string, progress func(string)) error {
	want := func(name string) bool { return c.sections[name] }
	url := site.URL + "/items"
	progress(fmt.Sprintf("starting the broker (--warm %d), playwright-go in-process and Playwright's browser server", c.warm))
	var env []string
	if c.cpuProfile != "" {
		abs, err := filepath.Abs(c.cpuProfile)
		if err != nil {
			return err
		}
		env = append(env, "BROKER_CPUPROFILE="+abs)
	}
	broker, err := startBroker(ctx, brokerBin, c.driverDir, c.chromium, env, "--max-leases", strconv.Itoa(c.capacity), "--warm", strconv.Itoa(c.warm))
	if err != nil {
		return err
	}
	defer broker.stop()
	inproc, err := startInProcess(c.driverDir, c.chromium)
	if err != nil {
		return err
	}
	defer inproc.stop()
	res.Host.ChromiumVersion = "Chromium " + inproc.browser.Version()
	server, err := startBrowserServer(ctx, c.driverDir, c.chromium, tmp)
	if err != nil {
		return err
	}
	defer server.stop()

	conn, err := grpc.NewClient(broker.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	bc := client.New(conn)
	defer bc.Close()

	if want("grant") {
		progress(fmt.Sprintf("grant latency: %d cold and %d warm-pool acquires", c.grants, c.grants))
		if res.Grant, err = runGrants(ctx, bc, c.grants, c.warm); err != nil {
			return fmt.Errorf("grant latency: %w", err)
		}
	}

	if want("jobs") {
		progress(fmt.Sprintf("scraper jobs: %d per path (+%d warm-up), interleaved", c.jobs, c.warmup))
		if c.cpuProfile != "" {
			if err := broker.toggleProfile(); err != nil {
				return err
			}
		}
		paths := []path{brokerPath{bc}, inProcessPath{inproc}, &warmBrokerPath{c: bc}, browserServerPath{inproc, server.wsEndpoint}}
		res.Jobs, err = runJobs(ctx, bc, paths, url, c.warmup, c.jobs, progress)
		if c.cpuProfile != "" {
			if perr := broker.toggleProfile(); perr != nil {
				return perr
			}
			progress("broker CPU profile over the scraper jobs: " + c.cpuProfile + "")
		}
		if err != nil {
			return fmt.Errorf("scraper jobs: %w", err)
		}
	}

	if want("blocked") {
		progress(fmt.Sprintf("scraper jobs with images blocked: %d per variant (+%d warm-up), interleaved", c.jobs, c.warmup))
		if res.Blocked, err = runBlockedJobs(ctx, bc, site, c.warmup, c.jobs, progress); err != nil {
			return fmt.Errorf("scraper jobs with images blocked: %w", err)
		}
	}

	if want("evaluate") {
		progress(fmt.Sprintf("per-command overhead: %d Evaluate calls per path", c.evals))
		if res.Evaluate, err = runEvaluate(ctx, bc, inproc, server.wsEndpoint, url, c.evals); err != nil {
			return fmt.Errorf("evaluate: %w", err)
		}
	}
	return nil
}

// loadAvg1 is the one-minute load average; 0 when unknown.
func loadAvg1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// memTotalMiB is the machine's RAM; 0 when unknown.
func memTotalMiB() float64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return mib(kb)
			}
		}
	}
	return 0
}
