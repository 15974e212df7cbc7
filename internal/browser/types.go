package browser

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/playwright-community/playwright-go"
)

// Viewport is a page size in CSS pixels.
type Viewport struct {
	Width, Height int
}

// Proxy routes one context's traffic through an HTTP or SOCKS proxy.
type Proxy struct {
	// Server such as "http://proxy:3128" or "socks5://proxy:1080".
	Server   string
	Username string
	Password string
	// Bypass is a comma-separated list of hosts that skip the proxy.
	Bypass string
}

// ContextOptions configure a new browser context. The zero value is a plain
// 1280x720 desktop context.
type ContextOptions struct {
	// Viewport; nil: 1280x720.
	Viewport *Viewport
	// UserAgent; empty: the browser's own.
	UserAgent string
	// Locale such as "en-GB"; empty: the browser's default.
	Locale string
	// TimezoneID such as "Europe/Paris"; empty: the system's.
	TimezoneID string
	// ExtraHTTPHeaders are sent with every request of the context.
	ExtraHTTPHeaders map[string]string
	// Proxy for this context only; nil: none.
	Proxy *Proxy
	// IsMobile and HasTouch turn on mobile emulation.
	IsMobile, HasTouch bool
	// DeviceScaleFactor; zero: 1.
	DeviceScaleFactor float64
	// JavaScriptEnabled; nil: enabled.
	JavaScriptEnabled *bool
	// IgnoreHTTPSErrors accepts invalid TLS certificates.
	IgnoreHTTPSErrors bool
	// Block names requests the context aborts (block.go); zero: none.
	// Unlike the other options it is applied to a context as it is handed
	// out, so it does not keep an acquire from taking a warm context.
	Block BlockOptions
	// StorageState is cookies and localStorage to start from, in
	// Playwright's storage-state JSON (what Context.StorageState returns);
	// nil: none.
	StorageState []byte
}

func (o ContextOptions) playwright() (playwright.BrowserNewContextOptions, error) {
	vp := Viewport{Width: 1280, Height: 720}
	if o.Viewport != nil {
		vp = *o.Viewport
	}
	if vp.Width <= 0 || vp.Height <= 0 {
		return playwright.BrowserNewContextOptions{}, fmt.Errorf("new context: %w: viewport %dx%d", ErrInvalidArgument, vp.Width, vp.Height)
	}
	if o.DeviceScaleFactor < 0 {
		return playwright.BrowserNewContextOptions{}, fmt.Errorf("new context: %w: device scale factor %v", ErrInvalidArgument, o.DeviceScaleFactor)
	}
	if err := o.Block.Check(); err != nil {
		return playwright.BrowserNewContextOptions{}, fmt.Errorf("new context: %w", err)
	}
	storage, err := parseStorageState(o.StorageState)
	if err != nil {
		return playwright.BrowserNewContextOptions{}, fmt.Errorf("new context: %w", err)
	}
	pw := playwright.BrowserNewContextOptions{
		Viewport:          &playwright.Size{Width: vp.Width, Height: vp.Height},
		IsMobile:          playwright.Bool(o.IsMobile),
		HasTouch:          playwright.Bool(o.HasTouch),
		IgnoreHttpsErrors: playwright.Bool(o.IgnoreHTTPSErrors),
		JavaScriptEnabled: o.JavaScriptEnabled,
		// Downloads would pile up in the driver's temp folder; nobody here
		// can fetch them.
		AcceptDownloads: playwright.Bool(false),
		StorageState:    storage,
	}
	if o.UserAgent != "" {
		pw.UserAgent = playwright.String(o.UserAgent)
	}
	if o.Locale != "" {
		pw.Locale = playwright.String(o.Locale)
	}
	if o.TimezoneID != "" {
		pw.TimezoneId = playwright.String(o.TimezoneID)
	}
	if o.DeviceScaleFactor > 0 {
		pw.DeviceScaleFactor = playwright.Float(o.DeviceScaleFactor)
	}
	if len(o.ExtraHTTPHeaders) > 0 {
		h := make(map[string]string, len(o.ExtraHTTPHeaders))
		for k, v := range o.ExtraHTTPHeaders {
			if k == "" || strings.ContainsAny(k, " :\r\n") || strings.ContainsAny(v, "\r\n") {
				return playwright.BrowserNewContextOptions{}, fmt.Errorf("new context: %w: header %q", ErrInvalidArgument, k)
			}
			h[k] = v
		}
		pw.ExtraHttpHeaders = h
	}
	if o.Proxy != nil {
		if o.Proxy.Server == "" {
			return playwright.BrowserNewContextOptions{}, fmt.Errorf("new context: %w: proxy without server", ErrInvalidArgument)
		}
		p := &playwright.Proxy{Server: o.Proxy.Server}
		if o.Proxy.Username != "" {
			p.Username = playwright.String(o.Proxy.Username)
		}
		if o.Proxy.Password != "" {
			p.Password = playwright.String(o.Proxy.Password)
		}
		if o.Proxy.Bypass != "" {
			p.Bypass = playwright.String(o.Proxy.Bypass)
		}
		pw.Proxy = p
	}
	return pw, nil
}

