package server

import (
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/lease"
)

// Limits on what a client may send; beyond them: INVALID_ARGUMENT. The
// README's "Limits" table lists them all, with those of page_service.go,
// the lease manager's and gRPC's.
const (
	maxLabels        = 32
	maxLabelKey      = 63
	maxLabelValue    = 256
	maxViewportSide  = 10000
	maxScaleFactor   = 10
	maxHeaders       = 64
	maxHeaderBytes   = 8 << 10
	maxSelectorBytes = 4 << 10
	maxURLBytes      = 8 << 10
	// maxDevicePixels bounds a viewport side times the device scale
	// factor: Chromium's largest texture, beyond which pages and
	// screenshots fail or cost gigabytes.
	maxDevicePixels = 16384
	// maxUserAgentBytes bounds user_agent; maxLocaleBytes locale and
	// timezone_id; maxProxyField the proxy's username and password.
	maxUserAgentBytes = 1 << 10
	maxLocaleBytes    = 64
	maxProxyField     = 1 << 10
	// maxCookieBytes bounds a cookie's name and value together, as
	// browsers do; maxCookieAttr its domain and path, each.
	maxCookieBytes = 4 << 10
	maxCookieAttr  = 1 << 10
	// maxCookieURLs bounds the URLs of one GetCookies.
	maxCookieURLs = 100
	// maxResponseBytes bounds what a page command returns (an Evaluate
	// result, Content's HTML, Text's texts, a screenshot): beyond it the
	// command fails with RESOURCE_EXHAUSTED instead of sending a message
	// that clients refuse at their default 4 MiB receive limit.
	maxResponseBytes = 4_000_000
)

// duration converts an optional API duration: unset is zero, negative or
// malformed is an error naming the field.
func duration(name string, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalid(fmt.Sprintf("%s: %v", name, err))
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, invalid(fmt.Sprintf("%s must not be negative, got %v", name, v))
	}
	return v, nil
}

func acquireRequest(a *brokerv1.Acquire) (lease.AcquireRequest, error) {
	var req lease.AcquireRequest
	var err error
	if req.TTL, err = duration("ttl", a.GetTtl()); err != nil {
		return req, err
	}
	if req.Wait, err = duration("wait_timeout", a.GetWaitTimeout()); err != nil {
		return req, err
	}
	if req.MaxLifetime, err = duration("max_lifetime", a.GetMaxLifetime()); err != nil {
		return req, err
	}
	if len(a.GetLabels()) > maxLabels {
		return req, invalid(fmt.Sprintf("at most %d labels, got %d", maxLabels, len(a.GetLabels())))
	}
	for k, v := range a.GetLabels() {
		if k == "" || len(k) > maxLabelKey || len(v) > maxLabelValue {
			return req, invalid(fmt.Sprintf("label keys must be 1-%d bytes and values at most %d bytes (key %.70q)", maxLabelKey, maxLabelValue, k))
		}
	}
	req.Labels = a.GetLabels()
	opts, err := contextOptions(a.GetContext())
	if err != nil {
		return req, err
	}
	req.Spec = opts
	if req.SessionKey = a.GetSessionKey(); req.SessionKey != "" {
		req.Spec = sessionSpec{Options: opts, Key: req.SessionKey}
	}
	return req, nil
}

func contextOptions(c *brokerv1.ContextOptions) (browser.ContextOptions, error) {
	var o browser.ContextOptions
	if c == nil {
		return o, nil
	}
	if v := c.GetViewport(); v != nil {
		if v.Width < 1 || v.Height < 1 || v.Width > maxViewportSide || v.Height > maxViewportSide {
			return o, invalid(fmt.Sprintf("viewport sides must be 1-%d, got %dx%d", maxViewportSide, v.Width, v.Height))
		}
		o.Viewport = &browser.Viewport{Width: int(v.Width), Height: int(v.Height)}
	}
	f := c.GetDeviceScaleFactor()
	if !(f >= 0 && f <= maxScaleFactor) { // NaN too
		return o, invalid(fmt.Sprintf("device_scale_factor must be 0-%d, got %v", maxScaleFactor, f))
	}
	if v := c.GetViewport(); v != nil && float64(max(v.Width, v.Height))*max(f, 1) > maxDevicePixels {
		return o, invalid(fmt.Sprintf("viewport %dx%d at device_scale_factor %v is over %d device pixels a side",
			v.Width, v.Height, f, maxDevicePixels))
	}
	if len(c.GetUserAgent()) > maxUserAgentBytes {
		return o, invalid(fmt.Sprintf("user_agent longer than %d bytes", maxUserAgentBytes))
	}
	if len(c.GetLocale()) > maxLocaleBytes || len(c.GetTimezoneId()) > maxLocaleBytes {
		return o, invalid(fmt.Sprintf("locale and timezone_id must be at most %d bytes", maxLocaleBytes))
	}
	if len(c.GetExtraHttpHeaders()) > maxHeaders {
		return o, invalid(fmt.Sprintf("at most %d extra_http_headers", maxHeaders))
	}
	size := 0
	for k, v := range c.GetExtraHttpHeaders() {
		if !validHeaderName(k) {
			return o, invalid(fmt.Sprintf("extra_http_headers: %.70q is not a header name", k))
		}
		if !validHeaderValue(v) {
			return o, invalid(fmt.Sprintf("extra_http_headers: the value of %s holds a control character", k))
		}
		size += len(k) + len(v)
	}
	if size > maxHeaderBytes {
		return o, invalid(fmt.Sprintf("extra_http_headers: at most %d bytes in all", maxHeaderBytes))
	}
	if p := c.GetProxy(); p != nil {
		u, err := url.Parse(p.GetServer())
		if p.GetServer() == "" || len(p.GetServer()) > maxURLBytes || err != nil || u.Host == "" {
			return o, invalid(fmt.Sprintf("proxy.server must be a URL of at most %d bytes such as http://host:3128 or socks5://host:1080", maxURLBytes))
		}
		if len(p.GetUsername()) > maxProxyField || len(p.GetPassword()) > maxProxyField || len(p.GetBypass()) > maxURLBytes {
			return o, invalid(fmt.Sprintf("proxy: username and password must be at most %d bytes, bypass at most %d", maxProxyField, maxURLBytes))
		}
		o.Proxy = &browser.Proxy{Server: p.GetServer(), Username: p.GetUsername(), Password: p.GetPassword(), Bypass: p.GetBypass()}
	}
	o.UserAgent = c.GetUserAgent()
	o.Locale = c.GetLocale()
	o.TimezoneID = c.GetTimezoneId()
	o.ExtraHTTPHeaders = c.GetExtraHttpHeaders()
	o.IsMobile = c.GetIsMobile()
	o.HasTouch = c.GetHasTouch()
	o.DeviceScaleFactor = c.GetDeviceScaleFactor()
	if c.JavaScriptEnabled != nil {
		v := c.GetJavaScriptEnabled()
		o.JavaScriptEnabled = &v
	}
	o.IgnoreHTTPSErrors = c.GetIgnoreHttpsErrors()
	if b := c.GetBlock(); b != nil {
		o.Block = browser.BlockOptions{ResourceTypes: b.GetResourceTypes(), URLPatterns: b.GetUrlPatterns()}
		if err := o.Block.Check(); err != nil {
			return o, invalid(err.Error())
		}
	}
	return o, nil
}

