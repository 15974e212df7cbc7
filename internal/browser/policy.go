package browser

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/playwright-community/playwright-go"
	"go.uber.org/zap"
)

// Navigation policy.
//
// Schemes: pages cannot take a context off the web. Navigate accepts only
// http, https and about:blank, and Chromium itself refuses what a page
// starts on its own: a script or link going to file:, view-source:,
// chrome: or a top-level data: URL ("Not allowed to load local
// resource"), and a redirect to any of them: one to file:, chrome: or
// data: fails with net::ERR_UNSAFE_REDIRECT, which Navigate reports as
// ErrPolicy; one to view-source: is dropped (net::ERR_ABORTED).
// policy_test.go holds Chromium to it.
//
// Addresses: with Config.DenyPrivateNetworks every context gets a proxy of
// its own, an "egress" this process serves on a loopback port, set as the
// context's proxy when it is created (warm ones included). Chromium sends
// every request of the context there: documents, frames, subresources,
// each leg of a redirect, workers and service workers, WebSockets (as
// CONNECT), beacons; Playwright makes it proxy loopback names too
// ("<-loopback>"). The egress resolves the host itself, refuses the
// request when ANY of its addresses is in a denied range (deniedNetworks),
// and otherwise connects to one of the very addresses it checked. A page
// sees a refused CONNECT as net::ERR_TUNNEL_CONNECTION_FAILED and a refused
// plain http request, closed unanswered, as net::ERR_EMPTY_RESPONSE;
// Navigate reports either as ErrPolicy when its context's egress refused
// something during the call.
//
// Why a proxy and not Playwright's request routing, where block.go works:
//   - Routing sees only the first request of a redirect chain: Playwright
//     1.52 continues the later legs itself (crNetworkManager: a request
//     with redirectedFrom gets Fetch.continueRequest, never a route), so a
//     public page redirecting to http://169.254.169.254/ would pass.
//     Covering redirects there means fetching every request with
//     route.Fetch (MaxRedirects 0) and fulfilling it, which buffers each
//     response whole in the driver (event streams never end, downloads sit
//     in memory) and swaps Chromium's network stack (cache, HTTP/2, TLS)
//     for the driver's.
//   - Routing does not see a service worker's own requests (Playwright
//     routes those only under PW_EXPERIMENTAL_SERVICE_WORKER_NETWORK_EVENTS)
//     nor WebSockets: RouteWebSocket is a JavaScript stand-in for the
//     page's WebSocket class, not a network boundary, and playwright-go
//     0.5200 panics (poisoning the driver connection) when its
//     "ensureOpened" fails on a context being closed.
//   - A check in a route handler is followed by Chromium's own DNS lookup:
//     a name can answer a public address to us and a private one to
//     Chromium (DNS rebinding). The egress dials what it checked, so there
//     is no second lookup to rebind.
//
// Not covered, and why (README, "Navigation policy"): UDP. WebRTC is told
// to send no UDP outside the proxy (a launch flag of local browsers;
// tested), QUIC is off, and Chromium refuses WebTransport sessions when a
// proxy is set (its rule, not tested here). A per-lease proxy would bypass
// the egress and is refused; so are remote browsers, which could not reach
// it, and engines other than Chromium, untested.

// Tuning of the egress.
const (
	// resolveTimeout bounds one host lookup.
	resolveTimeout = 5 * time.Second
	// egressDialTimeout bounds connecting to one checked address.
	egressDialTimeout = 30 * time.Second
)

// deniedNetwork is an address range the egress refuses, with what it is.
type deniedNetwork struct {
	prefix netip.Prefix
	what   string
}

