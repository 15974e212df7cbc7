package browser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.uber.org/zap"
)

// DriverVersion is the Playwright driver version playwright-go v0.5200.1
// speaks; Check refuses any other.
const DriverVersion = "1.52.0"

// Defaults of the Config fields left zero.
const (
	DefaultContextsPerBrowser = 8
	DefaultLaunchTimeout      = 30 * time.Second
	DefaultCloseTimeout       = 5 * time.Second
	DefaultWarmRefillMaxDelay = 2 * time.Second
)

// Browser types: Config.BrowserType names one of Playwright's engines.
const (
	Chromium = "chromium"
	Firefox  = "firefox"
	WebKit   = "webkit"
)

// Config configures a Pool. The zero value of each optional field means its
// default.
type Config struct {
	// DriverDir is the Playwright driver folder (package/cli.js and a node
	// launcher). Required, remote sources included: they are reached
	// through the driver.
	DriverDir string
	// ExecutablePath is the Chromium binary. Required when the pool
	// launches Chromium itself (NoLocal unset, BrowserType chromium);
	// firefox and webkit launches use Playwright's own builds.
	ExecutablePath string
	// BrowserType is the engine launched and connected to: "chromium",
	// "firefox" or "webkit". Default "chromium".
	BrowserType string
	// Connect lists remote browser sources: Playwright browser-server
	// WebSocket endpoints (ws://host:port/path, as printed by
	// `playwright launch-server` or chromium.launchServer(), or a Camoufox
	// server), each attached through the driver. A source that cannot be
	// reached at start or drops later is reconnected in the background.
	// Default none.
	Connect []string
	// NoLocal stops the pool from launching browsers itself: contexts come
	// from the Connect sources only. Default false: local browsers are
	// launched whenever no connected browser has room.
	NoLocal bool
	// ContextsPerBrowser is how many contexts share one browser (a local
	// process or a remote connection) before another is launched or
	// connected. Default 8.
	ContextsPerBrowser int
	// BrowserMaxContexts retires a browser once this many contexts (warm
	// ones included) have been created on it: it takes no new contexts,
	// serves its live ones, and is closed (a remote one disconnected) when
	// the last of them closes. Default 0: no limit.
	BrowserMaxContexts int
	// BrowserMaxAge retires a browser older than this, as BrowserMaxContexts
	// does; its warm contexts are dropped. Checked whenever a browser is
	// picked for a new context or a warm one is taken, and each second
	// while a warm pool runs. Default 0: no limit.
	BrowserMaxAge time.Duration
	// LaunchTimeout bounds starting the driver and launching one browser.
	// Default 30s.
	LaunchTimeout time.Duration
	// CloseTimeout bounds closing one context, one page or one browser; a
	// context close that takes longer retires its browser. Default 5s.
	CloseTimeout time.Duration
	// Warm is how many contexts (with their page) to keep made ahead with
	// the default options, for NewContext calls that ask for nothing else.
	// Default 0: none.
	Warm int
	// WarmRefillMaxDelay bounds how long the warm pool's refill waits for
	// live work on the pool's contexts to pause before it makes a context
	// anyway (see warm.go: the refill yields to page commands, to new
	// contexts being made for callers, and to a warm context just handed
	// out until its first command has finished). Default 2s.
	WarmRefillMaxDelay time.Duration
	// MaxContexts bounds the contexts that exist at once, handed out and
	// warm; warm ones are closed to make room. Default 0: no bound.
	MaxContexts int
	// MemoryLow, when set, says whether the machine is short of memory.
	// While it says true the warm pool is not refilled: a warm context
	// costs as much memory as a leased one, and memory admission holds new
	// leases back for the same reason. It is read when the refill runs (on
	// a kick and each second), so it must be cheap: the broker passes the
	// lease manager's admission reading, not a probe of its own. NewContext
	// itself does not consult it; callers admit before they ask. Default
	// nil: memory is never low.
	MemoryLow func() bool
	// Args are extra Chromium command-line arguments.
	Args []string
	// DenyPrivateNetworks sends every context's traffic through a proxy of
	// the pool's own that refuses loopback, private, link-local,
	// unique-local, carrier-grade NAT and cloud metadata addresses (after
	// resolving the host, any of its addresses) for navigations,
	// redirects, subresources, workers and WebSockets alike; see policy.go.
	// Contexts may then have no proxy of their own (ErrPolicy), and the
	// pool launches Chromium only: no Connect sources, no other browser
	// type. Default false.
	DenyPrivateNetworks bool
	// Logger receives the pool's events. Default: zap.NewNop().
	Logger *zap.Logger

	// Test hooks of the egress proxy (policy.go): nil means the real ones,
	// net.DefaultResolver and deniedNetworks.
	lookupHost     func(ctx context.Context, host string) ([]netip.Addr, error)
	deniedNetworks []deniedNetwork
}

