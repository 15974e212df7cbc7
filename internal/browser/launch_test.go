package browser

import (
	"os"
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
