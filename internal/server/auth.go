package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/lease"
)

// Role is what a principal may do.
type Role int

const (
	// RoleClient may hold leases and drive their pages; it sees only its
	// own leases.
	RoleClient Role = iota + 1
	// RoleAdmin may also call AdminService, which sees every lease.
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleClient:
		return "client"
	case RoleAdmin:
		return "admin"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// ParseRole parses "client" or "admin".
func ParseRole(s string) (Role, error) {
	switch s {
	case "client":
		return RoleClient, nil
	case "admin":
		return RoleAdmin, nil
	}
	return 0, fmt.Errorf("role %.20q is not client or admin", s)
}

// Principal is an authenticated caller.
type Principal struct {
	// Name owns the caller's leases: another principal cannot see or use
	// them.
	Name string
	Role Role
}

type principalKey struct{}

// PrincipalFrom returns the principal the authentication interceptors put
// on a call's context; false when the call was not authenticated (no
// authentication is configured, or the method is open, like health).
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// AuthConfig configures authentication. Zero values mean the defaults.
type AuthConfig struct {
	// Tokens are the bearer tokens accepted; nil: none. [Auth.SetTokens]
	// replaces them.
	Tokens *Tokens
	// ClientCerts: a call without a bearer token is made by the principal
	// its connection's verified client certificate names (see
	// [CertPrincipal]). The TLS configuration must require and verify
	// client certificates. Default false.
	ClientCerts bool
	// AdminPrincipals are the certificate principals with the admin role;
	// the others have the client role. Token principals have the role their
	// line gives.
	AdminPrincipals []string
	// Logger; nil: no logs.
	Logger *zap.Logger
}

// Auth authenticates calls: a bearer token in the `authorization: Bearer
// TOKEN` metadata names the principal; without one, the connection's
// client certificate does (when ClientCerts). A token that is sent must be
// valid, even when a certificate would do. The health and reflection
// services are open to all.
type Auth struct {
	tokens      atomic.Pointer[Tokens]
	clientCerts bool
	admins      map[string]bool
	log         *zap.Logger
}

// NewAuth returns an authenticator.
func NewAuth(cfg AuthConfig) *Auth {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	a := &Auth{clientCerts: cfg.ClientCerts, admins: make(map[string]bool), log: cfg.Logger}
	for _, p := range cfg.AdminPrincipals {
		a.admins[p] = true
	}
	a.tokens.Store(cfg.Tokens)
	return a
}

// SetTokens replaces the accepted tokens at once: calls that arrive after
// it returns are checked against t only. Calls already admitted go on, and
// so do lease streams a removed token opened, but their page commands are
// refused.
func (a *Auth) SetTokens(t *Tokens) { a.tokens.Store(t) }

// LeaseLimit returns a lease.Config.PrincipalLimit: the principal's
// max_leases from the current tokens, else def (0: no limit).
func (a *Auth) LeaseLimit(def int) func(principal string) int {
	return func(principal string) int {
		if t := a.tokens.Load(); t != nil {
			if n := t.MaxLeases(principal); n > 0 {
				return n
			}
		}
		return def
	}
}

// TokenPrincipal returns the principal of a bearer token from the current
// tokens file; false when the token is unknown or no tokens are configured
// (certificates alone name no principal outside a TLS connection). For
// edges other than gRPC, such as the dashboard.
func (a *Auth) TokenPrincipal(token string) (Principal, bool) {
	t := a.tokens.Load()
	if t == nil {
		return Principal{}, false
	}
	return t.lookup(strings.TrimSpace(token))
}

// errUnauthenticated is the one answer to a missing, malformed or unknown
// credential: it tells nothing of which tokens or principals exist.
var errUnauthenticated = status.Error(codes.Unauthenticated,
	"authentication required: send metadata `authorization: Bearer TOKEN` with a valid token, or a valid client certificate")

// openMethod says whether a method needs no authentication: the health
// service, so that probes need no credentials, and reflection, which only
// describes the public API (proto/) and which grpcurl needs to call even
// the health service.
func openMethod(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") ||
		strings.HasPrefix(fullMethod, "/grpc.reflection.v1.ServerReflection/") ||
		strings.HasPrefix(fullMethod, "/grpc.reflection.v1alpha.ServerReflection/")
}

var adminPrefix = "/" + brokerv1.AdminService_ServiceDesc.ServiceName + "/"

// authorize authenticates a call and checks its principal may call the
// method; it returns ctx with the principal.
func (a *Auth) authorize(ctx context.Context, fullMethod string) (context.Context, error) {
	if openMethod(fullMethod) {
		return ctx, nil
	}
	p, how, err := a.authenticate(ctx)
	if err != nil {
		var addr string
		if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
			addr = pr.Addr.String()
		}
		// Debug: a client probing tokens must not flood the log.
		a.log.Debug("unauthenticated call", zap.String("method", fullMethod), zap.String("peer", addr), zap.String("why", err.Error()))
		return nil, errUnauthenticated
	}
	if strings.HasPrefix(fullMethod, adminPrefix) && p.Role != RoleAdmin {
		return nil, status.Errorf(codes.PermissionDenied, "AdminService needs the admin role; principal %q (%s) has the %s role", p.Name, how, p.Role)
	}
	return context.WithValue(ctx, principalKey{}, p), nil
}

