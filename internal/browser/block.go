package browser

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/playwright-community/playwright-go"
)

// Resource blocking: a context's BlockOptions become one Playwright route on
// its BrowserContext, installed when NewContext hands the context out (warm
// ones included: blocking does not make the options non-default). Blocked
// requests are aborted in the browser and never reach the network.
//
// Cost: a route makes the driver pause each request it matches until the
// handler here answers, one round trip to this process. With URL patterns
// only, the driver itself matches them and only the requests to abort make
// the trip; with resource types, which only the handler can check, every
// request of the context does (the passed ones with a Fallback).

// Limits on BlockOptions.
const (
	maxBlockPatterns   = 64
	maxBlockPatternLen = 1024
	maxBlockTypes      = 64
)

// blockErrorCode is the network error a blocked request fails with, as the
// page sees it: net::ERR_BLOCKED_BY_CLIENT, what an ad blocker gives.
const blockErrorCode = "blockedbyclient"

// blockableTypes are the resource types a request can be blocked by: those
// Playwright's request routing reports, except "document" (the page itself
// and its frames are never blocked by type) and "websocket" (routing never
// sees WebSockets).
var blockableTypes = []string{
	"stylesheet", "image", "media", "font", "script", "texttrack",
	"xhr", "fetch", "eventsource", "manifest", "other",
}

// BlockOptions name the requests a context aborts for its whole life. The
// zero value blocks nothing.
type BlockOptions struct {
	// ResourceTypes as the browser names them: "stylesheet", "image",
	// "media", "font", "script", "texttrack", "xhr", "fetch",
	// "eventsource", "manifest", "other". At most 64.
	ResourceTypes []string
	// URLPatterns are globs matched against a request's whole URL (query
	// included): "*" matches any run of characters except "/", "**" any
	// run including "/" (and "**/" may also match nothing), "?" any one
	// character; everything else is literal. At most 64, each 1-1024
	// bytes. A pattern that matches a page's own URL makes its navigation
	// fail with ErrNavigation.
	URLPatterns []string
}

func (b BlockOptions) empty() bool { return len(b.ResourceTypes) == 0 && len(b.URLPatterns) == 0 }

// Check reports the first thing wrong with b, wrapping ErrInvalidArgument.
// NewContext checks too; callers that queue requests can fail them sooner.
func (b BlockOptions) Check() error {
	if len(b.ResourceTypes) > maxBlockTypes {
		return fmt.Errorf("%w: block: at most %d resource types, got %d", ErrInvalidArgument, maxBlockTypes, len(b.ResourceTypes))
	}
	for _, t := range b.ResourceTypes {
		if !slices.Contains(blockableTypes, t) {
			why := "is not one of " + strings.Join(blockableTypes, ", ")
			switch t {
			case "document":
				why = "cannot be blocked: the page itself is never blocked by type"
			case "websocket":
				why = "cannot be blocked: request routing does not see WebSockets"
			}
			return fmt.Errorf("%w: block: resource type %.64q %s", ErrInvalidArgument, t, why)
		}
	}
	if len(b.URLPatterns) > maxBlockPatterns {
		return fmt.Errorf("%w: block: at most %d url patterns, got %d", ErrInvalidArgument, maxBlockPatterns, len(b.URLPatterns))
	}
	for _, p := range b.URLPatterns {
		if p == "" || len(p) > maxBlockPatternLen {
			return fmt.Errorf("%w: block: url patterns must be 1-%d bytes, got %d (%.64q)", ErrInvalidArgument, maxBlockPatternLen, len(p), p)
		}
	}
	return nil
}

// blocker is BlockOptions made ready to match requests.
type blocker struct {
	types []string       // few: a scan beats a map
	urls  *regexp.Regexp // nil when there are no URL patterns
}

