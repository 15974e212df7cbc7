package main

import (
	"encoding/json"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

func adminFake(now time.Time) *fakeBroker {
	f := newFakeBroker()
	f.leases = []*brokerv1.LeaseInfo{
		{
			LeaseId:        "L1",
			State:          brokerv1.LeaseState_LEASE_STATE_ACTIVE,
			Labels:         map[string]string{"team": "qa", "job": "7"},
			GrantedAt:      timestamppb.New(now.Add(-90 * time.Second)),
			LastActivityAt: timestamppb.New(now.Add(-12 * time.Second)),
			ExpiresAt:      timestamppb.New(now.Add(48 * time.Second)),
			Commands:       3,
			Ttl:            durationpb.New(time.Minute),
		},
		{
			LeaseId:        "L2",
			State:          brokerv1.LeaseState_LEASE_STATE_CLOSING,
			Reason:         brokerv1.ReclaimReason_RECLAIM_REASON_TTL_EXPIRED,
			GrantedAt:      timestamppb.New(now.Add(-2 * time.Hour)),
			LastActivityAt: timestamppb.New(now.Add(-time.Minute)),
		},
	}
	f.stats = &brokerv1.GetStatsResponse{
		Capacity:     4,
		Active:       1,
		Waiting:      2,
		GrantedTotal: 10,
		Reclaimed: []*brokerv1.ReasonCount{
			{Reason: brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED, Count: 7},
			{Reason: brokerv1.ReclaimReason_RECLAIM_REASON_TTL_EXPIRED, Count: 2},
		},
		ReclaimedTotal:    9,
		DuplicateTriggers: 1,
		BrowserContexts:   1,
		Browsers:          1,
		InvariantOk:       true,
		AcquireFailures:   3,
		Uptime:            durationpb.New(time.Hour + 2*time.Minute + 3*time.Second + 400*time.Millisecond),
	}
	return f
}

// keyValues parses aligned "key  value" lines, and checks the values line
// up in one column.
func keyValues(t *testing.T, out string) map[string]string {
	t.Helper()
	line := regexp.MustCompile(`^(\S.*?\S)(\s{2,})(\S.*)$`)
	kv := map[string]string{}
	column := -1
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("line %q is not \"key  value\"; output:\n%s", l, out)
		}
		if col := len(m[1]) + len(m[2]); column == -1 {
			column = col
		} else if col != column {
			t.Errorf("value of %q starts at column %d, want %d (aligned); output:\n%s", m[1], col, column, out)
		}
		kv[m[1]] = m[3]
	}
	return kv
}

func TestStats(t *testing.T) {
	t.Parallel()
	f := adminFake(time.Now())
	addr := startBroker(t, f)

	r := runClient(t, t.Context(), "stats", "--addr", addr)
	if r.code != 0 {
		t.Fatalf("stats = %v, want exit 0", r)
	}
	got := keyValues(t, r.stdout)
	want := map[string]string{
		"capacity":              "4",
		"active":                "1",
		"waiting":               "2",
		"opening":               "0",
		"granted total":         "10",
		"reclaimed total":       "9",
		"reclaimed RELEASED":    "7",
		"reclaimed TTL_EXPIRED": "2",
		"duplicate triggers":    "1",
		"acquire failures":      "3",
		"browser contexts":      "1",
		"browsers":              "1",
		"invariant":             "ok",
		"invariant violations":  "0",
		"uptime":                "1h2m3s",
	}
	if !maps.Equal(got, want) {
		t.Errorf("stats printed\n%v\nwant\n%v", got, want)
	}

	f.stats.InvariantOk = false
	f.stats.InvariantViolations = 2
	r = runClient(t, t.Context(), "stats", "--addr", addr)
	if got := keyValues(t, r.stdout); got["invariant"] != "BROKEN" || got["invariant violations"] != "2" {
		t.Errorf("stats with a broken invariant printed invariant %q, violations %q; want BROKEN, 2", got["invariant"], got["invariant violations"])
	}
}

func TestStatsJSON(t *testing.T) {
	t.Parallel()
	f := adminFake(time.Now())
	addr := startBroker(t, f)

	r := runClient(t, t.Context(), "--json", "stats", "--addr", addr)
	if r.code != 0 {
		t.Fatalf("--json stats = %v, want exit 0", r)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("--json stats stdout is not JSON: %v\n%s", err, r.stdout)
	}
	want := map[string]any{
		"capacity":        4.0,
		"opening":         0.0, // zero values are printed too
		"granted_total":   "10",
		"reclaimed_total": "9",
		"invariant_ok":    true,
		"uptime":          "3723.400s",
	}
	for k, v := range want {
		if doc[k] != v {
			t.Errorf("--json stats %q = %#v, want %#v", k, doc[k], v)
		}
	}
	reclaimed, _ := doc["reclaimed"].([]any)
	first, _ := reclaimed[0].(map[string]any)
	if len(reclaimed) != 2 || first["reason"] != "RECLAIM_REASON_RELEASED" || first["count"] != "7" {
		t.Errorf("--json stats reclaimed = %v, want RELEASED 7 first of two", doc["reclaimed"])
	}
}

