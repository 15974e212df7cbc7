package dashboard

import (
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/browserbroker/broker/internal/server"
)

// cookieName is the login cookie: the bearer token itself (base64), so
// that a token removed from the tokens file (SIGHUP) stops working at once.
const cookieName = "broker_dashboard"

// actionHeader must be on every state-changing request: a cross-site form
// cannot set it, and a cross-site fetch that sets it needs a CORS
// preflight the dashboard never answers.
const actionHeader = "X-Broker-Dashboard"

var (
	errNoCredentials = errors.New("log in with an admin token")
	errNotAdmin      = errors.New("the dashboard needs the admin role")
)

// viewer authenticates a request: the principal, or why not. Without Auth
// everyone is the anonymous admin.
func (h *Handler) viewer(r *http.Request) (server.Principal, error) {
	if h.cfg.Auth == nil {
		return server.Principal{Role: server.RoleAdmin}, nil
	}
	token := ""
	if v := r.Header.Get("Authorization"); v != "" {
		scheme, t, ok := strings.Cut(v, " ")
		if !ok || !strings.EqualFold(scheme, "bearer") {
			return server.Principal{}, errNoCredentials
		}
		token = t
	} else if c, err := r.Cookie(cookieName); err == nil {
		b, err := base64.RawURLEncoding.DecodeString(c.Value)
		if err != nil {
			return server.Principal{}, errNoCredentials
		}
		token = string(b)
	}
	if token == "" {
		return server.Principal{}, errNoCredentials
	}
	p, ok := h.cfg.Auth.TokenPrincipal(token)
	if !ok {
		h.log.Debug("unknown dashboard token", zap.String("remote", r.RemoteAddr))
		return server.Principal{}, errNoCredentials
	}
	if p.Role != server.RoleAdmin {
		return p, errNotAdmin
	}
	return p, nil
}

func authStatus(err error) int {
	if errors.Is(err, errNotAdmin) {
		return http.StatusForbidden
	}
	return http.StatusUnauthorized
}

// page guards an HTML page: without credentials, the login form.
func (h *Handler) page(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := h.viewer(r); err != nil {
			h.renderLogin(w, authStatus(err), err.Error())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// api guards an API endpoint: 401 without credentials, 403 without the
// admin role.
func (h *Handler) api(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if _, err := h.viewer(r); err != nil {
			if authStatus(err) == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="broker dashboard"`)
			}
			http.Error(w, err.Error(), authStatus(err))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// action guards a state-changing request (POST only, by its route): an
// admin's, carrying the action header, from the dashboard's own origin.
func (h *Handler) action(next http.Handler) http.Handler {
	return h.api(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h.sameOrigin(r); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	}))
}

// sameOrigin refuses cross-site requests: without the action header, or
// cross-origin by Sec-Fetch-Site or Origin.
func (h *Handler) sameOrigin(r *http.Request) error {
	if r.Header.Get(actionHeader) != "1" {
		return errors.New("refused: actions need the header " + actionHeader + ": 1")
	}
	if err := h.csrf.Check(r); err != nil {
		return errors.New("refused: cross-origin request")
	}
	return nil
}

var loginTemplate = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Broker dashboard: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/dashboard/static/style.css"></head>
<body class="login"><main>
<h1>Browser broker</h1>
<p>The dashboard needs an <strong>admin</strong> token from the broker's tokens file (<code>--auth-tokens</code>).</p>
{{if .}}<p class="error" role="alert">{{.}}</p>{{end}}
<form method="post" action="/dashboard/login">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
</form></main></body></html>
`))

func (h *Handler) renderLogin(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = loginTemplate.Execute(w, msg)
}

func (h *Handler) loginForm(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Auth == nil {
		http.Redirect(w, r, "/dashboard/", http.StatusSeeOther)
		return
	}
	h.renderLogin(w, http.StatusOK, "")
}

// login checks the token of the login form and keeps it in a cookie only
// this dashboard's pages send (HttpOnly, SameSite=Strict, Path=/dashboard).
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Auth == nil {
		http.Redirect(w, r, "/dashboard/", http.StatusSeeOther)
		return
	}
	if err := h.csrf.Check(r); err != nil {
		http.Error(w, "refused: cross-origin login", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	token := strings.TrimSpace(r.PostFormValue("token"))
	p, ok := h.cfg.Auth.TokenPrincipal(token)
	switch {
	case token == "" || !ok:
		h.renderLogin(w, http.StatusUnauthorized, "Unknown token.")
		return
	case p.Role != server.RoleAdmin:
		h.renderLogin(w, http.StatusForbidden, "That token's principal has the client role; the dashboard needs the admin role.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: base64.RawURLEncoding.EncodeToString([]byte(token)),
		Path: "/dashboard", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	h.log.Info("dashboard login", zap.String("principal", p.Name), zap.String("remote", r.RemoteAddr))
	http.Redirect(w, r, "/dashboard/", http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if err := h.sameOrigin(r); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/dashboard", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}
