// Command broker serves browser leases over gRPC: workers lease an isolated
// Chromium context and page, drive it with page commands, and every lease is
// reclaimed exactly once, whatever ends it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"

	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/dashboard"
	"github.com/browserbroker/broker/internal/fleet"
	"github.com/browserbroker/broker/internal/lease"
	"github.com/browserbroker/broker/internal/server"
	"github.com/browserbroker/broker/internal/state"
	"github.com/browserbroker/broker/internal/sysmem"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

// playwrightVersion is the driver version playwright-go expects.
const playwrightVersion = "1.52.0"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "broker: %v\n", err)
		os.Exit(1)
	}
}

type config struct {
	stateDir        string
	minFreeMemory   byteSize
	addr            string
	metricsAddr     string
	dashboard       bool
	lease           lease.Config
	browser         browser.Config
	grpc            server.GRPCConfig
	commandTimeout  time.Duration
	maxCommand      time.Duration
	shutdownTimeout time.Duration
	logFormat       string
	logLevel        zapcore.Level
	showVersion     bool
	security        securityConfig
	fleet           fleetConfig
	disableEvaluate bool
}

// byteSize is a flag of bytes with units: 512MiB, 2GiB, 0.
type byteSize uint64

func (b *byteSize) String() string { return fmt.Sprint(uint64(*b)) }
func (b *byteSize) Set(v string) error {
	n, err := sysmem.ParseSize(v)
	*b = byteSize(n)
	return err
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: broker [flags]\n\nServes browser leases over gRPC. Flags:\n")
		fs.PrintDefaults()
	}
	defaultDriver := os.Getenv("PLAYWRIGHT_DRIVER_PATH")
	if defaultDriver == "" {
		defaultDriver = filepath.Join(".cache", "playwright", playwrightVersion)
	}
	var args2 stringList
	fs.StringVar(&c.addr, "addr", "localhost:7070", "listen address")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics, such as localhost:9090 (default: off)")
	fs.BoolVar(&c.dashboard, "dashboard", true, "serve the operator dashboard at http://METRICS-ADDR/dashboard/ beside /metrics (needs --metrics-addr; a loopback one unless --insecure; the admin role when authentication is on)")
	fs.IntVar(&c.lease.Capacity, "max-leases", defaultCapacity(), "most leases held at once (default: sized for this machine)")
	fs.IntVar(&c.lease.MaxQueue, "max-queue", 1000, "most acquires waiting for capacity; beyond it RESOURCE_EXHAUSTED at once")
	fs.DurationVar(&c.lease.DefaultTTL, "default-ttl", time.Minute, "idle TTL of a lease that asks for none")
	fs.DurationVar(&c.lease.MaxTTL, "max-ttl", time.Hour, "longest idle TTL a lease may ask for")
	fs.DurationVar(&c.lease.DefaultWait, "default-wait", 30*time.Second, "queue wait of an acquire that asks for none")
	fs.DurationVar(&c.lease.MaxWait, "max-wait", 10*time.Minute, "longest queue wait an acquire may ask for")
	fs.DurationVar(&c.lease.MaxLifetime, "max-lifetime", time.Hour, "longest life of any lease, however active")
	fs.Float64Var(&c.lease.Jitter, "ttl-jitter", 0.1, "fraction of the TTL added at random to each lease's idle expiry")
	fs.DurationVar(&c.lease.CloseTimeout, "close-timeout", 10*time.Second, "deadline for closing a lease's browser context")
	fs.DurationVar(&c.lease.CheckInterval, "check-interval", 10*time.Second, "how often the lease invariant is checked")
	fs.DurationVar(&c.commandTimeout, "command-timeout", 30*time.Second, "time limit of a page command that names none")
	fs.DurationVar(&c.maxCommand, "max-command-timeout", 5*time.Minute, "cap on every page command's time limit")
	fs.StringVar(&c.browser.DriverDir, "driver-dir", defaultDriver, "Playwright driver folder (package/ and node); `make setup` installs it (env PLAYWRIGHT_DRIVER_PATH)")
	fs.StringVar(&c.browser.ExecutablePath, "chromium", "/usr/bin/chromium", "Chromium executable; `make setup` installs Debian's")
	fs.Var(&args2, "chromium-arg", "extra Chromium command-line argument (repeatable)")
	var connect stringList
	fs.Var(&connect, "connect", "attach to a remote Playwright browser server at this ws:// endpoint (repeatable); its contexts share --max-leases")
	fs.BoolVar(&c.browser.NoLocal, "no-local", false, "launch no local browser: use only the --connect endpoints")
	fs.StringVar(&c.browser.BrowserType, "browser-type", "chromium", "chromium, firefox or webkit (only chromium is tested here; the others need Playwright's own builds)")
	fs.IntVar(&c.browser.BrowserMaxContexts, "browser-max-contexts", 0, "retire a browser after this many contexts: it takes no new ones and closes when its last lease ends (0: never)")
	fs.DurationVar(&c.browser.BrowserMaxAge, "browser-max-age", 0, "retire a browser this old, the same way (0: never)")
	fs.IntVar(&c.browser.ContextsPerBrowser, "contexts-per-browser", 8, "browser contexts per Chromium process before another is launched")
	fs.StringVar(&c.stateDir, "state-dir", defaultStateDir(), "where sticky sessions' state (storage state, generations) is kept; empty: nowhere, only in memory")
	fs.DurationVar(&c.lease.SessionIdleTTL, "session-idle-ttl", 5*time.Minute, "how long a sticky session's context stays open after its lease ends; negative: closed at once (state saved)")
	c.minFreeMemory = 256 << 20
	fs.Var(&c.minFreeMemory, "min-free-memory", "while the machine's available memory (cgroup-aware) is under this, new leases wait in the queue; 0: off (default 256MiB)")
	fs.IntVar(&c.browser.Warm, "warm", 0, "browser contexts to keep made ahead (with their page) for acquires with default options; they count toward --max-leases")
	fs.BoolVar(&c.browser.DenyPrivateNetworks, "deny-private-networks", false, "pages may reach public addresses only: loopback, private, link-local, unique-local, CGNAT and cloud metadata addresses are refused, for navigations, redirects, subresources, workers and WebSockets (local Chromium only; per-lease proxies are refused)")
	fs.BoolVar(&c.disableEvaluate, "disable-evaluate", false, "refuse PageService.Evaluate with PERMISSION_DENIED: clients cannot run their own scripts in pages")
	fs.DurationVar(&c.grpc.KeepaliveTime, "keepalive-time", 10*time.Second, "ping a client connection idle this long")
	fs.DurationVar(&c.grpc.KeepaliveTimeout, "keepalive-timeout", 5*time.Second, "close a connection whose ping is unanswered this long (its leases: STREAM_CLOSED)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM, how long to wait for leases to end and calls to finish")
	fs.StringVar(&c.logFormat, "log-format", "console", "log format: console or json")
	c.logLevel = zapcore.InfoLevel
	fs.Var(&c.logLevel, "log-level", "log level: debug, info, warn, error")
	fs.BoolVar(&c.showVersion, "version", false, "print the version and exit")
	c.security.register(fs)
	c.fleet.register(fs)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.browser.Args = args2
	c.browser.Connect = connect
	// Warm contexts and leased ones share the capacity.
	c.browser.MaxContexts = c.lease.Capacity
	if c.logFormat != "console" && c.logFormat != "json" {
		return c, fmt.Errorf("--log-format must be console or json, got %q", c.logFormat)
	}
	if c.lease.Capacity < 1 {
		return c, fmt.Errorf("--max-leases must be at least 1")
	}
	if err := c.security.check(); err != nil {
		return c, err
	}
	if err := c.fleet.check(c.security.tlsCert != ""); err != nil {
		return c, err
	}
	return c, nil
}

