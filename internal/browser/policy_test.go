package browser

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestPolicyDeniedAddresses(t *testing.T) {
	ep := newEgressPolicy(Config{DenyPrivateNetworks: true, Logger: zap.NewNop()}, new(atomic.Uint64))
	denied := []string{
		"0.0.0.0", "0.1.2.3", "10.1.2.3", "100.64.0.1", "100.100.100.200", "127.0.0.1", "127.255.0.9",
		"169.254.169.254", "169.254.1.1", "172.16.0.1", "172.31.255.255", "192.0.0.192", "192.168.1.1",
		"198.18.0.1", "224.0.0.1", "255.255.255.255",
		"::", "::1", "::127.0.0.1", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "64:ff9b::a00:1", "64:ff9b:1::1",
		"2002:a9fe:a9fe::1", "fc00::1", "fd00:ec2::254", "fe80::1", "fe80::1%eth0", "ff02::1", "100::1",
	}
	allowed := []string{
		"1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.1", "172.32.0.1", "192.0.2.1", "203.0.113.7",
		"2001:4860:4860::8888", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1",
	}
	for _, s := range denied {
		if why := ep.why(netip.MustParseAddr(s)); why == "" {
			t.Errorf("why(%s) = \"\", want denied", s)
		}
	}
	for _, s := range allowed {
		if why := ep.why(netip.MustParseAddr(s)); why != "" {
			t.Errorf("why(%s) = %q, want allowed", s, why)
		}
	}
}

func TestPolicyCheckDeniesIfAnyAddressIs(t *testing.T) {
	names := map[string][]netip.Addr{
		"public.test": {netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8::7")},
		"mixed.test":  {netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("10.0.0.7")},
		"mapped.test": {netip.MustParseAddr("::ffff:169.254.169.254")},
	}
	ep := newEgressPolicy(Config{DenyPrivateNetworks: true, Logger: zap.NewNop(), lookupHost: func(_ context.Context, host string) ([]netip.Addr, error) {
		if a, ok := names[host]; ok {
			return a, nil
		}
		return nil, errors.New("no such host")
	}}, new(atomic.Uint64))
	for _, tc := range []struct {
		host   string
		denied bool
	}{
		{"public.test", false}, {"mixed.test", true}, {"mapped.test", true}, {"203.0.113.9", false},
		{"10.9.8.7", true}, {"fd00:ec2::254", true},
	} {
		_, err := ep.check(context.Background(), tc.host)
		var de *deniedError
		if got := errors.As(err, &de); got != tc.denied {
			t.Errorf("check(%s) = %v, want denied %v", tc.host, err, tc.denied)
		}
	}
	if _, err := ep.check(context.Background(), "unknown.test"); err == nil || errors.As(err, new(*deniedError)) {
		t.Errorf("check(unknown.test) = %v, want a resolve error", err)
	}
}

// policySites are two web servers on loopback: "allowed" on 127.0.0.1 and
// "private" on 127.0.0.2, which the test policy denies. Both count the TCP
// connections they accept, so "never reached" means no connection at all.
type policySites struct {
	allowed, private       *countingServer
	allowedTLS, privateTLS *countingServer
}

type countingServer struct {
	*httptest.Server
	accepted atomic.Int64
	mu       sync.Mutex
	paths    []string
}

func (s *countingServer) port() string {
	_, port, _ := net.SplitHostPort(s.Listener.Addr().String())
	return port
}

func (s *countingServer) served() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.paths)
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func newCountingServer(tb testing.TB, addr string, tls bool, h http.Handler) *countingServer {
	tb.Helper()
	ln, err := net.Listen("tcp4", addr+":0")
	if err != nil {
		tb.Skipf("cannot listen on %s: %v", addr, err)
	}
	s := &countingServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.paths = append(s.paths, r.URL.Path)
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	s.Listener = countingListener{ln, &s.accepted}
	if tls {
		s.StartTLS()
	} else {
		s.Start()
	}
	tb.Cleanup(s.Close)
	return s
}

