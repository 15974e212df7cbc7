// Command soak runs the broker as a subprocess, against real Chromium and a
// local web site, through many lease cycles that end every way a lease can
// end, at a concurrency equal to the broker's capacity:
//
//   - release: navigate, evaluate, release (RELEASED);
//   - cancel: the stream's context is cancelled while a Navigate hangs
//     (STREAM_CLOSED; the Navigate must end ABORTED);
//   - close-send: the client closes its sending side only, which ends
//     nothing: a page command still works, and the 500ms TTL ends the
//     lease (TTL_EXPIRED);
//   - ttl: a 500ms idle TTL and no renew (TTL_EXPIRED);
//   - revoke: AdminService.RevokeLease (REVOKED);
//   - release+revoke: both at once; one wins, the other is absorbed;
//   - hang: a page that never finishes loading and a script that never
//     returns, each with a 300ms limit (DEADLINE_EXCEEDED, and the lease
//     stays usable), then release;
//   - crash: the page starts a dedicated worker, which Chromium runs as a
//     "DedicatedWorker" thread of the page's own renderer; the soak finds
//     that renderer in /proc and SIGKILLs it (PAGE_CRASHED). Crash cycles
//     run one at a time, so exactly one renderer carries the mark.
//
// Then it checks that nothing leaked: no lease, context or hanging request
// is left; the reclaims by reason add up to the cycles and match what the
// holders were told; the lease invariant never broke; capacity was never
// exceeded; the processes below the broker are back to their baseline (a
// Chromium service started once during the run is listed but tolerated);
// the broker's RSS grew less than a bound after warm-up and its open file
// descriptors are back to their baseline; and it still exits 0 on SIGTERM,
// leaving no process. The broker has no goroutine endpoint: /proc's VmRSS,
// Threads and fd count of its process stand in (Go never gives OS threads
// back, so Threads is reported, not checked). It prints a summary and exits
// non-zero when a check fails.
//
//	go run ./cmd/soak --cycles 2000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/proctree"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(1)
	}
}

// config is the soak's command line.
type config struct {
	cycles       int
	capacity     int
	concurrency  int
	warmup       int
	brokerPath   string
	driverDir    string
	chromium     string
	seed         uint64
	maxRSSGrowth int64 // bytes
	maxFDGrowth  int
	kinds        []kind   // the kinds of cycle to mix
	brokerArgs   []string // extra broker flags
	brokerLog    string   // file for the broker's whole log; empty: none
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: soak [flags]\n\nRuns the broker through many lease cycles and checks that nothing leaks. Flags:\n")
		fs.PrintDefaults()
	}
	driver := os.Getenv("PLAYWRIGHT_DRIVER_PATH")
	if driver == "" {
		driver = filepath.Join(".cache", "playwright", "1.52.0")
	}
	chromium := os.Getenv("BROKER_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	var rssMB int
	var kinds string
	fs.IntVar(&c.cycles, "cycles", 2000, "lease cycles to run")
	fs.IntVar(&c.capacity, "capacity", 4, "the broker's --max-leases")
	fs.IntVar(&c.concurrency, "concurrency", 0, "cycles run at once (default: the capacity)")
	fs.IntVar(&c.warmup, "warmup", 0, "cycles before the memory baseline is taken (default: a tenth of the cycles)")
	fs.StringVar(&c.brokerPath, "broker", "", "broker binary (default: go build ./cmd/broker into a temporary folder)")
	fs.StringVar(&c.driverDir, "driver-dir", driver, "Playwright driver folder (env PLAYWRIGHT_DRIVER_PATH)")
	fs.StringVar(&c.chromium, "chromium", chromium, "Chromium executable (env BROKER_CHROMIUM)")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the mix of cycles")
	fs.IntVar(&rssMB, "max-rss-growth", 50, "largest growth of the broker's RSS after warm-up, in MB")
	fs.IntVar(&c.maxFDGrowth, "max-fd-growth", 10, "largest growth of the broker's open file descriptors")
	fs.Func("broker-arg", "extra broker flag, such as --broker-arg=--warm=2 (repeatable)", func(v string) error {
		c.brokerArgs = append(c.brokerArgs, v)
		return nil
	})
	fs.StringVar(&c.brokerLog, "broker-log", "", "write the broker's whole JSON log to this file")
	fs.StringVar(&kinds, "kinds", "", "comma-separated kinds of cycle to run (default all: "+strings.Join(kindNames[:], ",")+")")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.cycles < 1 || c.capacity < 1 {
		return c, errors.New("--cycles and --capacity must be at least 1")
	}
	if c.concurrency <= 0 {
		c.concurrency = c.capacity
	}
	if c.warmup <= 0 {
		c.warmup = c.cycles / 10
	}
	c.maxRSSGrowth = int64(rssMB) << 20
	for name := range strings.SplitSeq(kinds, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		k := slices.Index(kindNames[:], name)
		if k < 0 {
			return c, fmt.Errorf("--kinds: unknown kind %q (kinds: %s)", name, strings.Join(kindNames[:], ","))
		}
		c.kinds = append(c.kinds, kind(k))
	}
	if len(c.kinds) == 0 {
		for k := range numKinds {
			c.kinds = append(c.kinds, k)
		}
	}
	return c, nil
}

