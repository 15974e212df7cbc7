package browser

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// blockSite serves a page with a stylesheet, a script, two images and a
// font, and records every path it serves.
type blockSite struct {
	*httptest.Server
	mu     sync.Mutex
	served []string
}

// A 1x1 transparent PNG.
const pixelPNG = "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89" +
	"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"

const blockPage = `<!doctype html>
<html><head><title>Block</title>
<link rel=icon href="data:,">
<link rel=stylesheet href="/style.css">
<style>@font-face { font-family: TestFont; src: url(/font.woff2) format("woff2") } .f { font-family: TestFont }</style>
<script src="/app.js"></script>
</head><body>
<p class=f>text in the test font</p>
<img src="/img/1.png"><img src="/img/2.png">
</body></html>`

func newBlockSite(tb testing.TB) *blockSite {
	tb.Helper()
	s := &blockSite{}
	files := map[string]struct{ typ, body string }{
		"/page":       {"text/html; charset=utf-8", blockPage},
		"/style.css":  {"text/css", "body { color: rgb(1, 2, 3) }"},
		"/app.js":     {"text/javascript", "window.appRan = true"},
		"/img/1.png":  {"image/png", pixelPNG},
		"/img/2.png":  {"image/png", pixelPNG},
		"/font.woff2": {"font/woff2", "not really a font"},
	}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.served = append(s.served, r.URL.Path)
		s.mu.Unlock()
		f, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", f.typ)
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, f.body)
	}))
	tb.Cleanup(s.Close)
	return s
}

func (s *blockSite) servedPaths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.served)
}

// load navigates c to the site's page and waits until its font has loaded
// or failed, so that every request of the page has been made.
func (s *blockSite) load(t *testing.T, c *Context) {
	t.Helper()
	navigate(t, c, s.URL+"/page")
	evaluate(t, c, "document.fonts.ready.then(() => true)")
}

// checkServed fails unless every path of want was served and none of
// never was.
func (s *blockSite) checkServed(t *testing.T, want, never []string) {
	t.Helper()
	served := s.servedPaths()
	for _, p := range want {
		if !slices.Contains(served, p) {
			t.Errorf("%s not served; served %v", p, served)
		}
	}
	for _, p := range never {
		if slices.Contains(served, p) {
			t.Errorf("%s reached the server though blocked; served %v", p, served)
		}
	}
}

func TestBlockResourceTypes(t *testing.T) {
	p := sharedPool(t)
	s := newBlockSite(t)
	before := p.Stats().Blocked
	c := openContext(t, p, ContextOptions{Block: BlockOptions{ResourceTypes: []string{"image", "font"}}})
	s.load(t, c)
	s.checkServed(t, []string{"/page", "/style.css", "/app.js"}, []string{"/img/1.png", "/img/2.png", "/font.woff2"})
	if got := evaluate(t, c, "[getComputedStyle(document.body).color, window.appRan === true]"); got != `["rgb(1, 2, 3)",true]` {
		t.Errorf("stylesheet and script with images and fonts blocked: Evaluate = %s, want both applied", got)
	}
	if got := p.Stats().Blocked - before; got != 3 {
		t.Errorf("Stats.Blocked rose by %d, want 3 (two images, one font)", got)
	}
}

func TestBlockURLPatterns(t *testing.T) {
	p := sharedPool(t)
	s := newBlockSite(t)
	before := p.Stats().Blocked
	c := openContext(t, p, ContextOptions{Block: BlockOptions{URLPatterns: []string{"**/*.css", "**/img/?.gif"}}})
	s.load(t, c)
	s.checkServed(t, []string{"/page", "/app.js", "/img/1.png", "/img/2.png", "/font.woff2"}, []string{"/style.css"})
	if got := evaluate(t, c, "getComputedStyle(document.body).color"); got == `"rgb(1, 2, 3)"` {
		t.Errorf("body color %s: the blocked stylesheet applied", got)
	}
	if got := p.Stats().Blocked - before; got != 1 {
		t.Errorf("Stats.Blocked rose by %d, want 1 (the stylesheet)", got)
	}
	// A pattern that matches the page itself fails its navigation.
	c2 := openContext(t, p, ContextOptions{Block: BlockOptions{URLPatterns: []string{s.URL + "/pa?e"}}})
	_, err := c2.Navigate(timeout(t, 15*time.Second), s.URL+"/page", NavigateOptions{})
	if !errors.Is(err, ErrNavigation) || !strings.Contains(err.Error(), "ERR_BLOCKED_BY_CLIENT") {
		t.Errorf("Navigate to a blocked page = %v, want ErrNavigation with net::ERR_BLOCKED_BY_CLIENT", err)
	}
}