// policySite serves the pages of the policy tests.
func policySite() http.Handler {
	mux := http.NewServeMux()
	page := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			fmt.Fprint(w, strings.ReplaceAll(body, "{q}", r.URL.Query().Get("q")))
		}
	}
	mux.HandleFunc("/", page(`<!doctype html><title>policy</title><h1>allowed</h1>`))
	// Subresources straight to the denied server, and through a redirect.
	mux.HandleFunc("/images", page(`<!doctype html><title>images</title>
<img id=ok src="/pixel.png"><img id=direct src="http://private.test:{q}/direct.png">
<img id=literal src="http://127.0.0.2:{q}/literal.png"><img id=redirected src="/redirect?to=http://private.test:{q}/redirected.png">`))
	pixel := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		fmt.Fprint(w, pixelPNG)
	}
	for _, path := range []string{"/pixel.png", "/direct.png", "/literal.png", "/redirected.png"} {
		mux.HandleFunc(path, pixel) // the denied ones would load, if reached
	}
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	})
	mux.HandleFunc("/sw.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		// The worker fetches what the page asks, and answers how it went.
		fmt.Fprint(w, `self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', e => e.waitUntil(self.clients.claim()));
self.addEventListener('message', e => e.waitUntil(
  fetch(e.data, {mode: 'no-cors', cache: 'no-store'}).then(() => 'loaded', err => 'failed: ' + err).then(r => e.source.postMessage(r))));`)
	})
	mux.HandleFunc("/ws", acceptWebSocket)
	return mux
}

// acceptWebSocket completes a WebSocket handshake and then holds the
// connection until the client goes: enough for the page's "open".
func acceptWebSocket(w http.ResponseWriter, r *http.Request) {
	sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(sum[:]))
	rw.Flush()
	_, _ = io.Copy(io.Discard, rw)
}

// newPolicyPool starts a pool denying 127.0.0.2 (the "private" server)
// with one warm context, whose names resolve (for the policy) as
// allowed.test to 127.0.0.1, private.test to 127.0.0.2 and mixed.test to
// both.
func newPolicyPool(t *testing.T) (*Pool, *policySites) {
	t.Helper()
	requireBrowser(t)
	s := &policySites{
		allowed:    newCountingServer(t, "127.0.0.1", false, policySite()),
		private:    newCountingServer(t, "127.0.0.2", false, policySite()),
		allowedTLS: newCountingServer(t, "127.0.0.1", true, policySite()),
		privateTLS: newCountingServer(t, "127.0.0.2", true, policySite()),
	}
	one, two := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	names := map[string][]netip.Addr{"allowed.test": {one}, "private.test": {two}, "mixed.test": {one, two}}
	p := newPool(t, func(cfg *Config) {
		// Service workers need a secure context, which allowed.test is not.
		cfg.Args = []string{"--unsafely-treat-insecure-origin-as-secure=http://allowed.test:" + s.allowed.port()}
		cfg.DenyPrivateNetworks = true
		cfg.Warm = 1
		cfg.deniedNetworks = []deniedNetwork{{netip.MustParsePrefix("127.0.0.2/32"), "test-private"}}
		cfg.lookupHost = func(_ context.Context, host string) ([]netip.Addr, error) {
			if a, ok := names[host]; ok {
				return a, nil
			}
			return nil, fmt.Errorf("lookup %s: no such host", host)
		}
	})
	return p, s
}

// checkNeverReached fails if the private servers accepted any connection.
func (s *policySites) checkNeverReached(t *testing.T) {
	t.Helper()
	for _, srv := range []*countingServer{s.private, s.privateTLS} {
		if n := srv.accepted.Load(); n != 0 {
			t.Errorf("the denied server %s accepted %d connections (paths %v), want none", srv.URL, n, srv.served())
		}
	}
}

// navigateRefused navigates c to url, which the policy must refuse, then
// waits for the error page that Chromium commits after the failure: a
// navigation started before it would be interrupted by it.
func navigateRefused(t *testing.T, c *Context, url string) {
	t.Helper()
	_, err := c.Navigate(timeout(t, 15*time.Second), url, NavigateOptions{})
	if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), "deny-private-networks") {
		t.Errorf("Navigate(%s) = %v, want ErrPolicy naming deny-private-networks", url, err)
		return
	}
	waitErrorPage(t, c)
}

