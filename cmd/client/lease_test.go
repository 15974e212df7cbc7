package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// guard bounds a wait on the fake broker, so a broken client fails the test
// instead of hanging it. It is a safety net, not synchronisation.
const guard = 10 * time.Second

func leaseFake() *fakeBroker {
	f := newFakeBroker()
	f.texts = map[string][]string{"h1": {"Example Domain"}, "p": {"first", "second"}}
	f.evals = map[string]string{"document.title": `"Example Domain"`}
	f.shot = []byte("\x89PNG\r\n\x1a\nnot really an image")
	return f
}

func TestLeaseFlow(t *testing.T) {
	t.Parallel()
	f := leaseFake()
	f.queue = []int32{2, 1}
	addr := startBroker(t, f)
	shot := filepath.Join(t.TempDir(), "out.png")

	r := runClient(t, t.Context(), "lease", "--addr", addr,
		"--url", "https://example.com/", "--wait-for", "#main",
		"--text", "h1", "--text", "p", "--eval", "document.title",
		"--screenshot", shot, "--full-page",
		"--ttl", "45s", "--wait", "5s", "--label", "team=qa", "--label", "job=7",
		"--viewport", "800x600", "--user-agent", "TestAgent/1")
	if r.code != 0 {
		t.Fatalf("lease = %v, want exit 0", r)
	}

	wantCalls := []string{
		"acquire",
		"navigate https://example.com/",
		"wait-for #main",
		"text h1",
		"text p",
		"eval document.title",
		"screenshot full_page=true",
		"release",
	}
	if got := f.callLog(); !slices.Equal(got, wantCalls) {
		t.Errorf("broker saw calls\n%q\nwant\n%q", got, wantCalls)
	}
	wantAcquire := &brokerv1.Acquire{
		Ttl:         durationpb.New(45 * time.Second),
		WaitTimeout: durationpb.New(5 * time.Second),
		Labels:      map[string]string{"team": "qa", "job": "7"},
		Context: &brokerv1.ContextOptions{
			Viewport:  &brokerv1.Viewport{Width: 800, Height: 600},
			UserAgent: "TestAgent/1",
		},
	}
	if got := f.acquired(); !proto.Equal(got, wantAcquire) {
		t.Errorf("acquire = %v, want %v", got, wantAcquire)
	}
	f.mu.Lock()
	pageIDs := slices.Clone(f.pageIDs)
	f.mu.Unlock()
	if want := slices.Repeat([]string{"L1"}, 6); !slices.Equal(pageIDs, want) {
		t.Errorf("page commands named leases %q, want %q", pageIDs, want)
	}

	data, err := os.ReadFile(shot)
	if err != nil || !bytes.Equal(data, f.shot) {
		t.Errorf("screenshot file = %q, %v; want %q", data, err, f.shot)
	}
	for _, want := range []string{
		"navigate: https://example.com/ (status 200",
		"wait-for #main: found\n",
		"text h1: Example Domain\n",
		"text p: first\ntext p: second\n",
		"eval document.title: \"Example Domain\"\n",
		fmt.Sprintf("screenshot: %s (%d bytes)\n", shot, len(f.shot)),
		"lease L1 ended: RELEASED: released by the holder\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("lease stdout lacks %q\n%v", want, r)
		}
	}
	if strings.Contains(r.stdout+r.stderr, "RECLAIM_REASON_") {
		t.Errorf("lease output has a prefixed enum name\n%v", r)
	}
	i2 := strings.Index(r.stderr, "queued: position 2\n")
	i1 := strings.Index(r.stderr, "queued: position 1\n")
	if i2 < 0 || i1 < i2 {
		t.Errorf("lease stderr = %q, want queue positions 2 then 1", r.stderr)
	}
}

