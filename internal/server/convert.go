package server

import (
	"fmt"
	"net/url"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/lease"
)

// Limits on what a client may send; beyond them: INVALID_ARGUMENT.
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
	if f := c.GetDeviceScaleFactor(); f < 0 || f > maxScaleFactor {
		return o, invalid(fmt.Sprintf("device_scale_factor must be 0-%d, got %v", maxScaleFactor, f))
	}
	if len(c.GetExtraHttpHeaders()) > maxHeaders {
		return o, invalid(fmt.Sprintf("at most %d extra_http_headers", maxHeaders))
	}
	size := 0
	for k, v := range c.GetExtraHttpHeaders() {
		if k == "" {
			return o, invalid("extra_http_headers: empty header name")
		}
		size += len(k) + len(v)
	}
	if size > maxHeaderBytes {
		return o, invalid(fmt.Sprintf("extra_http_headers: at most %d bytes in all", maxHeaderBytes))
	}
	if p := c.GetProxy(); p != nil {
		u, err := url.Parse(p.GetServer())
		if p.GetServer() == "" || err != nil || u.Host == "" {
			return o, invalid("proxy.server must be a URL such as http://host:3128 or socks5://host:1080")
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
	if s == "" {
		return invalid("selector must not be empty")
	}
	if len(s) > maxSelectorBytes {
		return invalid(fmt.Sprintf("selector longer than %d bytes", maxSelectorBytes))
	}
	return nil
}