// waitErrorPage waits until c's page shows Chromium's error page.
func waitErrorPage(t *testing.T, c *Context) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := c.Evaluate(timeout(t, 5*time.Second), "location.href", "")
		if err == nil && strings.HasPrefix(got, `"chrome-error:`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("page at %s, %v after 5s, want Chromium's error page", got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPolicyDeniesPrivateNetworks(t *testing.T) {
	p, s := newPolicyPool(t)
	waitWarm(t, p, 1)
	c := openContext(t, p, ContextOptions{})
	if p.Stats().WarmHits != 1 {
		t.Fatalf("Stats.WarmHits = %d, want 1: the test must cover a warm context", p.Stats().WarmHits)
	}
	allowed := "http://allowed.test:" + s.allowed.port()
	private := "http://private.test:" + s.private.port()
	deniedBefore := p.Stats().PolicyDenied

	t.Run("navigate", func(t *testing.T) {
		navigate(t, c, allowed+"/")
		for _, url := range []string{
			private + "/",
			"http://127.0.0.2:" + s.private.port() + "/",
			"http://mixed.test:" + s.allowed.port() + "/mixed", // one address allowed, one not
			allowed + "/redirect?to=" + private + "/nav-redirect",
			allowed + "/redirect?to=" + allowed + "/redirect?to=" + private + "/nav-redirect2",
		} {
			navigateRefused(t, c, url)
		}
		if got := s.allowed.served(); slices.Contains(got, "/mixed") {
			t.Errorf("allowed server served %v: mixed.test was not refused", got)
		}
	})

	t.Run("subresources and redirects", func(t *testing.T) {
		navigate(t, c, allowed+"/images?q="+s.private.port())
		got := evaluate(t, c, `Promise.all([...document.images].map(i => i.complete ? 0 :
			new Promise(r => { i.onload = i.onerror = r }))).then(() =>
			[...document.images].map(i => i.id + '=' + i.naturalWidth).join(' '))`)
		if want := `"ok=1 direct=0 literal=0 redirected=0"`; got != want {
			t.Errorf("images = %s, want %s", got, want)
		}
		if !slices.Contains(s.allowed.served(), "/redirect") {
			t.Errorf("allowed server served %v, want the redirect's first leg", s.allowed.served())
		}
	})

	t.Run("fetch", func(t *testing.T) {
		navigate(t, c, allowed+"/")
		for _, url := range []string{private + "/fetch", "http://mixed.test:" + s.allowed.port() + "/mixed-fetch"} {
			got, err := c.Evaluate(timeout(t, 10*time.Second), `u => fetch(u, {mode: 'no-cors'}).then(() => 'loaded', () => 'failed')`, `"`+url+`"`)
			if err != nil || got != `"failed"` {
				t.Errorf("fetch(%s) = %s, %v; want failed", url, got, err)
			}
		}
	})

	t.Run("websocket", func(t *testing.T) {
		navigate(t, c, allowed+"/")
		const open = `u => new Promise(r => { const ws = new WebSocket(u); ws.onopen = () => { ws.close(); r('open') }; ws.onerror = () => r('error') })`
		for url, want := range map[string]string{
			"ws://allowed.test:" + s.allowed.port() + "/ws": `"open"`,
			"ws://private.test:" + s.private.port() + "/ws": `"error"`,
		} {
			got, err := c.Evaluate(timeout(t, 10*time.Second), open, `"`+url+`"`)
			if err != nil || got != want {
				t.Errorf("WebSocket(%s) = %s, %v; want %s", url, got, err, want)
			}
		}
	})

	t.Run("service worker", func(t *testing.T) {
		// A service worker's own requests are beyond Playwright's routing;
		// the egress sees them.
		navigate(t, c, allowed+"/")
		const ask = `u => navigator.serviceWorker.register('/sw.js').then(() => navigator.serviceWorker.ready).then(reg =>
			new Promise(r => { navigator.serviceWorker.onmessage = e => r(e.data); reg.active.postMessage(u) }))`
		got, err := c.Evaluate(timeout(t, 10*time.Second), ask, `"`+allowed+`/from-worker"`)
		if err != nil || got != `"loaded"` {
			t.Fatalf("service worker fetch of the allowed server = %s, %v; want loaded", got, err)
		}
		got, err = c.Evaluate(timeout(t, 10*time.Second), ask, `"`+private+`/from-worker"`)
		if err != nil || !strings.HasPrefix(got, `"failed`) {
			t.Errorf("service worker fetch of the denied server = %s, %v; want failed", got, err)
		}
	})

	t.Run("webrtc", func(t *testing.T) {
		// UDP cannot go through the egress: WebRTC must send none. The
		// shared pool, without the policy, shows the probe can tell.
		if n := stunProbes(t, sharedPool(t), allowed+"/", site.URL("/")); n == 0 {
			t.Fatalf("without the policy, no STUN packet reached the probe: the test cannot tell")
		}
		if n := stunProbes(t, p, allowed+"/", ""); n != 0 {
			t.Errorf("with the policy, %d STUN packets reached a denied address, want none", n)
		}
	})

	t.Run("https", func(t *testing.T) {
		// CONNECT: a context that accepts the test servers' certificates.
		tc := openContext(t, p, ContextOptions{IgnoreHTTPSErrors: true})
		navigate(t, tc, "https://allowed.test:"+s.allowedTLS.port()+"/")
		for _, url := range []string{
			"https://private.test:" + s.privateTLS.port() + "/",
			"https://allowed.test:" + s.allowedTLS.port() + "/redirect?to=https://private.test:" + s.privateTLS.port() + "/tls-redirect",
		} {
			navigateRefused(t, tc, url)
		}
	})

	t.Run("per-lease proxy", func(t *testing.T) {
		_, err := p.NewContext(timeout(t, 10*time.Second), ContextOptions{Proxy: &Proxy{Server: "http://203.0.113.7:3128"}})
		if !errors.Is(err, ErrPolicy) {
			t.Errorf("NewContext(proxy) = %v, want ErrPolicy: it would bypass the egress", err)
		}
	})

	s.checkNeverReached(t)
	if p.Stats().PolicyDenied == deniedBefore {
		t.Errorf("Stats.PolicyDenied did not move")
	}
}

func TestPolicyNeedsLocalChromium(t *testing.T) {
	for _, cfg := range []Config{
		{DenyPrivateNetworks: true, Connect: []string{"ws://127.0.0.1:1/x"}},
		{DenyPrivateNetworks: true, BrowserType: Firefox},
	} {
		if err := checkSources(cfg); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("checkSources(%+v) = %v, want ErrInvalidArgument", cfg, err)
		}
	}
}

// Pages cannot leave the web: Chromium refuses a page's own navigations
// to file:, view-source:, chrome: and top-level data: URLs, and redirects
// to them; the broker relies on it (policy.go). Checked on a pool without
// DenyPrivateNetworks: the scheme rules hold regardless.
func TestPolicyNonWebSchemes(t *testing.T) {
	p := sharedPool(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/go", func(w http.ResponseWriter, r *http.Request) {
		// A script navigation, and links a Click follows.
		fmt.Fprintf(w, `<!doctype html><title>start</title>
<a id=file href="file:///etc/passwd">file</a> <a id=source href="view-source:file:///etc/passwd">source</a>
<a id=chrome href="chrome://version">chrome</a> <a id=data href="data:text/html,<title>data</title>">data</a>
<a id=web href="/landed">web</a>
<script>const to = new URLSearchParams(location.search).get('to'); if (to) setTimeout(() => { location.href = to }, 50)</script>`)
	})
	mux.HandleFunc("/landed", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `<title>landed</title>`) })
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", r.URL.Query().Get("to"))
		w.WriteHeader(http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c := openContext(t, p, ContextOptions{})

	title := func() string { return evaluate(t, c, "document.title") }
	// stays checks, for a while, that the page is still the start page and
	// never showed /etc/passwd.
	stays := func(what string) {
		t.Helper()
		for range 5 {
			time.Sleep(100 * time.Millisecond)
			html, err := c.Content(timeout(t, 5*time.Second))
			if err != nil {
				t.Fatalf("%s: Content() = %v", what, err)
			}
			if strings.Contains(html, "root:x:0:0") {
				t.Fatalf("%s: the page shows /etc/passwd", what)
			}
		}
		if got, url := title(), evaluate(t, c, "location.href"); got != `"start"` || !strings.HasPrefix(url, `"http:`) {
			t.Errorf("%s: page is %s at %s, want the start page", what, got, url)
		}
	}

	waitTitle := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			// The page may be between documents: an error is no answer.
			got, err := c.Evaluate(timeout(t, 5*time.Second), "document.title", "")
			if err == nil && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("title = %s, %v after 10s, want %s", got, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Controls: the same mechanisms do navigate to a web page.
	navigate(t, c, srv.URL+"/go?to=/landed")
	waitTitle(`"landed"`)
	navigate(t, c, srv.URL+"/go")
	if err := c.Click(timeout(t, 10*time.Second), "#web"); err != nil {
		t.Fatalf("Click(#web) = %v", err)
	}
	waitTitle(`"landed"`)

	for _, to := range []string{"file:///etc/passwd", "view-source:file:///etc/passwd", "chrome://version", "data:text/html,<title>data</title>"} {
		navigate(t, c, srv.URL+"/go?to="+to)
		stays("script to " + to)
	}
	for _, id := range []string{"file", "source", "chrome", "data"} {
		navigate(t, c, srv.URL+"/go")
		if err := c.Click(timeout(t, 10*time.Second), "#"+id); err != nil {
			t.Fatalf("Click(#%s) = %v", id, err)
		}
		stays("click on the " + id + " link")
	}
	// A redirect to file:, chrome: or data: fails as unsafe (ErrPolicy);
	// one to view-source: is dropped (net::ERR_ABORTED, the page stays).
	for to, want := range map[string]error{
		"file:///etc/passwd":                 ErrPolicy,
		"chrome://version":                   ErrPolicy,
		"data:text/html,<title>data</title>": ErrPolicy,
		"view-source:file:///etc/passwd":     ErrNavigation,
	} {
		navigate(t, c, srv.URL+"/go")
		_, err := c.Navigate(timeout(t, 10*time.Second), srv.URL+"/redirect?to="+to, NavigateOptions{})
		if !errors.Is(err, want) {
			t.Errorf("Navigate(a redirect to %s) = %v, want %v", to, err, want)
		}
		if want == ErrPolicy {
			waitErrorPage(t, c)
		}
		if html, _ := c.Content(timeout(t, 5*time.Second)); strings.Contains(html, "root:x:0:0") {
			t.Fatalf("after a redirect to %s the page shows /etc/passwd", to)
		}
	}
	for _, url := range []string{"file:///etc/passwd", "view-source:http://example.com/", "chrome://version", "data:text/html,x", "javascript:1"} {
		if _, err := c.Navigate(timeout(t, 10*time.Second), url, NavigateOptions{}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Navigate(%s) = %v, want ErrInvalidArgument", url, err)
		}
	}
}

// stunProbes opens a context on p at page (pageWithout on a pool without
// the egress, whose names it cannot resolve), has it gather ICE candidates
// with a STUN server on 127.0.0.2, and counts the packets that server gets.
func stunProbes(t *testing.T, p *Pool, page, pageWithout string) int {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	defer pc.Close()
	var packets atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			packets.Add(1)
		}
	}()
	c := openContext(t, p, ContextOptions{})
	if p.egress == nil {
		page = pageWithout
	}
	navigate(t, c, page)
	// Resolves when gathering completes (or after 3s), with the candidates.
	const gather = `u => new Promise(r => {
		const pc = new RTCPeerConnection({iceServers: [{urls: u}]}), found = [];
		pc.onicecandidate = e => e.candidate ? found.push(e.candidate.candidate) : r(found);
		pc.createDataChannel('probe');
		pc.createOffer().then(o => pc.setLocalDescription(o));
		setTimeout(() => r(found), 3000);
	})`
	if _, err := c.Evaluate(timeout(t, 10*time.Second), gather, `"stun:`+pc.LocalAddr().String()+`"`); err != nil {
		t.Fatalf("gathering ICE candidates: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // stragglers
	_ = pc.Close()
	<-done
	return int(packets.Load())
}