// deniedNetworks are refused under Config.DenyPrivateNetworks: the
// addresses of the broker's own host and networks, cloud metadata
// services, and what is not unicast.
var deniedNetworks = []deniedNetwork{
	{netip.MustParsePrefix("0.0.0.0/8"), "this-network"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT"}, // Alibaba's metadata 100.100.100.200 too
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"}, // cloud metadata 169.254.169.254
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol"}, // Oracle's metadata 192.0.0.192
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"}, // and broadcast
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("::/96"), "IPv4-compatible"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64"},
	{netip.MustParsePrefix("100::/64"), "discard"},
	{netip.MustParsePrefix("fc00::/7"), "unique-local"}, // AWS metadata fd00:ec2::254
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// IPv6 ranges that carry an IPv4 address, which is checked in their stead.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96") // the address in the last 4 bytes
	sixToFour = netip.MustParsePrefix("2002::/16")    // the address in bytes 2-5
)

// deniedError is a request the egress refused.
type deniedError struct {
	host string
	addr netip.Addr
	what string
}

func (e *deniedError) Error() string {
	if e.host == e.addr.String() {
		return fmt.Sprintf("%s is in a denied range: %s (deny-private-networks)", e.host, e.what)
	}
	return fmt.Sprintf("%s resolves to %s, in a denied range: %s (deny-private-networks)", e.host, e.addr, e.what)
}

// egressPolicy is the pool's address policy, shared by its contexts'
// egresses.
type egressPolicy struct {
	deny   []deniedNetwork
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	log    *zap.Logger
	errLog *log.Logger    // net/http's complaints, for every context's proxy
	denied *atomic.Uint64 // Stats.PolicyDenied
}

// newEgressPolicy returns cfg's policy, or nil when it denies nothing.
func newEgressPolicy(cfg Config, denied *atomic.Uint64) *egressPolicy {
	if !cfg.DenyPrivateNetworks {
		return nil
	}
	ep := &egressPolicy{deny: cfg.deniedNetworks, lookup: cfg.lookupHost, log: cfg.Logger, errLog: stdLog(cfg.Logger), denied: denied}
	if ep.deny == nil {
		ep.deny = deniedNetworks
	}
	if ep.lookup == nil {
		ep.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	return ep
}

// why says what denied range addr is in; "" when it may be reached.
func (ep *egressPolicy) why(addr netip.Addr) string {
	addr = addr.Unmap().WithZone("")
	for _, n := range ep.deny {
		if n.prefix.Contains(addr) {
			return n.what
		}
	}
	b := addr.As16()
	switch {
	case nat64.Contains(addr):
		return ep.why(netip.AddrFrom4([4]byte(b[12:16])))
	case sixToFour.Contains(addr):
		return ep.why(netip.AddrFrom4([4]byte(b[2:6])))
	}
	return ""
}

// check resolves host and returns the addresses a connection may go to,
// or a *deniedError when any of them is denied.
func (ep *egressPolicy) check(ctx context.Context, host string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		defer cancel()
		if addrs, err = ep.lookup(ctx, host); err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("resolve %s: no address", host)
		}
	}
	for _, a := range addrs {
		if what := ep.why(a); what != "" {
			return nil, &deniedError{host: host, addr: a.Unmap().WithZone(""), what: what}
		}
	}
	return addrs, nil
}

// checkOptions refuses context options that would bypass the policy.
func (ep *egressPolicy) checkOptions(o ContextOptions) error {
	if ep != nil && o.Proxy != nil {
		return fmt.Errorf("new context: %w: a per-lease proxy would bypass deny-private-networks", ErrPolicy)
	}
	return nil
}

// egressProxy is one context's egress: an HTTP proxy on a loopback port
// that connects only where the policy allows. The port tells which context
// a request comes from, so a refusal can be reported to that context's
// Navigate.
type egressProxy struct {
	policy    *egressPolicy
	url       string // "http://127.0.0.1:port", the context's proxy server
	srv       *http.Server
	transport *http.Transport
	forward   *httputil.ReverseProxy
	served    chan struct{} // closed when Serve has returned

	mu         sync.Mutex
	closed     bool
	tunnels    map[net.Conn]struct{} // hijacked CONNECT connections, both ends
	active     sync.WaitGroup        // handlers running; Add only under mu while !closed
	denials    uint64
	lastDenial string
}

// forwardedForKey carries a request's own X-Forwarded-For past
// ReverseProxy, which would append this hop to it.
type forwardedForKey struct{}

// listen starts a context's egress.
func (ep *egressPolicy) listen() (*egressProxy, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("egress proxy: %w", err)
	}
	ex := &egressProxy{
		policy:  ep,
		url:     "http://" + ln.Addr().String(),
		served:  make(chan struct{}),
		tunnels: map[net.Conn]struct{}{},
	}
	ex.transport = &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return ex.dial(ctx, host, port)
		},
		DisableCompression:  true, // the page's Accept-Encoding and bodies pass as they are
		MaxIdleConnsPerHost: 6,
		IdleConnTimeout:     90 * time.Second,
	}
	ex.forward = &httputil.ReverseProxy{
		Director: func(out *http.Request) {
			out.Header["X-Forwarded-For"] = nil // see forwardedFor
		},
		Transport:     forwardedFor{ex.transport},
		FlushInterval: -1, // event streams and long polls flow as they come
		ErrorLog:      ep.errLog,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) {
			// No response at all: the page sees a network error
			// (net::ERR_EMPTY_RESPONSE), as it would without a proxy,
			// rather than a page written by us.
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				_ = conn.Close()
				return
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	ex.srv = &http.Server{
		Handler:           ex,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          ep.errLog,
	}
	go func() {
		defer close(ex.served)
		_ = ex.srv.Serve(ln)
	}()
	return ex, nil
}

// stdLog takes net/http's complaints (a client gone mid-body and such) at
// debug level.
func stdLog(zl *zap.Logger) *log.Logger {
	l, err := zap.NewStdLogAt(zl.Named("egress"), zap.DebugLevel)
	if err != nil { // only for levels above Fatal
		return log.New(io.Discard, "", 0)
	}
	return l
}

// forwardedFor sends a request's X-Forwarded-For as the page set it (or
// not at all).
type forwardedFor struct{ rt http.RoundTripper }