func TestLeaseJSON(t *testing.T) {
	t.Parallel()
	f := leaseFake()
	f.queue = []int32{3, 1}
	addr := startBroker(t, f)
	shot := filepath.Join(t.TempDir(), "out.png")

	r := runClient(t, t.Context(), "--json", "lease", "--addr", addr,
		"--url", "https://example.com/", "--text", "h1", "--text", "nothing",
		"--eval", "document.title", "--screenshot", shot, "--ttl", "1m")
	if r.code != 0 {
		t.Fatalf("--json lease = %v, want exit 0", r)
	}
	if r.stderr != "" {
		t.Errorf("--json lease stderr = %q, want empty (no human progress)", r.stderr)
	}
	var doc struct {
		LeaseID        string  `json:"lease_id"`
		QueuePositions []int32 `json:"queue_positions"`
		Granted        struct {
			LeaseID         string `json:"lease_id"`
			TTL             string `json:"ttl"`
			Generation      string `json:"generation"`
			SessionWarm     bool   `json:"session_warm"`
			SessionRestored bool   `json:"session_restored"`
		} `json:"granted"`
		Navigate struct {
			Status int    `json:"status"`
			URL    string `json:"url"`
			Title  string `json:"title"`
		} `json:"navigate"`
		Texts []struct {
			Selector string   `json:"selector"`
			Texts    []string `json:"texts"`
		} `json:"texts"`
		Evals []struct {
			Expression string `json:"expression"`
			Result     any    `json:"result"`
		} `json:"evals"`
		Screenshot struct {
			Path  string `json:"path"`
			Bytes int    `json:"bytes"`
		} `json:"screenshot"`
		Revoked struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"revoked"`
		Error *string `json:"error"`
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("--json lease stdout is not the lease document: %v\n%s", err, r.stdout)
	}
	if dec.More() {
		t.Errorf("--json lease printed more than one document:\n%s", r.stdout)
	}
	switch {
	case doc.LeaseID != "L1":
		t.Errorf("lease_id = %q, want L1", doc.LeaseID)
	case !slices.Equal(doc.QueuePositions, []int32{3, 1}):
		t.Errorf("queue_positions = %v, want [3 1]", doc.QueuePositions)
	case doc.Granted.LeaseID != "L1" || doc.Granted.TTL != "60s":
		t.Errorf("granted = %+v, want lease L1 with ttl 60s", doc.Granted)
	case doc.Navigate.Status != 200 || doc.Navigate.Title != "Example Domain":
		t.Errorf("navigate = %+v, want status 200 and the title", doc.Navigate)
	case len(doc.Texts) != 2 || doc.Texts[0].Selector != "h1" || !slices.Equal(doc.Texts[0].Texts, []string{"Example Domain"}):
		t.Errorf("texts = %+v, want h1 first with its text", doc.Texts)
	case doc.Texts[1].Texts == nil || len(doc.Texts[1].Texts) != 0:
		t.Errorf("texts[1].texts = %#v, want [] for no match", doc.Texts[1].Texts)
	case len(doc.Evals) != 1 || doc.Evals[0].Result != "Example Domain":
		t.Errorf("evals = %+v, want the parsed JSON value \"Example Domain\"", doc.Evals)
	case doc.Screenshot.Path != shot || doc.Screenshot.Bytes != len(f.shot):
		t.Errorf("screenshot = %+v, want %s with %d bytes", doc.Screenshot, shot, len(f.shot))
	case doc.Revoked.Reason != "RECLAIM_REASON_RELEASED":
		t.Errorf("revoked.reason = %q, want RECLAIM_REASON_RELEASED", doc.Revoked.Reason)
	case doc.Error != nil:
		t.Errorf("error = %q, want none", *doc.Error)
	}
}

func TestLeaseRevokedWhileRunning(t *testing.T) {
	t.Parallel()
	expired := &brokerv1.Revoked{
		Reason:  brokerv1.ReclaimReason_RECLAIM_REASON_TTL_EXPIRED,
		Message: "idle for 45s",
	}
	tests := []struct {
		name       string
		onNavigate func(f *fakeBroker) func(ctx context.Context) error
	}{
		{
			// The broker stops the command and says so.
			name: "command aborted",
			onNavigate: func(f *fakeBroker) func(ctx context.Context) error {
				return func(ctx context.Context) error {
					f.revokeLease(expired)
					return status.Error(codes.Aborted, "lease reclaimed while the command ran: TTL_EXPIRED")
				}
			},
		},
		{
			// The command would run on: the client must stop it itself.
			name: "command in flight",
			onNavigate: func(f *fakeBroker) func(ctx context.Context) error {
				return func(ctx context.Context) error {
					f.revokeLease(expired)
					<-ctx.Done()
					return ctx.Err()
				}
			},
		},
		{
			// The revoke lands between two commands.
			name: "between commands",
			onNavigate: func(f *fakeBroker) func(ctx context.Context) error {
				return func(ctx context.Context) error {
					f.revokeLease(expired)
					return nil
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := leaseFake()
			f.onNavigate = tt.onNavigate(f)
			addr := startBroker(t, f)
			shot := filepath.Join(t.TempDir(), "out.png")

			// A --timeout far beyond the guard: a client that let the
			// in-flight command run to its deadline fails the test.
			start := time.Now()
			r := runClient(t, t.Context(), "lease", "--addr", addr, "--timeout", "1m",
				"--url", "https://example.com/", "--text", "h1", "--screenshot", shot)
			if elapsed := time.Since(start); elapsed > guard {
				t.Errorf("lease revoked mid-run took %v, want it to stop at once", elapsed)
			}
			if r.code != exitLeaseEnd {
				t.Errorf("lease revoked mid-run = %v, want exit %d", r, exitLeaseEnd)
			}
			if want := "client: lease L1 ended early: TTL_EXPIRED: idle for 45s"; lastLine(r.stderr) != want {
				t.Errorf("lease revoked mid-run stderr = %q, want it to end with %q", r.stderr, want)
			}
			if !strings.Contains(r.stdout, "lease L1 ended: TTL_EXPIRED") {
				t.Errorf("lease revoked mid-run stdout lacks the reason\n%v", r)
			}
			if calls := f.callLog(); slices.Contains(calls, "screenshot full_page=false") {
				t.Errorf("broker saw %q after the revoke, want the client to stop", calls)
			}
			if _, err := os.Stat(shot); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("screenshot file after a revoke: stat = %v, want not to exist", err)
			}
		})
	}
}

func TestLeaseAcquireFails(t *testing.T) {
	t.Parallel()
	for _, mode := range [][]string{nil, {"--json"}} {
		f := leaseFake()
		f.acquireErr = status.Error(codes.ResourceExhausted, "no capacity within 5s")
		addr := startBroker(t, f)
		args := append(slices.Clone(mode), "lease", "--addr", addr, "--url", "https://example.com/", "--wait", "5s")
		r := runClient(t, t.Context(), args...)
		if want := 10 + 8; r.code != want {
			t.Errorf("run(%q) with no capacity = %v, want exit %d", args, r, want)
		}
		if want := "client: acquire: RESOURCE_EXHAUSTED: no capacity within 5s\n"; r.stderr != want {
			t.Errorf("run(%q) with no capacity stderr = %q, want %q", args, r.stderr, want)
		}
		if r.stdout != "" {
			t.Errorf("run(%q) with no capacity stdout = %q, want empty", args, r.stdout)
		}
		if calls := f.callLog(); !slices.Equal(calls, []string{"acquire"}) {
			t.Errorf("run(%q): broker saw %q, want only the acquire", args, calls)
		}
	}
}

func TestLeaseStepFails(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		textErr    error
		screenshot func(dir string) string
		wantCode   int
		wantErr    string
	}{
		{
			name:       "page command fails",
			textErr:    status.Error(codes.InvalidArgument, "bad selector"),
			screenshot: func(dir string) string { return filepath.Join(dir, "out.png") },
			wantCode:   10 + int(codes.InvalidArgument),
			wantErr:    "client: text h1: INVALID_ARGUMENT: bad selector",
		},
		{
			name:       "screenshot file cannot be written",
			screenshot: func(dir string) string { return filepath.Join(dir, "missing", "out.png") },
			wantCode:   exitFailure,
			wantErr:    "client: screenshot: open ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := leaseFake()
			f.textErr = tt.textErr
			addr := startBroker(t, f)
			r := runClient(t, t.Context(), "lease", "--addr", addr,
				"--url", "https://example.com/", "--text", "h1", "--screenshot", tt.screenshot(t.TempDir()))
			if r.code != tt.wantCode {
				t.Errorf("lease = %v, want exit %d", r, tt.wantCode)
			}
			if !strings.HasPrefix(lastLine(r.stderr), tt.wantErr) {
				t.Errorf("lease stderr = %q, want a last line starting %q", r.stderr, tt.wantErr)
			}
			// The lease is given back all the same.
			if calls := f.callLog(); len(calls) == 0 || calls[len(calls)-1] != "release" {
				t.Errorf("broker saw %q, want a release last", calls)
			}
			if !strings.Contains(r.stdout, "lease L1 ended: RELEASED") {
				t.Errorf("lease stdout lacks the end reason\n%v", r)
			}
		})
	}
}

func TestLeaseInterrupted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(f *fakeBroker, interrupt func())
	}{
		{
			name: "while queued",
			setup: func(f *fakeBroker, interrupt func()) {
				f.queue = []int32{1}
				f.afterQueued = func(ctx context.Context) error {
					interrupt()
					<-ctx.Done()
					return ctx.Err()
				}
			},
		},
		{
			name: "while a command runs",
			setup: func(f *fakeBroker, interrupt func()) {
				f.onNavigate = func(ctx context.Context) error {
					interrupt()
					<-ctx.Done()
					return ctx.Err()
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := leaseFake()
			ctx, interrupt := context.WithCancel(t.Context()) // what Ctrl-C does to run's context
			defer interrupt()
			tt.setup(f, interrupt)
			addr := startBroker(t, f)

			r := runClient(t, ctx, "lease", "--addr", addr, "--url", "https://example.com/")
			if want := 10 + int(codes.Canceled); r.code != want {
				t.Errorf("interrupted lease = %v, want exit %d", r, want)
			}
			if !strings.HasPrefix(lastLine(r.stderr), "client: ") || !strings.Contains(lastLine(r.stderr), ": CANCELLED: ") {
				t.Errorf("interrupted lease stderr = %q, want CANCELLED", r.stderr)
			}
			select {
			case <-f.streamEnded:
			case <-time.After(guard):
				t.Fatal("the broker's lease stream did not end after the interrupt")
			}
			if calls := f.callLog(); slices.Contains(calls, "release") {
				t.Errorf("broker saw %q, want the stream to end without release", calls)
			}
		})
	}
}

func TestLeaseRenewsDuringLongCommand(t *testing.T) {
	t.Parallel()
	f := leaseFake()
	f.grantTTL = durationpb.New(30 * time.Millisecond)
	// Navigate returns only once a renew has arrived on the stream.
	f.onNavigate = func(ctx context.Context) error {
		select {
		case <-f.renewed:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	addr := startBroker(t, f)
	r := runClient(t, t.Context(), "lease", "--addr", addr, "--timeout", "10s", "--url", "https://example.com/")
	if r.code != 0 {
		t.Errorf("lease with a 30ms TTL and a command waiting for a renew = %v, want exit 0", r)
	}
}

// lastLine is the last line of s, where the client's error message goes.
func lastLine(s string) string {
	s = strings.TrimSuffix(s, "\n")
	return s[strings.LastIndex(s, "\n")+1:]
}
