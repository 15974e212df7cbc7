package dashboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/playwright-community/playwright-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/lease"
	"github.com/browserbroker/broker/internal/server"
)

// needBrowser finds the Playwright driver (PLAYWRIGHT_DRIVER_PATH, else
// .cache/playwright/1.52.0 beside go.mod) and Chromium (BROKER_CHROMIUM,
// else /usr/bin/chromium), or skips; with BROKER_REQUIRE_BROWSER it fails.
func needBrowser(t *testing.T) browser.Config {
	t.Helper()
	driver := os.Getenv("PLAYWRIGHT_DRIVER_PATH")
	if driver == "" {
		dir, _ := os.Getwd()
		for ; dir != "/"; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				break
			}
		}
		driver = filepath.Join(dir, ".cache", "playwright", "1.52.0")
	}
	exe := os.Getenv("BROKER_CHROMIUM")
	if exe == "" {
		exe = "/usr/bin/chromium"
	}
	cfg := browser.Config{DriverDir: driver, ExecutablePath: exe}
	if err := browser.Check(cfg); err != nil {
		if os.Getenv("BROKER_REQUIRE_BROWSER") != "" {
			t.Fatalf("browser required (BROKER_REQUIRE_BROWSER is set): %v", err)
		}
		t.Skipf("no browser (%v); run `make test`", err)
	}
	return cfg
}

// testPage is what the leases show: a coloured page saying who it is.
func testPage() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, color := r.URL.Query().Get("name"), r.URL.Query().Get("color")
		fmt.Fprintf(w, `<!doctype html><title>%[1]s</title>
<body style="margin:0;font:64px sans-serif;background:%[2]s;color:#fff;display:flex;align-items:center;justify-content:center;height:100vh">
<div>%[1]s</div></body>`, name, color)
	})
}

// holder holds a lease through a real gRPC client.
type holder struct {
	stream brokerv1.LeaseService_LeaseClient
	id     string
}

func acquireOverGRPC(t *testing.T, ctx context.Context, c brokerv1.LeaseServiceClient, labels map[string]string) *holder {
	t.Helper()
	stream, err := c.Lease(ctx)
	if err != nil {
		t.Fatalf("Lease() = %v", err)
	}
	if err := stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Acquire{Acquire: &brokerv1.Acquire{Labels: labels}}}); err != nil {
		t.Fatalf("send acquire: %v", err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("acquire(%v): %v before granted", labels, err)
		}
		if g := resp.GetGranted(); g != nil {
			return &holder{stream: stream, id: g.GetLeaseId()}
		}
	}
}

// revoked reads the stream to its end and returns its revoked message.
func (h *holder) revoked(t *testing.T) *brokerv1.Revoked {
	t.Helper()
	var rev *brokerv1.Revoked
	for {
		resp, err := h.stream.Recv()
		if err != nil {
			if rev == nil || !errors.Is(err, io.EOF) {
				t.Fatalf("lease %s stream ended with %v (revoked %v), want revoked then OK", h.id, err, rev)
			}
			return rev
		}
		if r := resp.GetRevoked(); r != nil {
			rev = r
		}
	}
}

