package browser

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPageCommands(t *testing.T) {
	p := sharedPool(t)
	c := openContext(t, p, ContextOptions{})
	ctx := timeout(t, 30*time.Second)

	res := navigate(t, c, site.URL("/"))
	if res.Status != 200 || res.Title != "Test page" || res.URL != site.URL("/") {
		t.Fatalf("Navigate(/) = %+v, want status 200, title %q, url %s", res, "Test page", site.URL("/"))
	}

	t.Run("fill and press", func(t *testing.T) {
		if err := c.Fill(ctx, "#name", "world"); err != nil {
			t.Fatalf("Fill(#name) = %v", err)
		}
		if err := c.Press(ctx, "#name", "Enter"); err != nil {
			t.Fatalf("Press(#name, Enter) = %v", err)
		}
		got, err := c.Text(ctx, "#out")
		if err != nil || !slices.Equal(got, []string{"hello world"}) {
			t.Fatalf("Text(#out) = %q, %v; want [hello world]", got, err)
		}
	})

	t.Run("text", func(t *testing.T) {
		got, err := c.Text(ctx, "li.item")
		if err != nil || !slices.Equal(got, []string{"one", "two", "three"}) {
			t.Fatalf("Text(li.item) = %q, %v; want [one two three]", got, err)
		}
		got, err = c.Text(ctx, ".missing")
		if err != nil || got == nil || len(got) != 0 {
			t.Fatalf("Text(.missing) = %#v, %v; want an empty slice", got, err)
		}
	})

	t.Run("click", func(t *testing.T) {
		if err := c.Click(ctx, "#toggle"); err != nil {
			t.Fatalf("Click(#toggle) = %v", err)
		}
		got, err := c.Text(ctx, "#toggle")
		if err != nil || !slices.Equal(got, []string{"clicked"}) {
			t.Fatalf("after Click, Text(#toggle) = %q, %v; want [clicked]", got, err)
		}
	})

	t.Run("wait for selector", func(t *testing.T) {
		if err := c.Click(ctx, "#reveal"); err != nil {
			t.Fatalf("Click(#reveal) = %v", err)
		}
		found, err := c.WaitForSelector(ctx, "#late", "")
		if err != nil || !found {
			t.Fatalf("WaitForSelector(#late) = %v, %v; want true, nil", found, err)
		}
		found, err = c.WaitForSelector(ctx, "#never", "detached")
		if err != nil || found {
			t.Fatalf("WaitForSelector(#never, detached) = %v, %v; want false, nil", found, err)
		}
		start := time.Now()
		found, err = c.WaitForSelector(timeout(t, 300*time.Millisecond), "#never", "visible")
		if found || !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitForSelector(#never) with 300ms = %v, %v; want false, ErrTimeout and DeadlineExceeded", found, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("WaitForSelector(#never) took %s, want about 300ms", d)
		}
	})

	t.Run("evaluate", func(t *testing.T) {
		for _, tc := range []struct{ expr, arg, want string }{
			{"1+1", "", "2"},
			{"(a) => a.x * 2", `{"x": 21}`, "42"},
			{"undefined", "", "null"},
			{"document.title", "", `"Test page"`},
			{"({list: [1, 'b', null], nan: NaN, nested: {ok: true}})", "", `{"list":[1,"b",null],"nan":null,"nested":{"ok":true}}`},
			{"Promise.resolve('<async>')", "", `"<async>"`},
			{"(s) => s.length", `"four"`, "4"},
			{"1.5", "", "1.5"},
			{"alert('dialogs are dismissed'), 'after'", "", `"after"`},
			{"new Date(0)", "", `"1970-01-01T00:00:00.000Z"`},
		} {
			got, err := c.Evaluate(ctx, tc.expr, tc.arg)
			if err != nil || got != tc.want {
				t.Errorf("Evaluate(%q, %q) = %q, %v; want %q", tc.expr, tc.arg, got, err, tc.want)
			}
		}
	})

	t.Run("content", func(t *testing.T) {
		html, err := c.Content(ctx)
		if err != nil || !strings.Contains(html, `<li class="item">two</li>`) {
			t.Fatalf("Content() = %.80q..., %v; want the list", html, err)
		}
	})

	t.Run("screenshot", func(t *testing.T) {
		png, err := c.Screenshot(ctx, ScreenshotOptions{})
		if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
			t.Fatalf("Screenshot(png) = %d bytes, %v; want a PNG", len(png), err)
		}
		jpg, err := c.Screenshot(ctx, ScreenshotOptions{Format: "jpeg", Quality: 50, FullPage: true})
		if err != nil || !bytes.HasPrefix(jpg, []byte{0xff, 0xd8}) {
			t.Fatalf("Screenshot(jpeg) = %d bytes, %v; want a JPEG", len(jpg), err)
		}
	})

	t.Run("cookies", func(t *testing.T) {
		err := c.SetCookies(ctx, []Cookie{
			{Name: "byurl", Value: "1", URL: site.URL("/")},
			{Name: "bydomain", Value: "2", Domain: "127.0.0.1", HTTPOnly: true, SameSite: "Lax"},
		})
		if err != nil {
			t.Fatalf("SetCookies() = %v", err)
		}
		navigate(t, c, site.URL("/setcookie"))
		got, err := c.Cookies(ctx, site.URL("/"))
		if err != nil {
			t.Fatalf("Cookies() = %v", err)
		}
		byName := map[string]Cookie{}
		for _, ck := range got {
			byName[ck.Name] = ck
		}
		if byName["byurl"].Value != "1" || byName["server"].Value != "yes" {
			t.Errorf("Cookies() = %+v, want byurl=1 and server=yes", got)
		}
		if ck := byName["bydomain"]; ck.Value != "2" || !ck.HTTPOnly || ck.SameSite != "Lax" || ck.Path != "/" {
			t.Errorf("Cookies()[bydomain] = %+v, want value 2, HttpOnly, Lax, path /", ck)
		}
		if got, err := c.Evaluate(ctx, "document.cookie.includes('byurl=1')", ""); got != "true" {
			t.Errorf("document.cookie has byurl: %s, %v; want true", got, err)
		}
	})
}