// defaultStateDir is $XDG_STATE_HOME/browserbroker, else
// ~/.local/state/browserbroker.
func defaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "browserbroker")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "browserbroker")
	}
	return ""
}

// memoryAdmission says no while available memory is under the floor, and
// keeps the last reading for GetStats.
type memoryAdmission struct {
	floor uint64
	last  atomic.Uint64
	low   atomic.Bool // the last answer was no
}

func (a *memoryAdmission) admit() (bool, string) {
	r, err := sysmem.Available()
	if err != nil {
		a.low.Store(false)
		return true, "available memory unknown: " + err.Error() // fail open: the broker still serves
	}
	a.last.Store(r.Bytes)
	a.low.Store(r.Bytes < a.floor)
	if r.Bytes < a.floor {
		return false, fmt.Sprintf("%d MiB available (%s), under --min-free-memory %d MiB", r.Bytes>>20, r.Source, a.floor>>20)
	}
	return true, fmt.Sprintf("%d MiB available (%s)", r.Bytes>>20, r.Source)
}

// defaultCapacity sizes --max-leases for this machine: 4 per CPU, and no
// more than one per 256 MiB of memory (a context with a loaded page costs
// about 37 MiB PSS, plus its browser's share: see the README's figures).
func defaultCapacity() int {
	n := 4 * runtime.NumCPU()
	if mem := totalMemory(); mem > 0 {
		n = min(n, int(mem/(256<<20)))
	}
	return max(n, 1)
}

