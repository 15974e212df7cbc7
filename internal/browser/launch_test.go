package browser

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
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