func TestContextOptions(t *testing.T) {
	p := sharedPool(t)
	c := openContext(t, p, ContextOptions{
		Viewport:         &Viewport{Width: 800, Height: 600},
		UserAgent:        "broker-test/1.0",
		Locale:           "fr-FR",
		TimezoneID:       "Asia/Tokyo",
		ExtraHTTPHeaders: map[string]string{"X-Broker-Test": "yes"},
	})
	navigate(t, c, site.URL("/headers"))
	for expr, want := range map[string]string{
		"innerWidth + 'x' + innerHeight":                   `"800x600"`,
		"navigator.userAgent":                              `"broker-test/1.0"`,
		"navigator.language":                               `"fr-FR"`,
		"Intl.DateTimeFormat().resolvedOptions().timeZone": `"Asia/Tokyo"`,
	} {
		if got := evaluate(t, c, expr); got != want {
			t.Errorf("Evaluate(%s) = %s, want %s", expr, got, want)
		}
	}
	got, err := c.Text(timeout(t, 5*time.Second), "#h")
	if err != nil || len(got) != 1 || !strings.Contains(got[0], `"X-Broker-Test":["yes"]`) {
		t.Errorf("headers seen by the server = %q, %v; want X-Broker-Test: yes", got, err)
	}

	noJS := false
	c2 := openContext(t, p, ContextOptions{JavaScriptEnabled: &noJS, IsMobile: true, HasTouch: true, DeviceScaleFactor: 2})
	navigate(t, c2, site.URL("/"))
	if err := c2.Click(timeout(t, 5*time.Second), "#toggle"); err != nil {
		t.Fatalf("Click(#toggle) with JavaScript off = %v", err)
	}
	if got, err := c2.Text(timeout(t, 5*time.Second), "#toggle"); err != nil || !slices.Equal(got, []string{"click me"}) {
		t.Errorf("with JavaScript off, after Click, Text(#toggle) = %q, %v; want [click me] (no handler ran)", got, err)
	}

	ctx := timeout(t, 10*time.Second)
	if _, err := p.NewContext(ctx, ContextOptions{TimezoneID: "Mars/Olympus"}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("NewContext(TimezoneID: Mars/Olympus) = %v, want ErrInvalidArgument", err)
	}
	if _, err := p.NewContext(ctx, ContextOptions{Viewport: &Viewport{Width: 0, Height: 10}}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("NewContext(Viewport 0x10) = %v, want ErrInvalidArgument", err)
	}
}