// TestDashboardInChromium runs the broker's pieces as cmd/broker wires them
// (a browser pool, the lease manager, the gRPC edge, the dashboard), holds
// two leases through a gRPC client, and drives the dashboard in a headless
// Chromium of its own: both leases show with their pages' thumbnails, and
// revoking one from the page ends it with REVOKED for its holder.
// DASHBOARD_SCREENSHOT=path saves a screenshot of the dashboard there.
func TestDashboardInChromium(t *testing.T) {
	bcfg := needBrowser(t)
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	bcfg.Logger = log.Named("browser")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	pool, err := browser.NewPool(ctx, bcfg)
	if err != nil {
		t.Fatalf("NewPool = %v", err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		if err := pool.Close(cctx); err != nil {
			t.Errorf("closing the pool: %v", err)
		}
	})
	leases := lease.New(server.BrowserBackend{Pool: pool}, lease.Config{Capacity: 4, Logger: log.Named("lease")})
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		if err := leases.Close(cctx); err != nil {
			t.Errorf("closing the lease manager: %v", err)
		}
	})
	srv := server.New(server.Config{Leases: leases, Browsers: pool, Logger: log.Named("server")})
	g, _ := server.NewGRPCServer(srv, server.GRPCConfig{})
	lis := bufconn.Listen(1 << 20)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	leaseClient, pageClient := brokerv1.NewLeaseServiceClient(conn), brokerv1.NewPageServiceClient(conn)

	// A broker of a fleet of two, as it would see its fleet.
	dash := New(Config{Leases: leases, Browsers: pool, Drainer: srv, Fleet: fakeFleet{}, Logger: log.Named("dashboard")})
	mux := http.NewServeMux()
	mux.Handle("/dashboard/", dash)
	web := httptest.NewServer(mux)
	t.Cleanup(func() { web.Close(); dash.Close() })
	site := httptest.NewServer(testPage())
	t.Cleanup(site.Close)

	// One lease comes and goes, so that the reclaim chart has a bar.
	gone := acquireOverGRPC(t, ctx, leaseClient, map[string]string{"job": "warmup"})
	gone.stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}})
	gone.revoked(t)

	holders := []*holder{
		acquireOverGRPC(t, ctx, leaseClient, map[string]string{"job": "checkout", "team": "shop"}),
		acquireOverGRPC(t, ctx, leaseClient, map[string]string{"job": "search"}),
	}
	for i, h := range holders {
		name, color := []string{"Checkout", "Search"}[i], []string{"#2e5bda", "#157f3b"}[i]
		u := site.URL + "/?" + url.Values{"name": {name}, "color": {color}}.Encode()
		if _, err := pageClient.Navigate(ctx, &brokerv1.NavigateRequest{LeaseId: h.id, Url: u}); err != nil {
			t.Fatalf("Navigate(%s, %s) = %v", h.id, u, err)
		}
	}

	// The onlooker: a Chromium of the test's own, through playwright-go.
	pw, err := playwright.Run(&playwright.RunOptions{DriverDirectory: bcfg.DriverDir, SkipInstallBrowsers: true})
	if err != nil {
		t.Fatalf("start playwright: %v", err)
	}
	t.Cleanup(func() { pw.Stop() })
	viewer, err := pw.Chromium.Launch(playwright.BrowserTypeLaunchOptions{ExecutablePath: playwright.String(bcfg.ExecutablePath),
		Headless: playwright.Bool(true), Args: []string{"--no-sandbox"}})
	if err != nil {
		t.Fatalf("launch the viewer Chromium: %v", err)
	}
	t.Cleanup(func() { viewer.Close() })
	page, err := viewer.NewPage(playwright.BrowserNewPageOptions{Viewport: &playwright.Size{Width: 1400, Height: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	var pageErrors []error
	page.OnPageError(func(err error) { pageErrors = append(pageErrors, err) })
	dialogs := make(chan string, 1)
	page.OnDialog(func(d playwright.Dialog) {
		dialogs <- d.Message()
		d.Accept()
	})
	if _, err := page.Goto(web.URL + "/dashboard/"); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
	// The page's Content-Security-Policy forbids eval, which Playwright's
	// WaitForFunction needs; Evaluate is not bound by it, so poll with it,
	// as Playwright's own waits do.
	waitFor := func(what, js string, arg any) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			ok, err := page.Evaluate(js, arg)
			if err == nil && ok == true {
				return
			}
			if time.Now().After(deadline) {
				html, _ := page.Locator("#leases").InnerHTML()
				t.Fatalf("dashboard: waiting for %s: last %v, %v\nlease table: %s\npage errors: %v", what, ok, err, html, pageErrors)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	ids := []string{holders[0].id, holders[1].id}
	waitFor("both leases with loaded thumbnails", `(ids) => {
		const rows = [...document.querySelectorAll('#leases tbody tr')];
		return rows.length === 2 && ids.every(id => {
			const img = document.querySelector('tr[data-lease="' + id + '"] img.thumb');
			return img && img.complete && img.naturalWidth > 0;
		});
	}`, ids)
	for _, h := range holders {
		row := page.Locator(fmt.Sprintf(`tr[data-lease=%q]`, h.id))
		text, err := row.InnerText()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{h.id, "Navigate (1)", "ACTIVE"} {
			if !contains(text, want) {
				t.Errorf("dashboard row of %s = %q, want %q in it", h.id, text, want)
			}
		}
		w, err := row.Locator("img.thumb").Evaluate("img => img.naturalWidth", nil)
		if err != nil || w.(int) < 100 {
			t.Errorf("thumbnail of %s: naturalWidth %v (%v), want a real picture", h.id, w, err)
		}
		// The thumbnails were not the holder's activity.
		if info, err := leases.Get(h.id); err != nil || info.Commands != 1 {
			t.Errorf("after thumbnails, lease %s has %d commands (%v); want 1, the Navigate", h.id, info.Commands, err)
		}
	}
	waitFor("the reclaim chart's bar", `() => document.querySelectorAll('#chart svg rect').length > 0`, nil)
	waitFor("the browser table", `() => document.querySelectorAll('#browsers tbody tr').length > 0`, nil)
	waitFor("the crashes card", `() => document.querySelector('#summary').innerText.includes('0 browser, 0 page, 0 driver')`, nil)
	waitFor("the fleet table", `() => {
		const rows = [...document.querySelectorAll('#fleet tbody tr')].map(r => r.innerText);
		return !document.querySelector('#fleet-panel').hidden && rows.length === 2 &&
			rows[0].includes('b1 (this broker)') && rows[1].includes('b2') && rows[1].includes('draining');
	}`, nil)
	if path := os.Getenv("DASHBOARD_SCREENSHOT"); path != "" {
		if _, err := page.Screenshot(playwright.PageScreenshotOptions{Path: playwright.String(path), FullPage: playwright.Bool(true)}); err != nil {
			t.Errorf("saving the dashboard screenshot to %s: %v", path, err)
		}
	}

	// Revoke the first lease with a click, confirming.
	if err := page.Locator(fmt.Sprintf(`tr[data-lease=%q] button.revoke`, ids[0])).Click(); err != nil {
		t.Fatalf("click revoke: %v", err)
	}
	select {
	case msg := <-dialogs:
		if !contains(msg, ids[0]) {
			t.Errorf("confirm dialog %q, want it to name lease %s", msg, ids[0])
		}
	case <-ctx.Done():
		t.Fatal("no confirm dialog after clicking revoke")
	}
	waitFor("the revoked lease to leave the table", `(id) => !document.querySelector('tr[data-lease="' + id + '"]') &&
		document.querySelectorAll('#leases tbody tr').length === 1`, ids[0])
	if rev := holders[0].revoked(t); rev.GetReason() != brokerv1.ReclaimReason_RECLAIM_REASON_REVOKED {
		t.Fatalf("holder of the revoked lease got %v, want revoked{REVOKED}", rev)
	}
	if _, err := leases.Get(ids[1]); err != nil {
		t.Fatalf("the other lease: Get(%s) = %v, want alive", ids[1], err)
	}
	if len(pageErrors) > 0 {
		t.Errorf("the dashboard's JavaScript failed: %v", pageErrors)
	}

	holders[1].stream.Send(&brokerv1.LeaseRequest{Msg: &brokerv1.LeaseRequest_Release{Release: &brokerv1.Release{}}})
	if rev := holders[1].revoked(t); rev.GetReason() != brokerv1.ReclaimReason_RECLAIM_REASON_RELEASED {
		t.Fatalf("released lease ended with %v, want RELEASED", rev)
	}
	page.Close()
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