// compile builds the blocker of checked options.
func (b BlockOptions) compile() (*blocker, error) {
	bl := &blocker{types: slices.Compact(slices.Sorted(slices.Values(b.ResourceTypes)))}
	if len(b.URLPatterns) > 0 {
		alts := make([]string, len(b.URLPatterns))
		for i, p := range b.URLPatterns {
			alts[i] = globRegexp(p)
		}
		re, err := regexp.Compile("^(?:" + strings.Join(alts, "|") + ")$")
		if err != nil { // globRegexp writes valid expressions
			return nil, fmt.Errorf("block: url patterns: %w", err)
		}
		bl.urls = re
	}
	return bl, nil
}

// globRegexp translates a URL glob into a regular expression, unanchored,
// that means the same in Go and in JavaScript: the driver matches it
// before a request comes here, and playwright-go again after.
//
// Not Playwright's own glob: since 1.52 its "?" matches only a literal
// "?", and its "**" spans slashes only between two of them.
func globRegexp(glob string) string {
	var re strings.Builder
	lit := 0 // start of the pending literal run
	flush := func(end int) {
		re.WriteString(regexp.QuoteMeta(glob[lit:end]))
	}
	for i := 0; i < len(glob); {
		switch glob[i] {
		case '*':
			flush(i)
			j := i
			for j < len(glob) && glob[j] == '*' {
				j++
			}
			switch {
			case j-i == 1:
				re.WriteString(`[^/]*`)
			case (i == 0 || glob[i-1] == '/') && j < len(glob) && glob[j] == '/':
				// "/**/" and a leading "**/": any number of whole
				// segments, none included.
				re.WriteString(`(?:.*/)?`)
				j++
			default:
				re.WriteString(`.*`)
			}
			i, lit = j, j
		case '?':
			flush(i)
			re.WriteString(`.`)
			i++
			lit = i
		default:
			i++
		}
	}
	flush(len(glob))
	return re.String()
}

// blocks says whether a request is to be aborted.
func (bl *blocker) blocks(resourceType, url string) bool {
	if slices.Contains(bl.types, resourceType) {
		return true
	}
	return bl.urls != nil && bl.urls.MatchString(url)
}

// installBlock puts b's route on c before it is handed out. On failure c
// is closed. It returns c, for NewContext to return.
func (p *Pool) installBlock(ctx context.Context, c *Context, b BlockOptions) (*Context, error) {
	if b.empty() {
		return c, nil
	}
	fail := func(err error) (*Context, error) {
		p.spawn(func() { _ = c.Close(context.Background()) })
		return nil, err
	}
	bl, err := b.compile()
	if err != nil {
		return fail(fmt.Errorf("new context: %w", err))
	}
	// With URL patterns only, the driver matches them; resource types
	// need the handler to see every request.
	var match any = bl.urls
	if len(bl.types) > 0 {
		match = func(string) bool { return true }
	}
	limit := defaultCallTimeout
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(dl))
	}
	done, err := p.within(ctx.Done(), limit, func() error {
		return c.bc.Route(match, p.blockHandler(bl))
	})
	switch {
	case !done && ctx.Err() != nil:
		return fail(ctxError("new context: block", ctx))
	case !done:
		return fail(fmt.Errorf("new context: block: %w: route not installed within %s", ErrTimeout, limit))
	case err != nil:
		return fail(p.createError(c.br, err))
	}
	return c, nil
}

// blockHandler is the route handler of bl. It runs on a goroutine of
// playwright-go's, one per request, and must not panic: playwright-go
// would hand the panic to the next call on the driver connection.
func (p *Pool) blockHandler(bl *blocker) func(playwright.Route) {
	return func(r playwright.Route) {
		req := r.Request()
		if !bl.blocks(req.ResourceType(), req.URL()) {
			// Fallback and Continue both cost one message to the driver
			// (measured alike); Fallback leaves the request to any other
			// route.
			_ = r.Fallback()
			return
		}
		// Counted before the abort, so the count has moved by the time the
		// page sees the request fail.
		p.blocked.Add(1)
		if err := r.Abort(blockErrorCode); err != nil {
			// A failed abort leaves the route unanswered, and
			// playwright-go's goroutine waiting on it forever; a fallback
			// answers it (the request is gone either way).
			_ = r.Fallback()
		}
	}
}
