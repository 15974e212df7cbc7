package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/browserbroker/broker/internal/server"
)

// securityConfig holds the flags of authentication, TLS and per-principal
// limits.
type securityConfig struct {
	authTokens      string
	tlsCert, tlsKey string
	clientCA        string
	adminPrincipals string
	insecure        bool
	maxLeases       int
	acquireRate     float64
	acquireBurst    int
}

func (s *securityConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&s.authTokens, "auth-tokens", "", "file of bearer tokens, one a line: TOKEN PRINCIPAL ROLE [max_leases=N] (ROLE client or admin; # comments); reloaded on SIGHUP")
	fs.StringVar(&s.tlsCert, "tls-cert", "", "serve TLS with this PEM certificate (chain) file; reloaded on SIGHUP")
	fs.StringVar(&s.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&s.clientCA, "client-ca", "", "mutual TLS: require client certificates signed by a CA of this PEM file; the principal is the certificate's CN, else its first URI SAN, else its first DNS SAN")
	fs.StringVar(&s.adminPrincipals, "admin-principals", "", "comma-separated certificate principals with the admin role (the others: client)")
	fs.BoolVar(&s.insecure, "insecure", false, "allow serving a non-loopback address without authentication, or bearer tokens without TLS")
	fs.IntVar(&s.maxLeases, "max-leases-per-principal", 0, "most live leases of one principal; a tokens file line's max_leases=N overrides it (0: no limit)")
	fs.Float64Var(&s.acquireRate, "acquires-per-second", 0, "acquires a second each principal may start (0: no limit)")
	fs.IntVar(&s.acquireBurst, "acquire-burst", 0, "burst of --acquires-per-second (default: the rate rounded up)")
}

// authenticated says whether callers must authenticate.
func (s *securityConfig) authenticated() bool { return s.authTokens != "" || s.clientCA != "" }

// check checks the flags together.
func (s *securityConfig) check() error {
	switch {
	case (s.tlsCert == "") != (s.tlsKey == ""):
		return errors.New("--tls-cert and --tls-key go together")
	case s.clientCA != "" && s.tlsCert == "":
		return errors.New("--client-ca needs --tls-cert and --tls-key")
	case s.adminPrincipals != "" && s.clientCA == "":
		return errors.New("--admin-principals names certificate principals: it needs --client-ca")
	case s.maxLeases < 0 || s.acquireRate < 0 || s.acquireBurst < 0:
		return errors.New("--max-leases-per-principal, --acquires-per-second and --acquire-burst must not be negative")
	case s.acquireBurst > 0 && s.acquireRate == 0:
		return errors.New("--acquire-burst needs --acquires-per-second")
	case (s.maxLeases > 0 || s.acquireRate > 0) && !s.authenticated():
		return errors.New("per-principal limits need principals: give --auth-tokens or --client-ca")
	}
	return nil
}

// checkExposure applies the listening rules: without authentication the
// broker serves loopback addresses only, and bearer tokens do not cross a
// network in plaintext, unless --insecure.
func (s *securityConfig) checkExposure(ctx context.Context, addr string, log *zap.Logger) error {
	loopback := isLoopback(ctx, addr)
	switch {
	case !s.authenticated() && loopback:
		log.Info("no authentication (--auth-tokens, --client-ca): serving loopback only; every local user can use and administer the broker", zap.String("addr", addr))
	case !s.authenticated() && !s.insecure:
		return fmt.Errorf("refusing to serve %s without authentication: anyone who reaches it could drive browsers and revoke leases; give --auth-tokens or --client-ca, listen on a loopback address (localhost:7070), or accept it with --insecure", addr)
	case !s.authenticated():
		log.Warn("INSECURE: serving a non-loopback address without authentication (--insecure): anyone who reaches it can drive the browsers and administer the broker", zap.String("addr", addr))
	case s.authTokens != "" && s.tlsCert == "" && !loopback && !s.insecure:
		return fmt.Errorf("refusing to take bearer tokens in plaintext on %s: give --tls-cert and --tls-key, listen on a loopback address, or accept it with --insecure", addr)
	case s.authTokens != "" && s.tlsCert == "" && !loopback:
		log.Warn("INSECURE: bearer tokens travel in plaintext on a non-loopback address (--insecure without --tls-cert)", zap.String("addr", addr))
	}
	return nil
}