func (cfg Config) withDefaults() Config {
	if cfg.ContextsPerBrowser <= 0 {
		cfg.ContextsPerBrowser = DefaultContextsPerBrowser
	}
	if cfg.LaunchTimeout <= 0 {
		cfg.LaunchTimeout = DefaultLaunchTimeout
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = DefaultCloseTimeout
	}
	if cfg.WarmRefillMaxDelay <= 0 {
		cfg.WarmRefillMaxDelay = DefaultWarmRefillMaxDelay
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.BrowserType == "" {
		cfg.BrowserType = Chromium
	}
	return cfg
}

// local reports whether the pool launches browsers itself.
func (cfg Config) local() bool { return !cfg.NoLocal }

// Check verifies that the Playwright driver (package/cli.js and node in
// cfg.DriverDir, version DriverVersion) and the Chromium binary exist; its
// error then wraps ErrNotInstalled, names the missing path and says how to
// fix it. It also checks the browser sources (BrowserType, Connect,
// NoLocal), whose errors wrap ErrInvalidArgument.
func Check(cfg Config) error {
	if err := checkSources(cfg); err != nil {
		return err
	}
	const fixDriver = "run `make setup` or pass --driver-dir"
	const fixChromium = "run `make setup` or pass --chromium"
	if cfg.DriverDir == "" {
		return fmt.Errorf("%w: no Playwright driver directory given (%s)", ErrNotInstalled, fixDriver)
	}
	cli := filepath.Join(cfg.DriverDir, "package", "cli.js")
	if err := checkFile(cli, false); err != nil {
		return fmt.Errorf("%w: Playwright driver: %v (%s)", ErrNotInstalled, err, fixDriver)
	}
	node := filepath.Join(cfg.DriverDir, "node")
	if err := checkFile(node, true); err != nil {
		return fmt.Errorf("%w: Playwright driver: %v (%s)", ErrNotInstalled, err, fixDriver)
	}
	pkg := filepath.Join(cfg.DriverDir, "package", "package.json")
	version, err := packageVersion(pkg)
	if err != nil {
		return fmt.Errorf("%w: Playwright driver: %v (%s)", ErrNotInstalled, err, fixDriver)
	}
	if version != DriverVersion {
		return fmt.Errorf("%w: Playwright driver %s is version %q, want %q (%s)",
			ErrNotInstalled, pkg, version, DriverVersion, fixDriver)
	}
	if !cfg.local() || (cfg.BrowserType != "" && cfg.BrowserType != Chromium) {
		return nil // no Chromium of ours to launch
	}
	if cfg.ExecutablePath == "" {
		return fmt.Errorf("%w: no Chromium executable given (%s)", ErrNotInstalled, fixChromium)
	}
	if err := checkFile(cfg.ExecutablePath, true); err != nil {
		return fmt.Errorf("%w: Chromium: %v (%s)", ErrNotInstalled, err, fixChromium)
	}
	return nil
}

// checkSources checks the browser type and the remote endpoints, and that
// there is at least one source.
func checkSources(cfg Config) error {
	switch cfg.BrowserType {
	case "", Chromium, Firefox, WebKit:
	default:
		return fmt.Errorf("%w: browser type %q: want %s, %s or %s",
			ErrInvalidArgument, cfg.BrowserType, Chromium, Firefox, WebKit)
	}
	for i, ep := range cfg.Connect {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return fmt.Errorf("%w: browser endpoint %q: want ws://host:port/path or wss://...", ErrInvalidArgument, ep)
		}
		if slices.Contains(cfg.Connect[:i], ep) {
			return fmt.Errorf("%w: browser endpoint %q given twice", ErrInvalidArgument, ep)
		}
	}
	if cfg.NoLocal && len(cfg.Connect) == 0 {
		return fmt.Errorf("%w: no browser source: local launching is off and no endpoint to connect to", ErrInvalidArgument)
	}
	if cfg.DenyPrivateNetworks && (len(cfg.Connect) > 0 || (cfg.BrowserType != "" && cfg.BrowserType != Chromium)) {
		return fmt.Errorf("%w: deny private networks needs local Chromium: remote browsers cannot reach the broker's egress proxy, and other engines are untested", ErrInvalidArgument)
	}
	if cfg.BrowserMaxContexts < 0 || cfg.BrowserMaxAge < 0 {
		return fmt.Errorf("%w: negative browser max contexts or max age", ErrInvalidArgument)
	}
	if cfg.WarmRefillMaxDelay < 0 {
		return fmt.Errorf("%w: negative warm refill max delay", ErrInvalidArgument)
	}
	return nil
}

// checkFile reports a missing, non-regular or (when exec) non-executable
// file, naming its path.
func checkFile(path string, exec bool) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s does not exist", path)
	case err != nil:
		return fmt.Errorf("%s: %w", path, err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", path)
	case exec && fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("%s is not executable", path)
	}
	return nil
}

func packageVersion(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%s does not exist", path)
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		return "", fmt.Errorf("%s: not valid JSON", path)
	}
	return pkg.Version, nil
}