func TestLeases(t *testing.T) {
	t.Parallel()
	f := adminFake(time.Now())
	addr := startBroker(t, f)

	r := runClient(t, t.Context(), "leases", "--addr", addr, "--label", "team=qa")
	if r.code != 0 {
		t.Fatalf("leases = %v, want exit 0", r)
	}
	f.mu.Lock()
	filter := f.listReq.GetLabels()
	f.mu.Unlock()
	if !maps.Equal(filter, map[string]string{"team": "qa"}) {
		t.Errorf("ListLeases got label filter %v, want team=qa", filter)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	wantRows := [][]string{
		{"ID", "STATE", "AGE", "IDLE", "COMMANDS", "LABELS"},
		{"L1", "ACTIVE", "1m30s", "12s", "3", "job=7,team=qa"},
		{"L2", "CLOSING(TTL_EXPIRED)", "2h0m0s", "1m0s", "0", "-"},
	}
	if len(lines) != len(wantRows) {
		t.Fatalf("leases printed %d lines, want %d:\n%s", len(lines), len(wantRows), r.stdout)
	}
	for i, want := range wantRows {
		if got := strings.Fields(lines[i]); !slices.Equal(got, want) {
			t.Errorf("leases line %d = %q, want %q", i, got, want)
		}
		if col := strings.Index(lines[i], want[1]); col != strings.Index(lines[0], "STATE") {
			t.Errorf("leases line %d: STATE column at %d, header's at %d (not aligned)", i, col, strings.Index(lines[0], "STATE"))
		}
	}

	f.leases = nil
	if r := runClient(t, t.Context(), "leases", "--addr", addr); r.code != 0 || r.stdout != "no leases\n" {
		t.Errorf("leases with none = %v, want exit 0 and \"no leases\"", r)
	}
}

func TestLeasesJSON(t *testing.T) {
	t.Parallel()
	f := adminFake(time.Now())
	addr := startBroker(t, f)

	r := runClient(t, t.Context(), "leases", "--json", "--addr", addr)
	if r.code != 0 {
		t.Fatalf("--json leases = %v, want exit 0", r)
	}
	var doc struct {
		Leases []struct {
			LeaseID   string            `json:"lease_id"`
			State     string            `json:"state"`
			Reason    string            `json:"reason"`
			Labels    map[string]string `json:"labels"`
			Commands  string            `json:"commands"`
			GrantedAt time.Time         `json:"granted_at"`
		} `json:"leases"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("--json leases stdout is not JSON: %v\n%s", err, r.stdout)
	}
	if len(doc.Leases) != 2 {
		t.Fatalf("--json leases has %d leases, want 2:\n%s", len(doc.Leases), r.stdout)
	}
	l1, l2 := doc.Leases[0], doc.Leases[1]
	if l1.LeaseID != "L1" || l1.State != "LEASE_STATE_ACTIVE" || l1.Commands != "3" ||
		l1.Labels["team"] != "qa" || !l1.GrantedAt.Equal(f.leases[0].GetGrantedAt().AsTime()) {
		t.Errorf("--json leases[0] = %+v, want L1 ACTIVE with 3 commands, team=qa and its grant time", l1)
	}
	if l2.LeaseID != "L2" || l2.State != "LEASE_STATE_CLOSING" || l2.Reason != "RECLAIM_REASON_TTL_EXPIRED" {
		t.Errorf("--json leases[1] = %+v, want L2 CLOSING with reason TTL_EXPIRED", l2)
	}
}

func TestLeaseInfo(t *testing.T) {
	t.Parallel()
	f := adminFake(time.Now())
	addr := startBroker(t, f)

	r := runClient(t, t.Context(), "lease-info", "L1", "--addr", addr)
	if r.code != 0 {
		t.Fatalf("lease-info L1 = %v, want exit 0", r)
	}
	got := keyValues(t, r.stdout)
	for k, v := range map[string]string{"id": "L1", "state": "ACTIVE", "labels": "job=7,team=qa", "commands": "3", "idle ttl": "1m0s"} {
		if got[k] != v {
			t.Errorf("lease-info L1 %q = %q, want %q\n%s", k, got[k], v, r.stdout)
		}
	}
	if !strings.HasSuffix(got["granted"], "(1m30s ago)") || !strings.HasSuffix(got["expires"], "(in 48s)") {
		t.Errorf("lease-info L1 granted %q, expires %q; want 1m30s ago and in 48s", got["granted"], got["expires"])
	}

	r = runClient(t, t.Context(), "--json", "lease-info", "L2", "--addr", addr)
	var doc struct {
		Lease struct {
			LeaseID string `json:"lease_id"`
			Reason  string `json:"reason"`
		} `json:"lease"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || doc.Lease.LeaseID != "L2" || doc.Lease.Reason != "RECLAIM_REASON_TTL_EXPIRED" {
		t.Errorf("--json lease-info L2 = %+v, %v; want lease L2 with reason TTL_EXPIRED\n%v", doc, err, r)
	}
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	f := adminFake(time.Now())
	addr := startBroker(t, f)

	r := runClient(t, t.Context(), "revoke", "L1", "--message", "maintenance", "--addr", addr)
	if r.code != 0 || r.stdout != "lease L1 ended: REVOKED\n" {
		t.Errorf("revoke L1 = %v, want exit 0 and \"lease L1 ended: REVOKED\"", r)
	}
	f.mu.Lock()
	req := f.revokeReq
	f.mu.Unlock()
	if req.GetLeaseId() != "L1" || req.GetMessage() != "maintenance" {
		t.Errorf("RevokeLease got %v, want lease L1 with message maintenance", req)
	}

	// A lease already closing reports the reason already under way.
	r = runClient(t, t.Context(), "--json", "revoke", "L2", "--addr", addr)
	var doc map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 0 || doc["reason"] != "RECLAIM_REASON_TTL_EXPIRED" {
		t.Errorf("--json revoke L2 = %v (parsed %v, %v), want reason RECLAIM_REASON_TTL_EXPIRED", r, doc, err)
	}

	r = runClient(t, t.Context(), "revoke", "nope", "--addr", addr)
	if want := 10 + int(codes.NotFound); r.code != want {
		t.Errorf("revoke nope = %v, want exit %d", r, want)
	}
	if want := "client: revoke nope: NOT_FOUND: lease \"nope\" not found\n"; r.stderr != want {
		t.Errorf("revoke nope stderr = %q, want %q", r.stderr, want)
	}
}

func TestSessions(t *testing.T) {
	t.Parallel()
	now := time.Now()
	f := newFakeBroker()
	f.sessions = []*brokerv1.SessionInfo{
		{SessionKey: `"alice"shop-1`, State: brokerv1.SessionState_SESSION_STATE_HELD, Generation: 4, LeaseId: "L1",
			SavedAt: timestamppb.New(now.Add(-30 * time.Second)), Waiting: 1},
		{SessionKey: "shop-2", State: brokerv1.SessionState_SESSION_STATE_SAVED, Generation: 9},
	}
	addr := startBroker(t, f)

	r := runClient(t, t.Context(), "sessions", "--addr", addr)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if r.code != 0 || len(lines) != 3 {
		t.Fatalf("sessions = %v, want a header and two rows", r)
	}
	for i, want := range [][]string{
		{"KEY", "STATE", "GENERATION", "LEASE", "WAITING", "SAVED"},
		{`"alice"shop-1`, "HELD", "4", "L1", "1", "30s", "ago"},
		{"shop-2", "SAVED", "9", "-", "0", "-"},
	} {
		if got := strings.Fields(lines[i]); !slices.Equal(got, want) {
			t.Errorf("sessions line %d = %q, want the fields %q", i, lines[i], want)
		}
	}
	r = runClient(t, t.Context(), "--json", "sessions", "--addr", addr)
	var doc struct {
		Sessions []map[string]any `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Sessions) != 2 || doc.Sessions[1]["generation"] != "9" {
		t.Errorf("--json sessions = %v (parsed %v, %v), want both sessions, generation as a string", r, doc, err)
	}

	r = runClient(t, t.Context(), "delete-session", `"alice"shop-1`, "--addr", addr)
	if want := "session \"alice\"shop-1 deleted; its lease ended: REVOKED\n"; r.code != 0 || r.stdout != want {
		t.Errorf("delete-session of a held session = %v, want %q", r, want)
	}
	r = runClient(t, t.Context(), "delete-session", "shop-2", "--addr", addr)
	if r.code != 0 || r.stdout != "session shop-2 deleted\n" {
		t.Errorf("delete-session of a saved session = %v", r)
	}
	r = runClient(t, t.Context(), "delete-session", "nope", "--addr", addr)
	if want := 10 + int(codes.NotFound); r.code != want {
		t.Errorf("delete-session nope = %v, want exit %d", r, want)
	}
	if r = runClient(t, t.Context(), "delete-session", "--addr", addr); r.code != 2 {
		t.Errorf("delete-session without a key = %v, want exit 2", r)
	}
}
