package server

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"unicode/utf8"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/lease"
)

// errorCodes is the one table from domain errors to status codes, checked
// in order. Messages of these errors are written to be safe for clients,
// and toStatus passes them through clientMessage all the same.
var errorCodes = []struct {
	err  error
	code codes.Code
}{
	{lease.ErrNotFound, codes.NotFound},
	{lease.ErrInvalid, codes.InvalidArgument},
	{lease.ErrNoCapacity, codes.ResourceExhausted},
	{lease.ErrQueueFull, codes.ResourceExhausted},
	{lease.ErrLimit, codes.ResourceExhausted},
	{lease.ErrShuttingDown, codes.Unavailable},
	{lease.ErrDraining, codes.Unavailable},
	{browser.ErrPolicy, codes.PermissionDenied},
	{browser.ErrInvalidArgument, codes.InvalidArgument},
	{browser.ErrEvaluation, codes.InvalidArgument},
	{browser.ErrTooLarge, codes.ResourceExhausted},
	{browser.ErrNavigated, codes.Aborted},
	{browser.ErrTimeout, codes.DeadlineExceeded},
	{browser.ErrNavigation, codes.Unavailable},
	{browser.ErrPageCrashed, codes.Aborted},
	{browser.ErrBrowserCrashed, codes.Aborted},
	{browser.ErrDriverCrashed, codes.Aborted},
	{browser.ErrClosed, codes.Aborted},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
	// Last: a backend failure wraps the browser's error, matched above
	// when it is one of those.
	{lease.ErrBackend, codes.Unavailable},
}

// toStatus turns a domain error into a gRPC status error. Errors it does
// not know become Internal with a fixed message; the detail is logged.
func toStatus(log *zap.Logger, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var re *lease.ReclaimedError
	if errors.As(err, &re) {
		if re.InFlight {
			return status.Error(codes.Aborted, clientMessage(re.Error()))
		}
		return status.Error(codes.FailedPrecondition, clientMessage(re.Error()))
	}
	for _, e := range errorCodes {
		if errors.Is(err, e.err) {
			return status.Error(e.code, clientMessage(err.Error()))
		}
	}
	log.Error("unexpected error", zap.Error(err))
	return status.Error(codes.Internal, "internal error")
}

func invalid(msg string) error { return status.Error(codes.InvalidArgument, msg) }

// Internal detail that clientMessage cuts out of a message.
var (
	// A Go source position, as in a panic's stack.
	goSource = regexp.MustCompile(`\S*\.go:\d+`)
	// A JavaScript stack frame: "at f (https://x/app.js:10:5)".
	jsFrame = regexp.MustCompile(`\bat [^\s()]*\s*\(?\S+:\d+:\d+\)?`)
	// A WebSocket endpoint: remote browser servers and the driver's.
	wsEndpoint = regexp.MustCompile(`\bwss?://\S+`)
	// An absolute file path of two parts or more, starting a word: never a
	// URL's path, nor an XPath selector such as //div.
	filePath = regexp.MustCompile(`(^|[\s(\[='"])/[^\s'"()\[\]/]+/[^\s'"()\[\]]*`)
	// A pipe to the Playwright driver, as Go's os.File names it.
	pipeName = regexp.MustCompile(`\|\d+\b`)
)

// maxClientMessage caps a status message.
const maxClientMessage = 1000

// clientMessage is msg as clients may read it: the lines before any stack
// trace or Playwright "Call log:" joined into one, without file paths, Go
// source positions, JavaScript stack frames, WebSocket endpoints or pipe
// names, and at most maxClientMessage bytes. The log keeps the detail.
//
// A page script's own error keeps its message but loses its stack: frames
// name the scripts of the pages a lease visits, not the client's code.
func clientMessage(msg string) string {
	var keep []string
	for i, line := range strings.Split(msg, "\n") {
		t := strings.TrimSpace(line)
		if i > 0 && (t == "Call log:" || strings.HasPrefix(t, "at ") || strings.HasPrefix(t, "goroutine ") ||
			strings.HasPrefix(t, "=====")) {
			break
		}
		if t != "" {
			keep = append(keep, t)
		}
	}
	msg = strings.Join(keep, " ")
	msg = goSource.ReplaceAllString(msg, "…")
	msg = jsFrame.ReplaceAllString(msg, "…")
	msg = wsEndpoint.ReplaceAllString(msg, "…")
	msg = filePath.ReplaceAllString(msg, "${1}…")
	msg = pipeName.ReplaceAllString(msg, "pipe")
	if len(msg) > maxClientMessage {
		cut := maxClientMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}