// NavigateOptions tune Context.Navigate.
type NavigateOptions struct {
	// WaitUntil: "load", "domcontentloaded", "networkidle" or "commit";
	// empty: "load".
	WaitUntil string
	// Referer header for this navigation; empty: none.
	Referer string
}

// NavigateResult describes the page after a navigation.
type NavigateResult struct {
	// Status is the HTTP status of the main resource; 0 when there was none
	// (about:blank, a same-document navigation).
	Status int
	// URL after redirects.
	URL   string
	Title string
}

// ScreenshotOptions tune Context.Screenshot.
type ScreenshotOptions struct {
	// FullPage captures the whole scrollable page, not just the viewport.
	FullPage bool
	// Format: "png" or "jpeg"; empty: "png".
	Format string
	// Quality 1-100, JPEG only; zero: the browser's default.
	Quality int
	// Untouched takes the picture without touching the page: by default
	// Playwright hides the text caret with a style it adds to the page and
	// removes after, which the page's scripts can see. It is for
	// observers (the dashboard's thumbnails): such a screenshot is not
	// the holder's work, so the warm refill does not wait for it and a
	// warm context's first command is still to come. Default false.
	Untouched bool
}

// Cookie is a browser cookie. To set one, give URL, or Domain (and Path,
// default "/").
type Cookie struct {
	Name, Value  string
	Domain, Path string
	// URL is an alternative to Domain and Path when setting a cookie.
	URL string
	// Expires is in seconds since the Unix epoch; -1 or 0: a session cookie.
	Expires  float64
	HTTPOnly bool
	Secure   bool
	// SameSite: "Strict", "Lax" or "None"; empty: the browser's default.
	SameSite string
}

func cookieFromPlaywright(c playwright.Cookie) Cookie {
	out := Cookie{
		Name: c.Name, Value: c.Value, Domain: c.Domain, Path: c.Path,
		Expires: c.Expires, HTTPOnly: c.HttpOnly, Secure: c.Secure,
	}
	if c.SameSite != nil {
		out.SameSite = string(*c.SameSite)
	}
	return out
}

func (c Cookie) playwright() (playwright.OptionalCookie, error) {
	bad := func(why string) (playwright.OptionalCookie, error) {
		return playwright.OptionalCookie{}, fmt.Errorf("%w: cookie %q: %s", ErrInvalidArgument, c.Name, why)
	}
	if c.Name == "" {
		return bad("no name")
	}
	out := playwright.OptionalCookie{Name: c.Name, Value: c.Value}
	switch {
	case c.URL != "" && (c.Domain != "" || c.Path != ""):
		return bad("give either url or domain and path")
	case c.URL != "":
		if err := checkHTTPURL(c.URL); err != nil {
			return bad(err.Error())
		}
		out.URL = playwright.String(c.URL)
	case c.Domain != "":
		path := c.Path
		if path == "" {
			path = "/"
		}
		if !strings.HasPrefix(path, "/") {
			return bad("path must start with /")
		}
		out.Domain = playwright.String(c.Domain)
		out.Path = playwright.String(path)
	default:
		return bad("needs a url or a domain")
	}
	if c.Expires > 0 {
		out.Expires = playwright.Float(c.Expires)
	}
	if c.HTTPOnly {
		out.HttpOnly = playwright.Bool(true)
	}
	if c.Secure {
		out.Secure = playwright.Bool(true)
	}
	switch c.SameSite {
	case "":
	case "Strict":
		out.SameSite = playwright.SameSiteAttributeStrict
	case "Lax":
		out.SameSite = playwright.SameSiteAttributeLax
	case "None":
		out.SameSite = playwright.SameSiteAttributeNone
	default:
		return bad(fmt.Sprintf("sameSite %q is not Strict, Lax or None", c.SameSite))
	}
	return out, nil
}

// checkNavigateURL accepts absolute http and https URLs and about:blank.
func checkNavigateURL(raw string) error {
	if raw == "about:blank" {
		return nil
	}
	return checkHTTPURL(raw)
}

func checkHTTPURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("url %q does not parse", raw)
	}
	if (!strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(u.Scheme, "https")) || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("url %q is not an absolute http or https URL", raw)
	}
	return nil
}

func waitUntilState(s string) (*playwright.WaitUntilState, error) {
	switch s {
	case "", "load":
		return playwright.WaitUntilStateLoad, nil
	case "domcontentloaded":
		return playwright.WaitUntilStateDomcontentloaded, nil
	case "networkidle":
		return playwright.WaitUntilStateNetworkidle, nil
	case "commit":
		return playwright.WaitUntilStateCommit, nil
	}
	return nil, fmt.Errorf("%w: wait until %q", ErrInvalidArgument, s)
}

func selectorState(s string) (*playwright.WaitForSelectorState, error) {
	switch s {
	case "", "visible":
		return playwright.WaitForSelectorStateVisible, nil
	case "attached":
		return playwright.WaitForSelectorStateAttached, nil
	case "detached":
		return playwright.WaitForSelectorStateDetached, nil
	case "hidden":
		return playwright.WaitForSelectorStateHidden, nil
	}
	return nil, fmt.Errorf("%w: selector state %q", ErrInvalidArgument, s)
}