func (f forwardedFor) RoundTrip(r *http.Request) (*http.Response, error) {
	if v, _ := r.Context().Value(forwardedForKey{}).([]string); len(v) > 0 {
		r.Header["X-Forwarded-For"] = v
	} else {
		delete(r.Header, "X-Forwarded-For")
	}
	return f.rt.RoundTrip(r)
}

// ServeHTTP serves one proxy request: CONNECT for https and WebSockets,
// an absolute http URL for plain http.
func (ex *egressProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ex.mu.Lock()
	if ex.closed {
		ex.mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	ex.active.Add(1)
	ex.mu.Unlock()
	defer ex.active.Done()
	switch {
	case r.Method == http.MethodConnect:
		ex.tunnel(w, r)
	case r.URL.IsAbs() && r.URL.Scheme == "http":
		ctx := context.WithValue(r.Context(), forwardedForKey{}, r.Header.Values("X-Forwarded-For"))
		ex.forward.ServeHTTP(w, r.WithContext(ctx))
	default:
		http.Error(w, "egress: not a proxy request", http.StatusBadRequest)
	}
}

// dial connects to host:port if the policy allows it, trying the checked
// addresses in turn.
func (ex *egressProxy) dial(ctx context.Context, host, port string) (net.Conn, error) {
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return nil, fmt.Errorf("egress: bad port %q", port)
	}
	addrs, err := ex.policy.check(ctx, host)
	if de := (*deniedError)(nil); errors.As(err, &de) {
		ex.refused(de)
	}
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: egressDialTimeout}
	var errs []error
	for _, a := range addrs {
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(a.String(), port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// refused records a refusal for the context's Navigate and the stats.
func (ex *egressProxy) refused(de *deniedError) {
	ex.policy.denied.Add(1)
	ex.mu.Lock()
	ex.denials++
	ex.lastDenial = de.Error()
	ex.mu.Unlock()
	ex.policy.log.Debug("egress refused a request", zap.String("host", de.host),
		zap.String("addr", de.addr.String()), zap.String("range", de.what))
}

// denialMark returns the count of refusals so far, for deniedSince.
func (ex *egressProxy) denialMark() uint64 {
	if ex == nil {
		return 0
	}
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.denials
}

// deniedSince returns the last refusal after mark, or "".
func (ex *egressProxy) deniedSince(mark uint64) string {
	if ex == nil {
		return ""
	}
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.denials == mark {
		return ""
	}
	return ex.lastDenial
}

// tunnel serves a CONNECT: a refusal is a 403 (the page sees
// net::ERR_TUNNEL_CONNECTION_FAILED), else bytes flow both ways until
// either side closes.
func (ex *egressProxy) tunnel(w http.ResponseWriter, r *http.Request) {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		http.Error(w, "egress: bad CONNECT target", http.StatusBadRequest)
		return
	}
	upstream, err := ex.dial(r.Context(), host, port)
	if err != nil {
		code := http.StatusBadGateway
		if de := (*deniedError)(nil); errors.As(err, &de) {
			code = http.StatusForbidden
		}
		http.Error(w, "egress: "+err.Error(), code)
		return
	}
	client, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = upstream.Close()
		return
	}
	if !ex.track(client, upstream) {
		return
	}
	defer ex.untrack(client, upstream)
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	splice(client, rw.Reader, upstream)
}

// track registers a tunnel's connections, so that close can end them;
// false (both closed) when the egress is closing.
func (ex *egressProxy) track(conns ...net.Conn) bool {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.closed {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	for _, c := range conns {
		ex.tunnels[c] = struct{}{}
	}
	return true
}

func (ex *egressProxy) untrack(conns ...net.Conn) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
		delete(ex.tunnels, c)
	}
}

// splice copies client (read through its buffered reader, which may hold
// bytes sent right after the CONNECT) to upstream and back, passing on
// half-closes, until both directions end.
func splice(client net.Conn, buffered *bufio.Reader, upstream net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(client, upstream)
		closeWrite(client)
	}()
	_, _ = io.Copy(upstream, buffered)
	closeWrite(upstream)
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// close stops the egress and ends its connections, waiting up to limit for
// its handlers to return.
func (ex *egressProxy) close(limit time.Duration) {
	if ex == nil {
		return
	}
	ex.mu.Lock()
	if ex.closed {
		ex.mu.Unlock()
		return
	}
	ex.closed = true
	for c := range ex.tunnels {
		_ = c.Close()
	}
	ex.mu.Unlock()
	_ = ex.srv.Close() // the listener and every connection not hijacked
	done := make(chan struct{})
	go func() {
		ex.active.Wait()
		<-ex.served
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(limit):
		ex.policy.log.Warn("egress proxy handlers still running after close", zap.String("proxy", ex.url))
	}
	ex.transport.CloseIdleConnections()
}

// proxyOption is the context option that sends its traffic to ex.
func (ex *egressProxy) proxyOption() *playwright.Proxy {
	return &playwright.Proxy{Server: ex.url}
}