// dashboardAllowed applies the listening rules to the dashboard, which
// shares the plaintext HTTP listener of --metrics-addr: it is served on a
// loopback address, or anywhere with --insecure. Elsewhere, without
// authentication anyone who reaches it could revoke leases, and with it
// tokens would cross the network in plaintext; /metrics is served anyway
// (it only reads), and the dashboard is left off with a warning.
func (s *securityConfig) dashboardAllowed(ctx context.Context, on bool, addr string, log *zap.Logger) bool {
	switch {
	case !on:
		return false
	case isLoopback(ctx, addr):
		return true
	case s.insecure:
		log.Warn("INSECURE: serving the dashboard on a non-loopback address over plain HTTP (--insecure)", zap.String("addr", addr),
			zap.Bool("authentication", s.authenticated()))
		return true
	}
	log.Warn("dashboard off: --metrics-addr is not a loopback address and its HTTP has no TLS; serve it on loopback (reach it through an SSH tunnel), accept it with --insecure, or silence this with --dashboard=false",
		zap.String("addr", addr))
	return false
}

// isLoopback says whether every address host:port stands for is a loopback
// one; an empty host (all interfaces) or a name that does not resolve is
// not.
func isLoopback(ctx context.Context, addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if ip := net.ParseIP(strings.SplitN(host, "%", 2)[0]); ip != nil {
		return ip.IsLoopback()
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !ip.IP.IsLoopback() {
			return false
		}
	}
	return true
}

// security is the loaded authentication and TLS state.
type security struct {
	cfg  securityConfig
	auth *server.Auth // nil: no authentication
	tls  *tls.Config  // nil: plaintext
	// current is the TLS configuration handshakes use; SIGHUP replaces it.
	current atomic.Pointer[tls.Config]
}

// loadSecurity reads the tokens file and the TLS files; any problem stops
// the broker from starting.
func loadSecurity(c securityConfig, log *zap.Logger) (*security, error) {
	s := &security{cfg: c}
	if c.tlsCert != "" {
		cur, err := loadTLS(c)
		if err != nil {
			return nil, err
		}
		s.current.Store(cur)
		s.tls = &tls.Config{
			MinVersion: tls.VersionTLS12,
			// Each handshake takes the configuration loaded last.
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return s.current.Load(), nil },
		}
	}
	if !c.authenticated() {
		return s, nil
	}
	var tokens *server.Tokens
	if c.authTokens != "" {
		var err error
		if tokens, err = loadTokens(c.authTokens, log); err != nil {
			return nil, err
		}
	}
	var admins []string
	for _, a := range strings.Split(c.adminPrincipals, ",") {
		if a = strings.TrimSpace(a); a != "" {
			admins = append(admins, a)
		}
	}
	s.auth = server.NewAuth(server.AuthConfig{Tokens: tokens, ClientCerts: c.clientCA != "",
		AdminPrincipals: admins, Logger: log.Named("auth")})
	log.Info("authentication on", zap.Bool("tokens", tokens != nil), zap.Bool("client_certificates", c.clientCA != ""),
		zap.Strings("admin_principals", admins))
	return s, nil
}

func loadTokens(path string, log *zap.Logger) (*server.Tokens, error) {
	t, err := server.LoadTokens(path)
	if err != nil {
		return nil, fmt.Errorf("--auth-tokens: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o004 != 0 {
		log.Warn("the tokens file is readable by every user; chmod 600 it", zap.String("path", path))
	}
	return t, nil
}

// loadTLS reads the certificate, its key and the client CA.
func loadTLS(c securityConfig) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2"}, // gRPC needs ALPN h2
	}
	if c.clientCA != "" {
		if cfg.ClientCAs, err = certPool("--client-ca", c.clientCA); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// certPool reads the PEM CA file of flag at path.
func certPool(flag, path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s: no PEM certificate in it", flag, path)
	}
	return pool, nil
}

// reload re-reads the tokens file and the TLS files. A file that fails to
// load keeps the previous set in use, and the error is logged.
func (s *security) reload(log *zap.Logger) {
	if s.cfg.authTokens != "" {
		if t, err := loadTokens(s.cfg.authTokens, log); err != nil {
			log.Error("reload: keeping the previous tokens", zap.Error(err))
		} else {
			s.auth.SetTokens(t)
			log.Info("reload: tokens replaced", zap.Int("tokens", t.Len()))
		}
	}
	if s.tls != nil {
		if cur, err := loadTLS(s.cfg); err != nil {
			log.Error("reload: keeping the previous TLS certificate", zap.Error(err))
		} else {
			s.current.Store(cur)
			log.Info("reload: TLS certificate replaced")
		}
	}
}

// reloadOnSIGHUP reloads on every SIGHUP until stop is called. Without
// anything to reload SIGHUP keeps its default effect.
func (s *security) reloadOnSIGHUP(log *zap.Logger) (stop func()) {
	if s.cfg.authTokens == "" && s.tls == nil {
		return func() {}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-hup:
				s.reload(log)
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-finished
	}
}