func TestIsolation(t *testing.T) {
	p := sharedPool(t)
	a := openContext(t, p, ContextOptions{})
	b := openContext(t, p, ContextOptions{})
	navigate(t, a, site.URL("/"))
	navigate(t, b, site.URL("/"))
	evaluate(t, a, "document.cookie = 'secret=a; path=/'; localStorage.setItem('secret', 'a'); sessionStorage.setItem('secret', 'a')")
	if got := evaluate(t, a, "document.cookie + '|' + localStorage.getItem('secret')"); got != `"secret=a|a"` {
		t.Fatalf("context a sees %s, want its own cookie and storage", got)
	}
	navigate(t, b, site.URL("/"))
	got := evaluate(t, b, "document.cookie + '|' + localStorage.getItem('secret') + '|' + sessionStorage.getItem('secret')")
	if got != `"|null|null"` {
		t.Errorf("context b sees %s, want no cookie and no storage from context a", got)
	}
	cookies, err := b.Cookies(timeout(t, 5*time.Second))
	if err != nil || len(cookies) != 0 {
		t.Errorf("b.Cookies() = %+v, %v; want none", cookies, err)
	}
}

func TestInvalidArguments(t *testing.T) {
	p := sharedPool(t)
	c := openContext(t, p, ContextOptions{})
	navigate(t, c, site.URL("/"))
	ctx := timeout(t, 20*time.Second)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"navigate relative", func() error { _, err := c.Navigate(ctx, "/relative", NavigateOptions{}); return err }},
		{"navigate empty", func() error { _, err := c.Navigate(ctx, "", NavigateOptions{}); return err }},
		{"navigate file", func() error { _, err := c.Navigate(ctx, "file:///etc/passwd", NavigateOptions{}); return err }},
		{"navigate javascript", func() error { _, err := c.Navigate(ctx, "javascript:alert(1)", NavigateOptions{}); return err }},
		{"navigate chrome", func() error { _, err := c.Navigate(ctx, "chrome://version", NavigateOptions{}); return err }},
		{"navigate no host", func() error { _, err := c.Navigate(ctx, "http://", NavigateOptions{}); return err }},
		{"navigate bad wait", func() error {
			_, err := c.Navigate(ctx, site.URL("/"), NavigateOptions{WaitUntil: "forever"})
			return err
		}},
		{"click empty", func() error { return c.Click(ctx, "") }},
		{"click malformed", func() error { return c.Click(ctx, "p[[[") }},
		{"fill empty", func() error { return c.Fill(ctx, " ", "x") }},
		{"press no key", func() error { return c.Press(ctx, "#name", "") }},
		{"text unknown engine", func() error { _, err := c.Text(ctx, "nosuchengine=x"); return err }},
		{"wait bad state", func() error { _, err := c.WaitForSelector(ctx, "p", "gone"); return err }},
		{"wait malformed", func() error { _, err := c.WaitForSelector(ctx, "div:::", ""); return err }},
		{"evaluate bad arg", func() error { _, err := c.Evaluate(ctx, "(a) => a", "{nope"); return err }},
		{"evaluate empty", func() error { _, err := c.Evaluate(ctx, "", ""); return err }},
		{"screenshot format", func() error { _, err := c.Screenshot(ctx, ScreenshotOptions{Format: "gif"}); return err }},
		{"screenshot png quality", func() error { _, err := c.Screenshot(ctx, ScreenshotOptions{Quality: 50}); return err }},
		{"cookie no name", func() error { return c.SetCookies(ctx, []Cookie{{Value: "x", URL: site.URL("/")}}) }},
		{"cookie no target", func() error { return c.SetCookies(ctx, []Cookie{{Name: "x"}}) }},
		{"cookie url and domain", func() error {
			return c.SetCookies(ctx, []Cookie{{Name: "x", URL: site.URL("/"), Domain: "127.0.0.1"}})
		}},
		{"cookie samesite", func() error {
			return c.SetCookies(ctx, []Cookie{{Name: "x", URL: site.URL("/"), SameSite: "Sometimes"}})
		}},
		{"cookies bad url", func() error { _, err := c.Cookies(ctx, "not a url"); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("got %v, want ErrInvalidArgument", err)
			}
		})
	}
	if err := c.Click(ctx, "#toggle"); err != nil {
		t.Errorf("after the invalid calls, Click(#toggle) = %v, want nil", err)
	}
}