func totalMemory() uint64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0
	}
	return uint64(si.Totalram) * uint64(si.Unit)
}

func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return v
}

func newLogger(c config, w io.Writer) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	var encoder zapcore.Encoder
	if c.logFormat == "json" {
		encoder = zapcore.NewJSONEncoder(enc)
	} else {
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		encoder = zapcore.NewConsoleEncoder(enc)
	}
	return zap.New(zapcore.NewCore(encoder, zapcore.AddSync(w), c.logLevel))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if c.showVersion {
		fmt.Fprintf(stdout, "broker %s (playwright %s)\n", versionString(), playwrightVersion)
		return nil
	}
	log := newLogger(c, stderr)
	defer log.Sync()
	c.lease.Logger = log.Named("lease")
	c.browser.Logger = log.Named("browser")

	if err := c.security.checkExposure(ctx, c.addr, log); err != nil {
		return err
	}
	sec, err := loadSecurity(c.security, log)
	if err != nil {
		return err
	}
	if sec.auth != nil {
		c.lease.PrincipalLimit = sec.auth.LeaseLimit(c.security.maxLeases)
	}
	c.grpc.TLS = sec.tls
	if err := browser.Check(c.browser); err != nil {
		return err
	}
	// Sticky sessions' state: in Redis for a fleet, so any broker can
	// restore a session; under --state-dir for a broker alone.
	var saved server.SessionState
	var sessions server.SessionRecords
	if c.fleet.redisURL != "" {
		log.Info("fleet: sticky sessions' state is kept in Redis; --state-dir is not used")
	} else if c.stateDir != "" {
		store, err := state.Open(c.stateDir)
		if err != nil {
			return err
		}
		defer store.Close()
		c.lease.Sessions, sessions, saved = store, store, store
	} else {
		log.Warn("no --state-dir: sticky sessions are not saved, and their generations restart with the broker")
	}
	lis, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	defer lis.Close()
	// Both listeners before anything starts: a taken metrics port must
	// not fail the start with the fleet joined and the server serving.
	var mlis net.Listener
	if c.metricsAddr != "" {
		if mlis, err = net.Listen("tcp", c.metricsAddr); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		defer mlis.Close()
	}
	var fleetAddr string
	var fleetDial []grpc.DialOption
	if c.fleet.redisURL != "" {
		if fleetAddr, err = c.fleet.advertised(lis.Addr(), c.addr); err != nil {
			return err
		}
		if fleetDial, err = c.fleet.dialOptions(sec); err != nil {
			return err
		}
		c.lease.IDPrefix = fleet.LeaseIDPrefix(c.fleet.id)
	}

	// Chromium and the driver put profiles and artifacts under TMPDIR and
	// leave them behind when they crash: give them a folder of ours, removed
	// when the broker stops.
	tmp, fellBack, err := browser.MkdirTemp("broker-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if fellBack {
		log.Warn("TMPDIR is too deep for Chromium's socket path; its temporary files go to /tmp instead",
			zap.String("tmpdir", os.TempDir()), zap.String("dir", tmp))
	}
	os.Setenv("TMPDIR", tmp)

	started := time.Now()
	// One memory probe, the lease manager's admission loop: the warm pool
	// reads its last answer and holds its refill while memory is low.
	var memAvailable func() uint64
	if c.minFreeMemory > 0 {
		adm := &memoryAdmission{floor: uint64(c.minFreeMemory)}
		c.lease.Admit = adm.admit
		memAvailable = adm.last.Load
		c.browser.MemoryLow = adm.low.Load
	}
	pool, err := browser.NewPool(ctx, c.browser)
	if err != nil {
		return fmt.Errorf("start browsers: %w", err)
	}
	var leases *lease.Manager
	var fl *fleet.Fleet
	var inFleet server.Fleet // nil, not a nil *fleet.Fleet, without a fleet
	if c.fleet.redisURL != "" {
		// The fleet's session store serves the lease manager; the
		// registration, started once the manager exists, reports its load.
		var rdb io.Closer
		if fl, rdb, err = c.fleet.join(func() *lease.Manager { return leases }, fleetAddr, log.Named("fleet")); err != nil {
			return err
		}
		defer rdb.Close()
		inFleet = fl
		c.lease.PrincipalElsewhere = fl.PrincipalLeases // limits count the whole fleet's leases
		c.lease.OnChange = fl.Nudge                     // the others see this broker's load soon
		st := fl.SessionStore()
		c.lease.Sessions, sessions, saved = st, st, st
		log.Info("fleet", zap.String("broker_id", fl.ID()), zap.String("advertise", fleetAddr))
	}
	leases = lease.New(server.BrowserBackend{Pool: pool, Store: saved}, c.lease)
	if fl != nil {
		if err := fl.Start(); err != nil {
			// Another live broker has this id: its lease ids and sessions
			// would be taken for ours.
			closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			leases.Close(closeCtx)
			pool.Close(closeCtx)
			return err
		}
	}
	metrics := server.NewMetrics(leases, pool)
	srv := server.New(server.Config{
		Fleet:             inFleet,
		FleetDial:         fleetDial,
		Leases:            leases,
		Browsers:          pool,
		Sessions:          sessions,
		MemoryAvailable:   memAvailable,
		CommandTimeout:    c.commandTimeout,
		MaxCommandTimeout: c.maxCommand,
		Metrics:           metrics,
		DisableEvaluate:   c.disableEvaluate,
		Auth:              sec.auth,
		AcquireRate:       c.security.acquireRate,
		AcquireBurst:      c.security.acquireBurst,
		Logger:            log.Named("server"),
	})
	g, health := server.NewGRPCServer(srv, c.grpc)
	stopReload := sec.reloadOnSIGHUP(log)
	defer stopReload()
	serveErr := make(chan error, 1)
	go func() { serveErr <- g.Serve(lis) }()
	if mlis != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler())
		if c.security.dashboardAllowed(ctx, c.dashboard, c.metricsAddr, log) {
			dcfg := dashboard.Config{Leases: leases, Browsers: pool, Drainer: srv, Auth: sec.auth, Logger: log.Named("dashboard")}
			if fl != nil {
				dcfg.Fleet = fl // not a nil *fleet.Fleet: no fleet panel outside a fleet
			}
			dash := dashboard.New(dcfg)
			defer dash.Close() // after hs.Close (deferred below): no live view outlasts it
			mux.Handle("/dashboard/", dash)
			mux.Handle("GET /{$}", http.RedirectHandler("/dashboard/", http.StatusFound))
		}
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(mlis)
		defer hs.Close()
		log.Info("metrics listening", zap.String("addr", mlis.Addr().String()), zap.Bool("dashboard", c.dashboard))
	}
	log.Info("broker listening", zap.String("addr", lis.Addr().String()), zap.Bool("tls", sec.tls != nil),
		zap.Int("max_leases", c.lease.Capacity), zap.String("version", versionString()),
		zap.Duration("keepalive_bound", c.grpc.KeepaliveTime+c.grpc.KeepaliveTimeout),
		zap.Duration("startup", time.Since(started)))

	select {
	case <-ctx.Done():
		log.Info("shutting down", zap.Duration("grace", c.shutdownTimeout))
	case err = <-serveErr:
		log.Error("gRPC server failed", zap.Error(err))
	}

	// Shutdown: stop advertising, end every lease (holders get
	// revoked{SHUTDOWN} and their streams end), then stop the server, then
	// the browsers.
	health.Shutdown()
	grace, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	if cerr := leases.Close(grace); cerr != nil {
		log.Warn("leases did not all end in time", zap.Error(cerr))
	}
	if fl != nil {
		// Leave the fleet once the leases have ended and sticky sessions
		// are saved: until then the heartbeat keeps their ownership here
		// (forwarded acquires meanwhile are refused, and served where they
		// came in).
		if ferr := fl.Close(); ferr != nil {
			log.Warn("leaving the fleet", zap.Error(ferr))
		}
	}
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-grace.Done():
		log.Warn("calls still running at the end of the grace period; stopping hard")
		g.Stop()
		<-stopped
	}
	srv.Close()
	closeCtx, cancelClose := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelClose()
	if cerr := pool.Close(closeCtx); cerr != nil {
		log.Warn("closing browsers", zap.Error(cerr))
	}
	log.Info("broker stopped")
	return err
}
