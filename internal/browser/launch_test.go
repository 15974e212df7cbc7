package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// A context with a loaded page costs one renderer process, not two: the
// omnibox popup WebUI that headless Chromium made per window (about 50 MiB
// each) is turned off by chromiumArgs. Contexts still get a renderer each.
func TestContextsMakeNoBrowserUIRenderers(t *testing.T) {
	p := newPool(t, nil)
	for range 2 {
		c := openContext(t, p, ContextOptions{})
		navigate(t, c, site.URL("/"))
		t.Cleanup(func() { closeContext(t, c) })
	}
	var pages, browserUI []string
	for _, pr := range poolProcesses(p) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pr.pid) + "/cmdline")
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		switch {
		case !strings.Contains(cmd, "--type=renderer"):
		case strings.Contains(cmd, "--top-chrome-webui"):
			browserUI = append(browserUI, strconv.Itoa(pr.pid))
		default:
			pages = append(pages, strconv.Itoa(pr.pid))
		}
	}
	if len(browserUI) > 0 {
		t.Errorf("browser UI renderers %v beside the page renderers %v: want none (chromiumArgs' --disable-features no longer works on this Chromium?)", browserUI, pages)
	}
	if len(pages) < 2 {
		t.Errorf("page renderers %v for 2 contexts with a loaded page: want at least one each", pages)
	}
}

// Chromium keeps only the last --disable-features, and ours comes after
// Playwright's: it must name every feature the installed driver disables.
func TestDisabledFeaturesKeepPlaywrights(t *testing.T) {
	if testDriverDir == "" {
		t.Skip(setupProblem)
	}
	src, err := os.ReadFile(filepath.Join(testDriverDir, "package", "lib", "server", "chromium", "chromiumSwitches.js"))
	if err != nil {
		t.Fatal(err)
	}
	_, list, ok := strings.Cut(string(src), "const disabledFeatures = [")
	list, _, ok2 := strings.Cut(list, "];")
	if !ok || !ok2 {
		t.Fatal("no disabledFeatures list in the driver's chromiumSwitches.js")
	}
	driver := regexp.MustCompile(`(?m)^\s*"(\w+)",?\s*$`).FindAllStringSubmatch(list, -1)
	if len(driver) < 5 {
		t.Fatalf("found %d features in the driver's list, want its whole list", len(driver))
	}
	var ours string
	for _, a := range chromiumArgs {
		if v, ok := strings.CutPrefix(a, "--disable-features="); ok {
			ours = v // the last one wins, as in Chromium
		}
	}
	have := map[string]bool{}
	for _, f := range strings.Split(ours, ",") {
		have[f] = true
	}
	for _, m := range driver {
		if !have[m[1]] {
			t.Errorf("the driver disables %s; our --disable-features (the one Chromium keeps) does not", m[1])
		}
	}
	if len(driver) != len(playwrightDisabledFeatures) {
		t.Errorf("the driver disables %d features, playwrightDisabledFeatures lists %d", len(driver), len(playwrightDisabledFeatures))
	}
}

// A Chromium that exits while it starts (seen once in CI on a loaded
// machine) is launched again: the pool still starts, and the failure is
// logged with the browser's own output. A setup that never launches still
// fails, after launchAttempts tries.
func TestLaunchRetriesAChromiumThatExitsAtStart(t *testing.T) {
	requireBrowser(t)
	dir := t.TempDir()
	mark := filepath.Join(dir, "failed-once")
	wrapper := filepath.Join(dir, "chromium")
	script := "#!/bin/sh\n" +
		"if [ ! -e '" + mark + "' ]; then touch '" + mark + "'; echo 'simulated start-up crash' >&2; exit 1; fi\n" +
		"exec '" + testChromium + "' \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	p := newPool(t, func(c *Config) {
		c.ExecutablePath = wrapper
		c.Logger = zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
	})
	if s := p.Stats(); s.Launches != 1 || s.Browsers != 1 {
		t.Errorf("after one failed start and a retry: Launches %d, Browsers %d; want 1 and 1", s.Launches, s.Browsers)
	}
	failed := logs.FilterMessage("browser launch failed").All()
	if len(failed) != 1 {
		t.Fatalf("logged %d launch failures, want 1", len(failed))
	}
	if msg := failed[0].ContextMap()["error"]; !strings.Contains(fmt.Sprint(msg), "simulated start-up crash") {
		t.Errorf("launch failure logged as %q: want the browser's own output in it", msg)
	}
	if n := logs.FilterMessage("retrying the browser launch").Len(); n != 1 {
		t.Errorf("logged %d retries, want 1", n)
	}
	c := openContext(t, p, ContextOptions{})
	navigate(t, c, site.URL("/"))
	closeContext(t, c)

	// Never launches: NewPool fails after every attempt.
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\necho 'always broken' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	core2, logs2 := observer.New(zap.WarnLevel)
	cfg := testConfig(zap.New(core2))
	cfg.ExecutablePath = wrapper
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if bad, err := NewPool(ctx, cfg); err == nil {
		_ = bad.Close(ctx)
		t.Fatal("NewPool with a Chromium that always exits = a pool, want an error")
	} else if !errors.Is(err, ErrLaunch) {
		t.Errorf("NewPool with a Chromium that always exits = %v, want ErrLaunch", err)
	}
	if n := logs2.FilterMessage("browser launch failed").Len(); n != launchAttempts {
		t.Errorf("logged %d launch failures, want %d (launchAttempts)", n, launchAttempts)
	}
}
