package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/lease"
)

// Page is what page commands run on: the page of one browser context.
// *browser.Context implements it.
type Page interface {
	Navigate(ctx context.Context, url string, o browser.NavigateOptions) (browser.NavigateResult, error)
	Click(ctx context.Context, selector string) error
	Fill(ctx context.Context, selector, value string) error
	Press(ctx context.Context, selector, key string) error
	WaitForSelector(ctx context.Context, selector, state string) (bool, error)
	Evaluate(ctx context.Context, expression, argJSON string) (string, error)
	Content(ctx context.Context) (string, error)
	Text(ctx context.Context, selector string) ([]string, error)
	Screenshot(ctx context.Context, o browser.ScreenshotOptions) ([]byte, error)
	Cookies(ctx context.Context, urls ...string) ([]browser.Cookie, error)
	SetCookies(ctx context.Context, cookies []browser.Cookie) error
}

// BrowserBackend makes a browser pool the lease manager's backend: each
// lease's session is one browser context.
type BrowserBackend struct {
	Pool *browser.Pool
}

var (
	_ lease.Backend       = BrowserBackend{}
	_ lease.SessionLister = BrowserBackend{}
	_ lease.Sweeper       = BrowserBackend{}
)

// Open creates a browser context from a browser.ContextOptions spec.
func (b BrowserBackend) Open(ctx context.Context, spec any) (lease.Session, error) {
	opts, ok := spec.(browser.ContextOptions)
	if !ok {
		return nil, fmt.Errorf("server: spec is %T, want browser.ContextOptions", spec)
	}
	c, err := b.Pool.NewContext(ctx, opts)
	if err != nil {
		return nil, err
	}
	return browserSession{c}, nil
}

// Live counts the contexts the pool has handed out and not yet closed.
func (b BrowserBackend) Live() int { return b.Pool.Stats().Contexts }

// Sessions lists the contexts the pool has handed out, for the auditor.
func (b BrowserBackend) Sessions() []lease.Session {
	cs := b.Pool.Contexts()
	out := make([]lease.Session, len(cs))
	for i, c := range cs {
		out[i] = browserSession{c}
	}
	return out
}

// SweepOrphans closes browser contexts the pool never handed out.
func (b BrowserBackend) SweepOrphans(ctx context.Context) int { return b.Pool.SweepOrphans(ctx) }

// browserSession is a browser context seen as a lease session.
type browserSession struct {
	*browser.Context
}

func (s browserSession) LostReason() (lease.Reason, string) {
	err := s.LostErr()
	if errors.Is(err, browser.ErrPageCrashed) {
		return lease.PageCrashed, err.Error()
	}
	if err == nil {
		return lease.BrowserCrashed, "browser lost"
	}
	return lease.BrowserCrashed, err.Error()
}