func TestBlockOnWarmContext(t *testing.T) {
	p := newPool(t, func(c *Config) { c.Warm = 1 })
	waitWarm(t, p, 1)
	s := newBlockSite(t)
	c := openContext(t, p, ContextOptions{Block: BlockOptions{ResourceTypes: []string{"image"}}})
	if st := p.Stats(); st.WarmHits != 1 || st.WarmMisses != 0 {
		t.Fatalf("NewContext(block images) on a full warm pool: %d warm hits, %d misses; want 1 and 0", st.WarmHits, st.WarmMisses)
	}
	s.load(t, c)
	s.checkServed(t, []string{"/page", "/style.css"}, []string{"/img/1.png", "/img/2.png"})
	if got := p.Stats().Blocked; got != 2 {
		t.Errorf("Stats.Blocked = %d, want 2 (the images)", got)
	}
}

func TestBlockInvalidOptions(t *testing.T) {
	p := sharedPool(t)
	long := "https://example.com/" + strings.Repeat("a", maxBlockPatternLen)
	for name, tc := range map[string]struct {
		block BlockOptions
		want  string
	}{
		"unknown type":     {BlockOptions{ResourceTypes: []string{"image", "pictures"}}, `"pictures"`},
		"document":         {BlockOptions{ResourceTypes: []string{"document"}}, `"document"`},
		"websocket":        {BlockOptions{ResourceTypes: []string{"websocket"}}, `"websocket"`},
		"capitalized":      {BlockOptions{ResourceTypes: []string{"Image"}}, `"Image"`},
		"empty pattern":    {BlockOptions{URLPatterns: []string{""}}, "1-1024 bytes"},
		"long pattern":     {BlockOptions{URLPatterns: []string{long}}, "1-1024 bytes"},
		"too many pattern": {BlockOptions{URLPatterns: slices.Repeat([]string{"**/*.png"}, maxBlockPatterns+1)}, "at most 64"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := p.NewContext(timeout(t, 10*time.Second), ContextOptions{Block: tc.block})
			if c != nil {
				closeContext(t, c)
			}
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewContext(block %+.80v) = %v, want ErrInvalidArgument naming %s", tc.block, err, tc.want)
			}
		})
	}
}

func TestGlobRegexp(t *testing.T) {
	for _, tc := range []struct {
		glob       string
		match, not []string
	}{
		{"**/*.css", []string{"http://h/a.css", "http://h/x/y/a.css"}, []string{"http://h/a.css?v=1", "http://h/a.cssx"}},
		{"https://ads.example.com/**", []string{"https://ads.example.com/", "https://ads.example.com/a/b?c"}, []string{"https://ads.example.org/a", "http://ads.example.com/a"}},
		{"http://h/*.js", []string{"http://h/a.js"}, []string{"http://h/a/b.js"}},
		{"http://h/**/a.js", []string{"http://h/a.js", "http://h/x/y/a.js"}, []string{"http://h/xa.js"}},
		{"http://h/img?.png", []string{"http://h/img1.png", "http://h/img/.png"}, []string{"http://h/img.png", "http://h/img12.png"}},
		{"**tracker**", []string{"http://h/a/tracker/b", "http://tracker.example/"}, []string{"http://h/track"}},
		{"http://h/a+b(1)[x]{y}|$^.js", []string{"http://h/a+b(1)[x]{y}|$^.js"}, []string{"http://h/aab(1)[x]{y}|$^.js"}},
	} {
		re := regexp.MustCompile("^(?:" + globRegexp(tc.glob) + ")$")
		for _, u := range tc.match {
			if !re.MatchString(u) {
				t.Errorf("glob %q (regexp %s) does not match %q, want a match", tc.glob, re, u)
			}
		}
		for _, u := range tc.not {
			if re.MatchString(u) {
				t.Errorf("glob %q (regexp %s) matches %q, want none", tc.glob, re, u)
			}
		}
	}
}
