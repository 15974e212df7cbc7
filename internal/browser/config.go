package browser

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
)

// Config configures a Pool. The zero value of each optional field means its
// default.
type Config struct {
	// DriverDir is the Playwright driver folder (package/cli.js and a node
	// launcher). Required.
	DriverDir string
	// ExecutablePath is the Chromium binary. Required.
	ExecutablePath string
	// ContextsPerBrowser is how many contexts share one Chromium process
	// before another is launched. Default 8.
	ContextsPerBrowser int
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
	// MaxContexts bounds the contexts that exist at once, handed out and
	// warm; warm ones are closed to make room. Default 0: no bound.
	MaxContexts int
	// Args are extra Chromium command-line arguments.
	Args []string
	// Logger receives the pool's events. Default: zap.NewNop().
	Logger *zap.Logger
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
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return cfg
}

// Check verifies that the Playwright driver (package/cli.js and node in
// cfg.DriverDir, version DriverVersion) and the Chromium binary exist. Its
// error wraps ErrNotInstalled, names the missing path and says how to fix it.
func Check(cfg Config) error {
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
	if cfg.ExecutablePath == "" {
		return fmt.Errorf("%w: no Chromium executable given (%s)", ErrNotInstalled, fixChromium)
	}
	if err := checkFile(cfg.ExecutablePath, true); err != nil {
		return fmt.Errorf("%w: Chromium: %v (%s)", ErrNotInstalled, err, fixChromium)
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
