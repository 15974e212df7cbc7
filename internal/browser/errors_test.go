package browser

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/playwright-community/playwright-go"
)

func TestClip(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"0123456789abc", 10, "0123456789…"},
		{"ééééé", 5, "éé…"}, // 2 bytes each: byte 5 is inside the third
		{"日本語", 4, "日…"},    // 3 bytes each
	} {
		got := clip(c.in, c.n)
		if got != c.want || !utf8.ValidString(got) {
			t.Errorf("clip(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

// shortMessage gives the client Playwright's first line without prefixes;
// fullMessage keeps the browser log for the broker's own log, bounded.
func TestShortAndFullMessage(t *testing.T) {
	pe := &playwright.Error{Name: "TargetClosedError",
		Message: "target closed: Target page, context or browser has been closed\nBrowser logs:\n\n[pid=1][err] boom"}
	err := fmt.Errorf("launch: %w", pe)
	if got := shortMessage(err); got != "Target page, context or browser has been closed" {
		t.Errorf("shortMessage = %q", got)
	}
	if got := fullMessage(err); !strings.Contains(got, "[pid=1][err] boom") {
		t.Errorf("fullMessage = %q, want the browser log in it", got)
	}
	long := errors.New(strings.Repeat("x", maxLogMessage+100))
	if got := fullMessage(long); len(got) > maxLogMessage+len("…") {
		t.Errorf("fullMessage of %d bytes is %d bytes, want at most %d", maxLogMessage+100, len(got), maxLogMessage+len("…"))
	}
}