// reason maps a lease reason to the API's: the two enums share numbers.
func reason(r lease.Reason) brokerv1.ReclaimReason { return brokerv1.ReclaimReason(r) }

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func leaseInfo(i lease.Info) *brokerv1.LeaseInfo {
	out := &brokerv1.LeaseInfo{
		LeaseId:        i.ID,
		Labels:         i.Labels,
		GrantedAt:      timestamp(i.GrantedAt),
		ExpiresAt:      timestamp(i.ExpiresAt),
		MaxExpiresAt:   timestamp(i.MaxExpiresAt),
		LastActivityAt: timestamp(i.LastActivity),
		Commands:       i.Commands,
		Ttl:            durationpb.New(i.TTL),
		State:          brokerv1.LeaseState_LEASE_STATE_ACTIVE,
		SessionKey:     i.SessionKey,
		Principal:      i.Principal,
		Generation:     i.Generation,
		Age:            durationpb.New(time.Since(i.GrantedAt)),
		Idle:           durationpb.New(time.Since(i.LastActivity)),
	}
	if b, ok := i.Session.(interface{ Browser() string }); ok {
		out.Browser = b.Browser()
	}
	if i.State == lease.StateClosing {
		out.State = brokerv1.LeaseState_LEASE_STATE_CLOSING
		out.Reason = reason(i.Reason)
	}
	return out
}

// checkURL accepts absolute http and https URLs only.
func checkURL(raw string) error {
	if len(raw) > maxURLBytes {
		return invalid(fmt.Sprintf("url longer than %d bytes", maxURLBytes))
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return invalid(fmt.Sprintf("url must be an absolute http or https URL, got %.200q", raw))
	}
	return nil
}

func checkSelector(s string) error {
	if strings.TrimSpace(s) == "" {
		return invalid("selector must not be empty")
	}
	if len(s) > maxSelectorBytes {
		return invalid(fmt.Sprintf("selector longer than %d bytes", maxSelectorBytes))
	}
	return nil
}

// checkReferer accepts no referer, or one checkURL accepts.
func checkReferer(raw string) error {
	if raw == "" {
		return nil
	}
	if err := checkURL(raw); err != nil {
		return invalid("referer: " + status.Convert(err).Message())
	}
	return nil
}

// checkCookie checks what the browser would refuse, or silently drop, in a
// cookie to set; SetCookies checks the rest.
func checkCookie(i int, c *brokerv1.Cookie) error {
	if len(c.GetName())+len(c.GetValue()) > maxCookieBytes {
		return invalid(fmt.Sprintf("cookie %d: name and value must be at most %d bytes together", i, maxCookieBytes))
	}
	if len(c.GetDomain()) > maxCookieAttr || len(c.GetPath()) > maxCookieAttr {
		return invalid(fmt.Sprintf("cookie %d: domain and path must be at most %d bytes each", i, maxCookieAttr))
	}
	if c.GetUrl() != "" && c.GetPath() != "" {
		return invalid(fmt.Sprintf("cookie %d: set either url, or domain and path", i))
	}
	if p := c.GetPath(); p != "" && !strings.HasPrefix(p, "/") {
		return invalid(fmt.Sprintf("cookie %d: path must start with /", i))
	}
	if e := c.GetExpires(); math.IsNaN(e) || math.IsInf(e, 0) {
		return invalid(fmt.Sprintf("cookie %d: expires must be a number of seconds", i))
	}
	return nil
}

// checkResponse refuses a response over maxResponseBytes. what names its
// content in the message.
func checkResponse(what string, m proto.Message) error {
	if n := proto.Size(m); n > maxResponseBytes {
		return status.Error(codes.ResourceExhausted, fmt.Sprintf("response too large (%s): %d bytes, over the limit of %d bytes", what, n, maxResponseBytes))
	}
	return nil
}

// validHeaderName reports an HTTP header name: an RFC 9110 token.
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= 0x80 || c <= ' ' || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 || c == 0x7f {
			return false
		}
	}
	return true
}

// validHeaderValue reports a header value with no control character but
// tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