// sample is what the soak knows about the broker at one moment.
type sample struct {
	rssKB   int64 // the broker's VmRSS
	threads int64
	fds     int
	procs   procCounts // below the broker
}

func takeSample(pid int) sample {
	return sample{
		rssKB:   proctree.StatusField(pid, "VmRSS"),
		threads: proctree.StatusField(pid, "Threads"),
		fds:     proctree.OpenFDs(pid),
		procs:   countProcs(pid),
	}
}

// peaks is what the monitor saw while the cycles ran.
type peaks struct {
	mu              sync.Mutex
	active          int32
	contexts        int32
	browsers        int32
	waiting         int32
	rssKB           int64
	procs           int
	renderers       int
	samples         int
	invariantBroken int // samples with invariant_ok false
	overCapacity    int // samples with active+opening > capacity
	warm            *sample
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if c.brokerPath == "" {
		dir, err := os.MkdirTemp("", "soak-broker-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if c.brokerPath, err = buildBroker(ctx, dir, stderr); err != nil {
			return err
		}
	}

	site := newSite()
	defer site.close()
	var logFile io.Writer
	if c.brokerLog != "" {
		f, err := os.Create(c.brokerLog)
		if err != nil {
			return err
		}
		defer f.Close()
		logFile = f
	}
	b, err := startBroker(ctx, c.brokerPath, logFile, append([]string{
		"--max-leases", fmt.Sprint(c.capacity),
		"--driver-dir", c.driverDir,
		"--chromium", c.chromium,
		"--check-interval", "250ms",
		"--state-dir", "", // no sticky sessions here
	}, c.brokerArgs...))
	if err != nil {
		return err
	}
	defer b.kill() // after a clean shutdown, a no-op
	conn, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	s := newSoaker(site, b, conn)

	// Cycle 0 runs alone, so the baseline is taken with every Chromium
	// helper process started and no lease held.
	start := time.Now()
	s.run(ctx, 0, kindRelease)
	if err := s.firstError(); err != nil {
		return fmt.Errorf("first cycle: %s\nbroker log:\n%s", err, b.logTail())
	}
	if _, err := s.waitIdle(ctx, 30*time.Second); err != nil {
		return err
	}
	base := stableSample(ctx, b.pid())

	var pk peaks
	monCtx, stopMon := context.WithCancel(ctx)
	monDone := make(chan struct{})
	go func() {
		defer close(monDone)
		s.monitor(monCtx, b.pid(), c, &pk)
	}()

	rng := rand.New(rand.NewPCG(c.seed, 0))
	kinds := make([]kind, c.cycles)
	for i := 1; i < c.cycles; i++ {
		kinds[i] = pickKind(rng, c.kinds)
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range c.concurrency {
		wg.Go(func() {
			for n := range next {
				s.run(ctx, n, kinds[n])
			}
		})
	}
feed:
	for n := 1; n < c.cycles; n++ {
		select {
		case next <- n:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	ran := time.Since(start)
	stopMon()
	<-monDone
	if ctx.Err() != nil {
		return ctx.Err()
	}

	// Settle: every reclaim finished, Chromium back to its baseline, every
	// hanging request closed.
	final, idleErr := s.waitIdle(ctx, 30*time.Second)
	// Whatever is left after 20s, the checks report.
	_ = waitUntil(ctx, 20*time.Second, func() bool {
		_, leaked := countProcs(b.pid()).leaked(base.procs)
		return len(leaked) == 0 && site.hangActive.Load() == 0
	})
	end := takeSample(b.pid())
	errorLines, invariantLines := b.logCounts()

	shutdownStart := time.Now()
	underBroker := proctree.Tree(b.pid())
	exitCode := b.shutdown(40 * time.Second)
	shutdownTook := time.Since(shutdownStart)
	left := stillAlive(underBroker, 5*time.Second)

	r := report{c: c, s: s, base: base, end: end, pk: &pk, final: final, ran: ran,
		exitCode: exitCode, shutdownTook: shutdownTook, left: left, hangOpen: site.hangActive.Load(),
		hangTotal: site.hangTotal.Load(), errorLines: errorLines, invariantLines: invariantLines}
	if idleErr != nil {
		r.failed = append(r.failed, idleErr.Error())
	}
	failed := r.print(stdout)
	if len(failed) > 0 {
		return fmt.Errorf("%d checks failed: %s\nbroker log (last lines):\n%s", len(failed), strings.Join(failed, "; "), b.logTail())
	}
	return nil
}

// pickKind draws one of kinds, by their weights.
func pickKind(rng *rand.Rand, kinds []kind) kind {
	total := 0
	for _, k := range kinds {
		total += kindWeights[k]
	}
	x := rng.IntN(total)
	for _, k := range kinds {
		if x < kindWeights[k] {
			return k
		}
		x -= kindWeights[k]
	}
	return kinds[0]
}

func (s *soaker) firstError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) > 0 {
		return errors.New(s.errs[0])
	}
	return nil
}

// waitIdle waits until the broker holds nothing: no lease, waiter, opening
// or context.
func (s *soaker) waitIdle(ctx context.Context, within time.Duration) (*brokerv1.GetStatsResponse, error) {
	var last *brokerv1.GetStatsResponse
	var lastErr error
	err := waitUntil(ctx, within, func() bool {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		last, lastErr = s.admin.GetStats(cctx, &brokerv1.GetStatsRequest{})
		return lastErr == nil && last.GetActive() == 0 && last.GetWaiting() == 0 && last.GetOpening() == 0 && last.GetBrowserContexts() == 0
	})
	if err != nil {
		return last, fmt.Errorf("broker not idle %v after the cycles: %s (%v)", within, statsLine(last), lastErr)
	}
	return last, nil
}

// monitor samples the broker every 100ms until ctx ends.
func (s *soaker) monitor(ctx context.Context, pid int, c config, pk *peaks) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := s.admin.GetStats(cctx, &brokerv1.GetStatsRequest{})
		cancel()
		var procs procCounts
		if i%3 == 0 { // a /proc walk is dearer than GetStats
			procs = countProcs(pid)
		}
		rss := proctree.StatusField(pid, "VmRSS")
		warm := s.done() >= c.warmup
		pk.mu.Lock()
		if err == nil {
			pk.samples++
			pk.active = max(pk.active, st.GetActive())
			pk.contexts = max(pk.contexts, st.GetBrowserContexts())
			pk.browsers = max(pk.browsers, st.GetBrowsers())
			pk.waiting = max(pk.waiting, st.GetWaiting())
			if !st.GetInvariantOk() {
				pk.invariantBroken++
			}
			if st.GetActive()+st.GetOpening() > st.GetCapacity() {
				pk.overCapacity++
			}
		}
		pk.rssKB = max(pk.rssKB, rss)
		pk.procs = max(pk.procs, procs.total)
		pk.renderers = max(pk.renderers, procs.renderers)
		if warm && pk.warm == nil {
			w := takeSample(pid)
			pk.warm = &w
		}
		pk.mu.Unlock()
	}
}

