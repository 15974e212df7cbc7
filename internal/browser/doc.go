// Package browser owns the pool of Playwright-driven browsers the broker
// hands out as isolated browser contexts.
//
// A Pool runs one Playwright driver (a node process) and as many Chromium
// processes as its contexts need, ContextsPerBrowser contexts to a process.
// Browsers may also come from remote Playwright browser servers
// (Config.Connect), attached through the same driver and reconnected in the
// background when they drop; local and remote browsers share one capacity
// and are picked alike. A browser retires after BrowserMaxContexts contexts
// or BrowserMaxAge: it serves the contexts it has and closes after the last.
// Pool.NewContext returns a Context: one Playwright BrowserContext with
// exactly one page, which the page methods (Navigate, Click, Evaluate, ...)
// drive. The package knows nothing of leases or gRPC; the broker's wiring
// adapts a Pool to the lease manager.
//
// Three properties matter most to callers:
//
//   - Every page method honours its context.Context for real. The time left
//     until the deadline becomes Playwright's per-call timeout, and a call
//     that outlives its context (a script stuck in `while(true){}`) is
//     stopped by closing the page under it; the Context then gets a fresh
//     page in the same BrowserContext, so cookies and storage survive.
//   - A Context reports its own death. Lost is closed, once, when the
//     context died under the caller: its browser crashed (or, remote, its
//     connection dropped) or was killed after a hung close, the driver
//     died, or its page's renderer crashed. LostErr says which
//     (ErrBrowserCrashed, ErrDriverCrashed, ErrPageCrashed). The pool heals
//     itself: the next NewContext launches a fresh browser, or restarts the
//     driver.
//   - Context.Close is idempotent, safe while a command runs (the command
//     returns at once with ErrClosed), and bounded by Config.CloseTimeout.
//     A close that hangs retires the whole browser: it takes no new contexts,
//     its other contexts are lost, and its process is killed.
//
// Errors are the sentinels in errors.go, wrapped with short context; the
// Playwright message is cut to its first line so no call log or stack leaks.
package browser