func TestErrors(t *testing.T) {
	p := sharedPool(t)
	c := openContext(t, p, ContextOptions{})
	navigate(t, c, site.URL("/"))
	ctx := timeout(t, 20*time.Second)

	t.Run("script throws", func(t *testing.T) {
		_, err := c.Evaluate(ctx, "() => { throw new Error('boom') }", "")
		if !errors.Is(err, ErrEvaluation) || !strings.Contains(err.Error(), "boom") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("Evaluate(throw) = %q, want one line wrapping ErrEvaluation and saying boom", err)
		}
		_, err = c.Evaluate(ctx, "this is not javascript", "")
		if !errors.Is(err, ErrEvaluation) {
			t.Fatalf("Evaluate(syntax error) = %v, want ErrEvaluation", err)
		}
	})

	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		_, err = c.Navigate(ctx, "http://"+addr+"/", NavigateOptions{})
		if !errors.Is(err, ErrNavigation) || !strings.Contains(err.Error(), "net::ERR_CONNECTION_REFUSED") {
			t.Fatalf("Navigate(closed port) = %v, want ErrNavigation with net::ERR_CONNECTION_REFUSED", err)
		}
	})

	t.Run("action times out", func(t *testing.T) {
		start := time.Now()
		err := c.Click(timeout(t, 500*time.Millisecond), "#missing")
		if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Click(#missing) with 500ms = %v, want ErrTimeout and DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Click(#missing) took %s, want about 500ms", d)
		}
		if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "Call log") {
			t.Errorf("Click error %q carries a call log", err)
		}
	})

	t.Run("the page navigates during the call", func(t *testing.T) {
		// The script navigates the page while the call waits on the old
		// document: a retryable conflict, not the caller's bad argument.
		navigate(t, c, site.URL("/"))
		_, err := c.Evaluate(timeout(t, 10*time.Second), "() => { setTimeout(() => { location.href = '/?again' }, 100); return new Promise(() => {}) }", "")
		if !errors.Is(err, ErrNavigated) {
			t.Fatalf("Evaluate across a navigation = %v, want ErrNavigated", err)
		}
		// The navigation that destroyed the document may still be under
		// way: a command now is refused the same retryable way until the
		// new document is there, then runs on it.
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := c.Evaluate(timeout(t, 5*time.Second), "document.title", "")
			if err == nil {
				if got != `"Test page"` {
					t.Fatalf("Evaluate after the navigation = %s, want the new page's title", got)
				}
				break
			}
			if !errors.Is(err, ErrNavigated) || time.Now().After(deadline) {
				t.Fatalf("Evaluate while the navigation ends = %v, want ErrNavigated, then the new page", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got := evaluate(t, c, "location.search"); got != `"?again"` {
			t.Fatalf("location.search after the navigation = %s, want the script's ?again", got)
		}
	})

	t.Run("expired context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := c.Click(ctx, "#toggle"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Click with a cancelled context = %v, want context.Canceled", err)
		}
	})

	t.Run("page closed under the context", func(t *testing.T) {
		// As if a script had closed it: the next command opens a fresh page
		// in the same context.
		c.mu.Lock()
		pg := c.page
		c.mu.Unlock()
		if err := pg.Close(); err != nil {
			t.Fatalf("closing the page = %v", err)
		}
		if _, err := c.Navigate(ctx, site.URL("/"), NavigateOptions{}); err != nil {
			t.Fatalf("Navigate after the page closed = %v, want success", err)
		}
		if got := evaluate(t, c, "document.title"); got != `"Test page"` {
			t.Fatalf("Evaluate(document.title) on the new page = %s", got)
		}
	})
}