// stableSample waits (up to 10s) until the processes below the broker stop
// changing, then samples.
func stableSample(ctx context.Context, pid int) sample {
	prev := takeSample(pid)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(500 * time.Millisecond)
		cur := takeSample(pid)
		if cur.procs.total == prev.procs.total && cur.procs.renderers == prev.procs.renderers {
			return cur
		}
		prev = cur
	}
	return prev
}

func waitUntil(ctx context.Context, within time.Duration, ok func() bool) error {
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done within %v", within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// stillAlive waits for the processes to exit and returns those that did not.
func stillAlive(procs []proctree.Proc, within time.Duration) []int {
	deadline := time.Now().Add(within)
	for {
		var left []int
		for _, p := range procs {
			if proctree.Alive(p) {
				left = append(left, p.PID)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func reasonName(r brokerv1.ReclaimReason) string {
	return strings.TrimPrefix(r.String(), "RECLAIM_REASON_")
}

func statsLine(s *brokerv1.GetStatsResponse) string {
	if s == nil {
		return "no stats"
	}
	return fmt.Sprintf("active=%d waiting=%d opening=%d contexts=%d browsers=%d granted=%d reclaimed=%d",
		s.GetActive(), s.GetWaiting(), s.GetOpening(), s.GetBrowserContexts(), s.GetBrowsers(), s.GetGrantedTotal(), s.GetReclaimedTotal())
}

// report is the outcome of a soak.
type report struct {
	c              config
	s              *soaker
	base, end      sample
	pk             *peaks
	final          *brokerv1.GetStatsResponse
	ran            time.Duration
	exitCode       int
	shutdownTook   time.Duration
	left           []int
	hangOpen       int64
	hangTotal      int64
	errorLines     int
	invariantLines int
	failed         []string
}

func mb(kb int64) string { return fmt.Sprintf("%.1f MB", float64(kb)/1024) }

// print writes the summary table and the checks, and returns the failed
// checks.
func (r *report) print(w io.Writer) []string {
	s, st, pk := r.s, r.final, r.pk
	s.mu.Lock()
	defer s.mu.Unlock()
	pk.mu.Lock()
	defer pk.mu.Unlock()
	warm := r.base
	if pk.warm != nil {
		warm = *pk.warm
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "soak: %d cycles at concurrency %d, capacity %d, in %v (%.1f cycles/s)\n",
		r.c.cycles, r.c.concurrency, r.c.capacity, r.ran.Round(100*time.Millisecond), float64(r.c.cycles)/r.ran.Seconds())
	fmt.Fprintln(tw, "\ncycle kind\tcycles\t")
	for k := range numKinds {
		fmt.Fprintf(tw, "  %v\t%d\t\n", k, s.byKind[k])
	}
	fmt.Fprintln(tw, "\nreclaims by reason\tbroker\tholders\t")
	var reasons []brokerv1.ReclaimReason
	for _, rc := range st.GetReclaimed() {
		reasons = append(reasons, rc.GetReason())
	}
	for r := range s.byReason {
		if !slices.Contains(reasons, r) {
			reasons = append(reasons, r)
		}
	}
	slices.Sort(reasons)
	brokerBy := map[brokerv1.ReclaimReason]uint64{}
	var brokerSum, holderSum uint64
	for _, rc := range st.GetReclaimed() {
		brokerBy[rc.GetReason()] = rc.GetCount()
	}
	mismatch := false
	for _, reason := range reasons {
		if brokerBy[reason] == 0 && s.byReason[reason] == 0 {
			continue
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t\n", reasonName(reason), brokerBy[reason], s.byReason[reason])
		brokerSum += brokerBy[reason]
		holderSum += s.byReason[reason]
		if brokerBy[reason] != s.byReason[reason] {
			mismatch = true
		}
	}
	fmt.Fprintf(tw, "  total\t%d\t%d\t\n", brokerSum, holderSum)
	fmt.Fprintln(tw)
	var races []string
	for k, v := range s.raceRes {
		races = append(races, fmt.Sprintf("%s %d", strings.TrimPrefix(k, "revoke answered "), v))
	}
	slices.Sort(races)
	fmt.Fprintf(tw, "duplicate triggers absorbed\t%d\t\n", st.GetDuplicateTriggers())
	if len(races) > 0 {
		fmt.Fprintf(tw, "release racing revoke\t%s\t\n", strings.Join(races, ", "))
	}
	fmt.Fprintf(tw, "peak active / contexts / browsers / waiting\t%d / %d / %d / %d\t\n", pk.active, pk.contexts, pk.browsers, pk.waiting)
	fmt.Fprintf(tw, "page crash detection, slowest\t%v\t\n", s.crashMax.Round(time.Millisecond))
	fmt.Fprintf(tw, "hanging requests seen / still open\t%d / %d\t\n", r.hangTotal, r.hangOpen)
	fmt.Fprintf(tw, "short-TTL leases expired before a planned command\t%d\t\n", s.expiredEarly)
	fmt.Fprintf(tw, "leases reclaimed as the page of a cancelled script could not be replaced\t%d\t\n", s.pageNotReplaced)
	fmt.Fprintf(tw, "broker RSS start / after warm-up (%d cycles) / end / peak\t%s / %s / %s / %s\t\n",
		r.c.warmup, mb(r.base.rssKB), mb(warm.rssKB), mb(r.end.rssKB), mb(pk.rssKB))
	fmt.Fprintf(tw, "broker threads start / end\t%d / %d\t\n", r.base.threads, r.end.threads)
	fmt.Fprintf(tw, "broker open fds start / end\t%d / %d\t\n", r.base.fds, r.end.fds)
	fmt.Fprintf(tw, "processes under the broker start / peak / end\t%d / %d / %d\t\n", r.base.procs.total, pk.procs, r.end.procs.total)
	fmt.Fprintf(tw, "renderers start / peak / end\t%d / %d / %d\t\n", r.base.procs.renderers, pk.renderers, r.end.procs.renderers)
	fmt.Fprintf(tw, "RSS of driver / browser / all below the broker, start\t%s / %s / %s\t\n",
		mb(r.base.procs.rssByRole["driver"]), mb(r.base.procs.rssByRole["browser"]), mb(r.base.procs.rssKB))
	fmt.Fprintf(tw, "RSS of driver / browser / all below the broker, end\t%s / %s / %s\t\n",
		mb(r.end.procs.rssByRole["driver"]), mb(r.end.procs.rssByRole["browser"]), mb(r.end.procs.rssKB))
	fmt.Fprintf(tw, "invariant ok / violations / broken samples of %d\t%v / %d / %d\t\n", pk.samples, st.GetInvariantOk(), st.GetInvariantViolations(), pk.invariantBroken)
	fmt.Fprintf(tw, "broker log errors / LEASE INVARIANT BROKEN\t%d / %d\t\n", r.errorLines, r.invariantLines)
	fmt.Fprintf(tw, "SIGTERM to exit\t%v (code %d)\t\n", r.shutdownTook.Round(time.Millisecond), r.exitCode)
	tw.Flush()

	failed := r.failed
	check := func(ok bool, what string, detail ...any) {
		mark := "ok  "
		if !ok {
			mark = "FAIL"
			failed = append(failed, what)
		}
		line := what
		if len(detail) > 0 {
			line += ": " + fmt.Sprint(detail...)
		}
		fmt.Fprintf(w, "%s %s\n", mark, line)
	}
	fmt.Fprintln(w, "\nchecks:")
	check(len(s.errs) == 0, "every cycle behaved", fmt.Sprintf("%d cycles went wrong", len(s.errs)))
	for i, e := range s.errs {
		if i == 10 {
			fmt.Fprintf(w, "       … and %d more\n", len(s.errs)-10)
			break
		}
		fmt.Fprintf(w, "       %s\n", e)
	}
	// The overload outcomes are documented and counted, but a broker that
	// took them often would be broken, not loaded.
	shortTTL := s.byKind[kindTTL] + s.byKind[kindCloseSend]
	check(s.expiredEarly*10 <= shortTTL, "short-TTL leases expired early in at most 10% of their cycles",
		fmt.Sprintf("%d of %d", s.expiredEarly, shortTTL))
	check(s.pageNotReplaced*10 <= s.byKind[kindHang], "pages of cancelled scripts not replaced in at most 10% of hang cycles",
		fmt.Sprintf("%d of %d", s.pageNotReplaced, s.byKind[kindHang]))
	check(st.GetActive() == 0 && st.GetWaiting() == 0 && st.GetOpening() == 0 && st.GetBrowserContexts() == 0,
		"no lease, waiter or context left", statsLine(st))
	check(st.GetGrantedTotal() == uint64(r.c.cycles) && st.GetReclaimedTotal() == uint64(r.c.cycles) && brokerSum == uint64(r.c.cycles),
		"reclaims add up to the cycles", fmt.Sprintf("granted %d, reclaimed %d, want %d", st.GetGrantedTotal(), st.GetReclaimedTotal(), r.c.cycles))
	check(!mismatch, "reclaims by reason match what the holders were told")
	check(st.GetInvariantOk() && st.GetInvariantViolations() == 0 && pk.invariantBroken == 0 && r.invariantLines == 0,
		"lease invariant held throughout")
	check(pk.overCapacity == 0 && pk.active <= int32(r.c.capacity), "capacity never exceeded", fmt.Sprintf("peak active %d", pk.active))
	started, leaked := r.end.procs.leaked(r.base.procs)
	detail := fmt.Sprintf("%d → %d processes, %d → %d renderers", r.base.procs.total, r.end.procs.total, r.base.procs.renderers, r.end.procs.renderers)
	if len(leaked) > 0 {
		detail += "; more than at the start: " + strings.Join(leaked, ", ")
	}
	if len(started) > 0 {
		detail += "; Chromium services started once during the run (tolerated): " + strings.Join(started, ", ")
	}
	check(len(leaked) == 0, "Chromium processes back to baseline", detail)
	check(r.hangOpen == 0, "every hanging request closed by the end", fmt.Sprintf("%d still open", r.hangOpen))
	check(s.navNotStopped == 0, "timed-out navigations stopped in the browser",
		fmt.Sprintf("%d of %d still loading %v after DEADLINE_EXCEEDED; %d stopped within %v, %d later (slowest %v), %d before their request reached the site",
			s.navNotStopped, s.navStopped+s.navStoppedLate+s.navNotStopped+s.navNeverSent, navStopLimit,
			s.navStopped, navStopBound, s.navStoppedLate, s.navStopMax.Round(time.Millisecond), s.navNeverSent))
	growth := (r.end.rssKB - warm.rssKB) << 10
	check(growth < r.c.maxRSSGrowth, "broker RSS growth after warm-up under the limit",
		fmt.Sprintf("%+.1f MB (limit %d MB)", float64(growth)/(1<<20), r.c.maxRSSGrowth>>20))
	check(r.end.fds <= r.base.fds+r.c.maxFDGrowth, "broker file descriptors back to baseline",
		fmt.Sprintf("%d → %d (slack %d)", r.base.fds, r.end.fds, r.c.maxFDGrowth))
	check(r.exitCode == 0 && len(r.left) == 0, "broker exits 0 on SIGTERM and leaves no process",
		fmt.Sprintf("exit %d, left %v", r.exitCode, r.left))
	return failed
}
