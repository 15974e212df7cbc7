// Package dashboard is the broker's operator dashboard: a web page, served
// on the broker's HTTP port beside /metrics, that shows the lease table with
// a live thumbnail of every lease's page, the queue, the browsers, capacity
// and the warm pool, reclaims by reason over the last hour and the lease
// invariant, and lets an admin revoke a lease or drain the broker.
//
// It owns no state of the broker: it reads the lease manager and the
// browser pool, the same objects AdminService reads, and its actions take
// AdminService's paths (Manager.Reclaim with REVOKED, Server.SetDraining).
// Thumbnails go through Manager.Inspect: they wait their turn behind the
// lease's commands, are not the holder's activity, and never change the
// page. The page is plain HTML, CSS and JavaScript embedded in the binary.
package dashboard

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/fleet"
	"github.com/browserbroker/broker/internal/lease"
	"github.com/browserbroker/broker/internal/server"
)

//go:embed static
var staticFiles embed.FS

// Browsers is what the dashboard reads of the browser pool.
// *browser.Pool implements it.
type Browsers interface {
	Stats() browser.Stats
	Browsers() []browser.BrowserInfo
}

// Drainer drains and undrains the broker. *server.Server implements it, as
// AdminService.Drain and Undrain do.
type Drainer interface {
	SetDraining(on bool)
}

// Fleet is what the dashboard shows of a fleet of brokers (fleet.Fleet).
type Fleet interface {
	ID() string
	// MembersWithin lists the live brokers, read from Redis at most once
	// per maxAge.
	MembersWithin(ctx context.Context, maxAge time.Duration) ([]fleet.Member, error)
}

// Config configures the dashboard. Zero values mean the defaults.
type Config struct {
	// Leases is the lease manager. Required.
	Leases *lease.Manager
	// Browsers is the browser pool; nil: no browsers shown, and no
	// thumbnails unless Thumbnail is set.
	Browsers Browsers
	// Drainer drains the broker, as AdminService.Drain does (health checks
	// told). Required.
	Drainer Drainer
	// Auth, when set, requires the admin role: a bearer token in an
	// `Authorization: Bearer TOKEN` header or in the cookie the login form
	// sets. Nil: the dashboard is open to whoever reaches it.
	Auth *server.Auth
	// Fleet, when the broker is in one, is shown as its members and their
	// load; nil: no fleet panel.
	Fleet Fleet
	// Thumbnail takes a lease's thumbnail (a JPEG); nil: a viewport
	// screenshot of the lease's page through Leases.Inspect.
	Thumbnail func(ctx context.Context, leaseID string) ([]byte, error)
	// ThumbnailTimeout bounds one thumbnail, its wait behind the lease's
	// commands included. Default 10s.
	ThumbnailTimeout time.Duration
	// Interval is how often the live view is pushed and reclaims are
	// sampled. Default 1s.
	Interval time.Duration
	// Now is the clock of ages, the reclaim chart and the thumbnail cache;
	// nil: time.Now.
	Now func() time.Time
	// Logger; nil: no logs.
	Logger *zap.Logger
}

// Handler serves the dashboard under /dashboard/. Close stops it.
type Handler struct {
	cfg      Config
	leases   *lease.Manager
	log      *zap.Logger
	mux      *http.ServeMux
	thumbs   *thumbnails
	reclaims *reclaimHistory
	csrf     *http.CrossOriginProtection

	stop      chan struct{}
	closeOnce sync.Once
	done      chan struct{} // closed when the sampler has stopped
}

// New returns the dashboard and starts its reclaim sampler.
func New(cfg Config) *Handler {
	if cfg.Leases == nil || cfg.Drainer == nil {
		panic("dashboard: Config.Leases and Config.Drainer are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.ThumbnailTimeout <= 0 {
		cfg.ThumbnailTimeout = 10 * time.Second
	}
	h := &Handler{
		cfg:      cfg,
		leases:   cfg.Leases,
		log:      cfg.Logger,
		reclaims: &reclaimHistory{},
		csrf:     http.NewCrossOriginProtection(),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	shoot := cfg.Thumbnail
	if shoot == nil {
		shoot = h.screenshot
	}
	h.thumbs = newThumbnails(shoot, cfg.ThumbnailTimeout, cfg.Now)
	h.sample()
	go h.sampleLoop()
	h.routes()
	return h
}

// Close stops the sampler, ends live views and waits for thumbnails being
// taken. Later calls do nothing.
func (h *Handler) Close() {
	h.closeOnce.Do(func() {
		close(h.stop)
		<-h.done
		h.thumbs.close()
	})
}

func (h *Handler) routes() {
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		panic(err) // the embedded folder is part of the binary
	}
	files := http.StripPrefix("/dashboard/static/", http.FileServerFS(static))
	m := http.NewServeMux()
	m.Handle("GET /dashboard/{$}", h.page(http.HandlerFunc(h.index)))
	m.Handle("GET /dashboard/static/", files) // no secrets: the login page needs them
	m.HandleFunc("GET /dashboard/login", h.loginForm)
	m.HandleFunc("POST /dashboard/login", h.login)
	m.HandleFunc("POST /dashboard/logout", h.logout)
	m.Handle("GET /dashboard/api/state", h.api(http.HandlerFunc(h.serveState)))
	m.Handle("GET /dashboard/api/events", h.api(http.HandlerFunc(h.serveEvents)))
	m.Handle("GET /dashboard/api/leases/{id}/thumbnail", h.api(http.HandlerFunc(h.serveThumbnail)))
	m.Handle("POST /dashboard/api/leases/{id}/revoke", h.action(http.HandlerFunc(h.revoke)))
	m.Handle("POST /dashboard/api/drain", h.action(http.HandlerFunc(h.drain(true))))
	m.Handle("POST /dashboard/api/undrain", h.action(http.HandlerFunc(h.drain(false))))
	h.mux = m
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	// The page loads nothing from elsewhere and may not be framed (its
	// buttons revoke leases).
	hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	http.ServeFileFS(w, r, staticFiles, "static/index.html")
}

// sampleLoop feeds the reclaim chart every Interval until Close.
func (h *Handler) sampleLoop() {
	defer close(h.done)
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			h.sample()
		case <-h.stop:
			return
		}
	}
}

// sample reads the manager's reclaim counters, the ones /metrics exports:
// the chart counts nothing of its own.
func (h *Handler) sample() lease.Stats {
	st := h.leases.Stats()
	h.reclaims.observe(h.cfg.Now(), st.Reclaimed)
	return st
}

// pageScreenshot is what a lease's session offers for thumbnails; the
// browser pool's contexts have it.
type pageScreenshot interface {
	Screenshot(ctx context.Context, o browser.ScreenshotOptions) ([]byte, error)
}

var errNoPage = errors.New("dashboard: the lease's session has no page")

// screenshot is the default Thumbnail: a viewport JPEG of the lease's page,
// in the lease's turn, untouched and not counted as activity.
func (h *Handler) screenshot(ctx context.Context, id string) ([]byte, error) {
	var data []byte
	err := h.leases.Inspect(ctx, id, func(ctx context.Context, s lease.Session) error {
		p, ok := s.(pageScreenshot)
		if !ok {
			return errNoPage
		}
		var err error
		data, err = p.Screenshot(ctx, browser.ScreenshotOptions{Format: "jpeg", Quality: 50, Untouched: true})
		return err
	})
	return data, err
}
