package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/lease"
	"github.com/browserbroker/broker/internal/state"
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

// SessionState keeps sticky sessions' storage state: a *state.Store on a
// broker alone, the fleet's Redis (*fleet.Sessions) in a fleet.
type SessionState interface {
	Get(key string) (state.Record, bool, error)
	SaveStorage(key string, storage []byte) error
}

// BrowserBackend makes a browser pool the lease manager's backend: each
// lease's session is one browser context.
type BrowserBackend struct {
	Pool *browser.Pool
	// Store saves sticky sessions' storage state; nil: sticky sessions
	// are kept warm but nothing is saved.
	Store SessionState
}

// sessionSpec is the spec of a sticky session's context.
type sessionSpec struct {
	Options browser.ContextOptions
	Key     string
}

var (
	_ lease.Backend       = BrowserBackend{}
	_ lease.SessionLister = BrowserBackend{}
	_ lease.Sweeper       = BrowserBackend{}
)

// Open creates a browser context from a browser.ContextOptions spec, or a
// sticky session's from a sessionSpec, starting from the session's saved
// storage state.
func (b BrowserBackend) Open(ctx context.Context, spec any) (lease.Session, error) {
	switch spec := spec.(type) {
	case browser.ContextOptions:
		c, err := b.Pool.NewContext(ctx, spec)
		if err != nil {
			return nil, err
		}
		return browserSession{Context: c}, nil
	case sessionSpec:
		sticky := &stickyState{key: spec.Key, store: b.Store}
		opts := spec.Options
		if b.Store != nil {
			r, ok, err := b.Store.Get(spec.Key)
			if err != nil {
				return nil, err
			}
			if ok && r.Storage != nil {
				opts.StorageState = r.Storage
				sticky.restored = true
			}
		}
		c, err := b.Pool.NewContext(ctx, opts)
		if err != nil {
			return nil, err
		}
		return browserSession{Context: c, sticky: sticky}, nil
	}
	return nil, fmt.Errorf("server: spec is %T, want browser.ContextOptions or sessionSpec", spec)
}

// Live counts the contexts the pool has handed out and not yet closed.
func (b BrowserBackend) Live() int { return b.Pool.Stats().Contexts }

// Sessions lists the contexts the pool has handed out, for the auditor.
func (b BrowserBackend) Sessions() []lease.Session {
	cs := b.Pool.Contexts()
	out := make([]lease.Session, len(cs))
	for i, c := range cs {
		out[i] = browserSession{Context: c}
	}
	return out
}

// SweepOrphans closes browser contexts the pool never handed out.
func (b BrowserBackend) SweepOrphans(ctx context.Context) int { return b.Pool.SweepOrphans(ctx) }

// browserSession is a browser context seen as a lease session; sticky is
// set for a sticky session's.
type browserSession struct {
	*browser.Context
	sticky *stickyState
}

// stickyState is what a sticky session's context needs to be saved.
type stickyState struct {
	key      string
	store    SessionState
	restored bool // the context started from saved state
}

// SessionID is the context: the auditor matches sessions by it.
func (s browserSession) SessionID() any { return s.Context }

// Save saves a sticky session's storage state; other sessions have none to
// save.
func (s browserSession) Save(ctx context.Context) error {
	if s.sticky == nil || s.sticky.store == nil {
		return nil
	}
	st, err := s.StorageState(ctx)
	if err != nil {
		return err
	}
	return s.sticky.store.SaveStorage(s.sticky.key, st)
}

// Restored says whether a sticky session's context started from its saved
// state.
func (s browserSession) Restored() bool { return s.sticky != nil && s.sticky.restored }

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
