package browser

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/playwright-community/playwright-go"
)

// Sentinel errors. Errors returned by this package wrap at most a few of
// them with short context; test with errors.Is.
var (
	// ErrTimeout: the call's time limit passed (Playwright's TimeoutError, or
	// the caller's deadline). Errors caused by a context deadline also wrap
	// context.DeadlineExceeded.
	ErrTimeout = errors.New("browser: timeout")
	// ErrClosed: the Context (or the Pool) is closed or being closed.
	ErrClosed = errors.New("browser: closed")
	// ErrBrowserCrashed: the Chromium process under the context crashed,
	// disconnected, or was retired after a hung close.
	ErrBrowserCrashed = errors.New("browser: browser crashed")
	// ErrDriverCrashed: the Playwright driver process died.
	ErrDriverCrashed = errors.New("browser: playwright driver crashed")
	// ErrPageCrashed: the page's renderer crashed (or the page could not be
	// recovered after a cancelled command); the browser is fine.
	ErrPageCrashed = errors.New("browser: page crashed")
	// ErrInvalidArgument: a bad URL, selector, state, JSON argument, cookie,
	// option or screenshot format.
	ErrInvalidArgument = errors.New("browser: invalid argument")
	// ErrNavigation: a navigation failed in the network stack (net::ERR_*),
	// or was interrupted by another navigation.
	ErrNavigation = errors.New("browser: navigation failed")
	// ErrNavigated: the page navigated while the call ran (a navigation
	// committed under it, such as one a script or an earlier click
	// started), destroying the document the call worked on. Retrying is
	// safe.
	ErrNavigated = errors.New("browser: the page navigated during the call")
	// ErrPolicy: the navigation policy refused a request (Config.
	// DenyPrivateNetworks, or Chromium's refusal of a redirect to a
	// non-web scheme) or a context option that would bypass it.
	ErrPolicy = errors.New("browser: refused by policy")
	// ErrTooLarge: a result would be too large to make or send, such as a
	// full-page screenshot of a page over MaxScreenshotSide.
	ErrTooLarge = errors.New("browser: too large")
	// ErrEvaluation: the page script threw (or did not compile).
	ErrEvaluation = errors.New("browser: evaluation failed")
	// ErrNotInstalled: Check found the driver or Chromium missing.
	ErrNotInstalled = errors.New("browser: not installed")
	// ErrLaunch: the driver could not be started or Chromium not launched.
	ErrLaunch = errors.New("browser: launch failed")
)

// maxMessage caps the Playwright text an error carries.
const maxMessage = 300

// shortMessage is the safe part of a Playwright error: the first line of its
// message, without playwright-go's prefixes, call log or stack.
func shortMessage(err error) string {
	var msg string
	if pe := (*playwright.Error)(nil); errors.As(err, &pe) {
		msg = pe.Message
	} else {
		msg = err.Error()
	}
	msg = strings.TrimSpace(msg)
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = strings.TrimSpace(msg[:i])
	}
	for _, prefix := range []string{"playwright: ", "target closed: ", "timeout: "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return clip(msg, maxMessage)
}

// maxLogMessage bounds fullMessage: a launch error carries the browser's
// log, which Chromium can fill with pages of warnings.
const maxLogMessage = 8 << 10

// fullMessage is err's whole text, its Playwright message with the
// browser log and call log that shortMessage cuts, bounded for a log line.
func fullMessage(err error) string {
	msg := err.Error()
	if pe := (*playwright.Error)(nil); errors.As(err, &pe) && !strings.Contains(msg, pe.Message) {
		msg += ": " + pe.Message
	}
	return clip(msg, maxLogMessage)
}

// clip cuts msg to at most n bytes, on a character boundary, marking the
// cut with "…".
func clip(msg string, n int) string {
	if len(msg) <= n {
		return msg
	}
	for n > 0 && !utf8.RuneStart(msg[n]) {
		n--
	}
	return msg[:n] + "…"
}

// scriptMessage is the message of a page script's error, all its lines
// but without its stack: the frames name the scripts of the pages a lease
// visits and the broker's own evaluation wrapper, not the caller's code.
func scriptMessage(pe *playwright.Error) string {
	var lines []string
	for _, line := range strings.Split(pe.Message, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "at ") && t != line {
			break // the stack: "    at f (https://x/app.js:1:2)"
		}
		if t != "" {
			lines = append(lines, t)
		}
	}
	return shortMessage(errors.New(strings.Join(lines, " ")))
}

// ctxError is the error of an operation cut short by ctx: it wraps ctx.Err()
// and, for a deadline, ErrTimeout too.
func ctxError(op string, ctx context.Context) error {
	err := ctx.Err()
	if err == nil {
		err = context.Canceled // only called once ctx is done
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w: %w", op, ErrTimeout, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// isConnectionError reports errors playwright-go returns once its pipe to
// the driver is gone: "Connection closed" for calls pending when it broke,
// the transport's read error for later ones.
func isConnectionError(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "Connection closed") ||
		strings.Contains(msg, "transport closed") ||
		strings.Contains(msg, "could not read protocol") ||
		strings.Contains(msg, "could not send message")
}

// isNavigatedAway tells Playwright's messages for a call whose document
// went away under it because the page navigated.
func isNavigatedAway(msg string) bool {
	return strings.Contains(msg, "Execution context was destroyed") ||
		strings.Contains(msg, "because of a navigation") ||
		strings.Contains(msg, "Frame was detached")
}