// authenticate finds the caller's principal and says how (token or
// certificate); the error is for the log only.
func (a *Auth) authenticate(ctx context.Context) (Principal, string, error) {
	if vals := metadata.ValueFromIncomingContext(ctx, "authorization"); len(vals) > 0 {
		if len(vals) > 1 {
			return Principal{}, "", fmt.Errorf("%d authorization values", len(vals))
		}
		scheme, token, ok := strings.Cut(vals[0], " ")
		if !ok || !strings.EqualFold(scheme, "bearer") {
			return Principal{}, "", fmt.Errorf("authorization is not Bearer TOKEN")
		}
		if a.tokens.Load() == nil {
			return Principal{}, "", fmt.Errorf("a token was sent but no tokens are configured")
		}
		p, ok := a.TokenPrincipal(token)
		if !ok {
			return Principal{}, "", fmt.Errorf("unknown token")
		}
		return p, "token", nil
	}
	if !a.clientCerts {
		return Principal{}, "", fmt.Errorf("no token")
	}
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return Principal{}, "", fmt.Errorf("no peer")
	}
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Principal{}, "", fmt.Errorf("no token and no verified client certificate")
	}
	name := CertPrincipal(info.State.VerifiedChains[0][0])
	if err := checkPrincipalName(name); err != nil {
		return Principal{}, "", fmt.Errorf("client certificate: %w", err)
	}
	role := RoleClient
	if a.admins[name] {
		role = RoleAdmin
	}
	return Principal{Name: name, Role: role}, "certificate", nil
}

// CertPrincipal is the principal a client certificate names: its subject
// common name, else its first URI SAN (such as a SPIFFE ID), else its
// first DNS SAN; empty when it has none of these.
func CertPrincipal(c *x509.Certificate) string {
	switch {
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return ""
}

func (a *Auth) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := a.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (a *Auth) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := a.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &principalStream{ServerStream: ss, ctx: ctx})
}

// principalStream is a server stream whose context carries the principal.
type principalStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *principalStream) Context() context.Context { return s.ctx }

// caller is who makes a call: the authenticated principal; without
// authentication configured, the anonymous principal "" with the admin
// role, as every caller was before principals existed. With authentication
// configured and no principal on ctx (the services registered without
// NewGRPCServer's interceptors) it fails closed.
func (s *Server) caller(ctx context.Context) (Principal, error) {
	if p, ok := PrincipalFrom(ctx); ok {
		return p, nil
	}
	if s.cfg.Auth != nil {
		return Principal{}, errUnauthenticated
	}
	return Principal{Role: RoleAdmin}, nil
}

// acquireLimiter is a token bucket per principal for acquires.
type acquireLimiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

// maxIdleBuckets bounds the buckets kept: beyond it, full buckets (the
// same as new ones) are dropped.
const maxIdleBuckets = 10000

func newAcquireLimiter(perSecond float64, burst int, now func() time.Time) *acquireLimiter {
	if perSecond <= 0 {
		return nil
	}
	if burst <= 0 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	if now == nil {
		now = time.Now
	}
	return &acquireLimiter{limit: rate.Limit(perSecond), burst: burst, now: now, buckets: make(map[string]*rate.Limiter)}
}

// allow takes a token from the principal's bucket, or says why not. The
// anonymous principal "" is not limited.
func (l *acquireLimiter) allow(principal string) error {
	if l == nil || principal == "" {
		return nil
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[principal]
	if b == nil {
		if len(l.buckets) >= maxIdleBuckets {
			for p, b := range l.buckets {
				if b.TokensAt(now) >= float64(l.burst) {
					delete(l.buckets, p)
				}
			}
		}
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[principal] = b
	}
	if !b.AllowN(now, 1) {
		return fmt.Errorf("%w: principal %q is over its acquire rate limit of %g per second (burst %d)", lease.ErrLimit, principal, float64(l.limit), l.burst)
	}
	return nil
}
