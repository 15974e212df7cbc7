package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/lease"
)

const (
	maxExpressionBytes = 256 << 10
	maxValueBytes      = 1 << 20
	maxCookies         = 500
)

type pageService struct {
	brokerv1.UnimplementedPageServiceServer
	s *Server
}

// run runs fn on the lease's page, after the lease's earlier commands,
// within the command's time limit, if the caller holds the lease.
func (ps *pageService) run(ctx context.Context, id string, timeout *durationpb.Duration, fn func(ctx context.Context, p Page) error) error {
	p, err := ps.s.caller(ctx)
	if err != nil {
		return err
	}
	if id == "" {
		return invalid("lease_id must not be empty")
	}
	d, err := duration("timeout", timeout)
	if err != nil {
		return err
	}
	ctx, cancel := ps.s.commandContext(ctx, d)
	defer cancel()
	// Another principal's lease is not found, exactly as an unknown one.
	// The method's name ("Navigate") is the lease's last command.
	method, _ := grpc.Method(ctx)
	_, command, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	err = ps.s.leases.DoCommand(ctx, p.Name, id, command, func(ctx context.Context, sess lease.Session) error {
		p, ok := sess.(Page)
		if !ok {
			return fmt.Errorf("server: session %T has no page", sess)
		}
		return fn(ctx, p)
	})
	return toStatus(ps.s.log, err)
}

var waitUntil = map[brokerv1.WaitUntil]string{
	brokerv1.WaitUntil_WAIT_UNTIL_UNSPECIFIED:        "load",
	brokerv1.WaitUntil_WAIT_UNTIL_LOAD:               "load",
	brokerv1.WaitUntil_WAIT_UNTIL_DOM_CONTENT_LOADED: "domcontentloaded",
	brokerv1.WaitUntil_WAIT_UNTIL_NETWORK_IDLE:       "networkidle",
	brokerv1.WaitUntil_WAIT_UNTIL_COMMIT:             "commit",
}

func (ps *pageService) Navigate(ctx context.Context, req *brokerv1.NavigateRequest) (*brokerv1.NavigateResponse, error) {
	if err := checkURL(req.GetUrl()); err != nil {
		return nil, err
	}
	if err := checkReferer(req.GetReferer()); err != nil {
		return nil, err
	}
	wu, ok := waitUntil[req.GetWaitUntil()]
	if !ok {
		return nil, invalid(fmt.Sprintf("unknown wait_until %v", req.GetWaitUntil()))
	}
	var res browser.NavigateResult
	err := ps.run(ctx, req.GetLeaseId(), req.GetTimeout(), func(ctx context.Context, p Page) (err error) {
		res, err = p.Navigate(ctx, req.GetUrl(), browser.NavigateOptions{WaitUntil: wu, Referer: req.GetReferer()})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &brokerv1.NavigateResponse{Status: int32(res.Status), Url: res.URL, Title: res.Title}, nil
}

func (ps *pageService) Click(ctx context.Context, req *brokerv1.ClickRequest) (*brokerv1.ClickResponse, error) {
	if err := checkSelector(req.GetSelector()); err != nil {
		return nil, err
	}
	err := ps.run(ctx, req.GetLeaseId(), req.GetTimeout(), func(ctx context.Context, p Page) error {
		return p.Click(ctx, req.GetSelector())
	})
	if err != nil {
		return nil, err
	}
	return &brokerv1.ClickResponse{}, nil
}

func (ps *pageService) Fill(ctx context.Context, req *brokerv1.FillRequest) (*brokerv1.FillResponse, error) {
	if err := checkSelector(req.GetSelector()); err != nil {
		return nil, err
	}
	if len(req.GetValue()) > maxValueBytes {
		return nil, invalid(fmt.Sprintf("value longer than %d bytes", maxValueBytes))
	}
	err := ps.run(ctx, req.GetLeaseId(), req.GetTimeout(), func(ctx context.Context, p Page) error {
		return p.Fill(ctx, req.GetSelector(), req.GetValue())
	})
	if err != nil {
		return nil, err
	}
	return &brokerv1.FillResponse{}, nil
}

func (ps *pageService) Press(ctx context.Context, req *brokerv1.PressRequest) (*brokerv1.PressResponse, error) {
	if err := checkSelector(req.GetSelector()); err != nil {
		return nil, err
	}
	if req.GetKey() == "" || len(req.GetKey()) > 64 {
		return nil, invalid("key must be a key name such as Enter, 1-64 bytes")
	}
	err := ps.run(ctx, req.GetLeaseId(), req.GetTimeout(), func(ctx context.Context, p Page) error {
		return p.Press(ctx, req.GetSelector(), req.GetKey())
	})
	if err != nil {
		return nil, err
	}
	return &brokerv1.PressResponse{}, nil
}

var elementStates = map[brokerv1.ElementState]string{
	brokerv1.ElementState_ELEMENT_STATE_UNSPECIFIED: "visible",
	brokerv1.ElementState_ELEMENT_STATE_ATTACHED:    "attached",
	brokerv1.ElementState_ELEMENT_STATE_DETACHED:    "detached",
	brokerv1.ElementState_ELEMENT_STATE_VISIBLE:     "visible",
	brokerv1.ElementState_ELEMENT_STATE_HIDDEN:      "hidden",
}

func (ps *pageService) WaitForSelector(ctx context.Context, req *brokerv1.WaitForSelectorRequest) (*brokerv1.WaitForSelectorResponse, error) {
	if err := checkSelector(req.GetSelector()); err != nil {
		return nil, err
	}
	state, ok := elementStates[req.GetState()]
	if !ok {
		return nil, invalid(fmt.Sprintf("unknown state %v", req.GetState()))
	}
	var found bool
	err := ps.run(ctx, req.GetLeaseId(), req.GetTimeout(), func(ctx context.Context, p Page) (err error) {
		found, err = p.WaitForSelector(ctx, req.GetSelector(), state)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &brokerv1.WaitForSelectorResponse{Found: found}, nil
}

func (ps *pageService) Evaluate(ctx context.Context, req *brokerv1.EvaluateRequest) (*brokerv1.EvaluateResponse, error) {
	if ps.s.cfg.DisableEvaluate {
		return nil, status.Error(codes.PermissionDenied, "Evaluate is disabled on this broker")
	}
	if req.GetExpression() == "" {
		return nil, invalid("expression must not be empty")
	}
	if len(req.GetExpression()) > maxExpressionBytes {
		return nil, invalid(fmt.Sprintf("expression longer than %d bytes", maxExpressionBytes))
	}
	if a := req.GetArgJson(); a != "" && (len(a) > maxValueBytes || !json.Valid([]byte(a))) {
		return nil, invalid(fmt.Sprintf("arg_json must be valid JSON of at most %d bytes", maxValueBytes))
	}
	var result string
	err := ps.run(ctx, req.GetLeaseId(), req.GetTimeout(), func(ctx context.Context, p Page) (err error) {
		result, err = p.Evaluate(ctx, req.GetExpression(), req.GetArgJson())
		return err
	})
	if err != nil {
		return nil, err
	}
	resp := &brokerv1.EvaluateResponse{ResultJson: result}
	if err := checkResponse("the result", resp); err != nil {
		return nil, err
	}
	return resp, nil
}

func (ps *pageService) Content(ctx context.Context, req *brokerv1.ContentRequest) (*brokerv1.ContentResponse, error) {
	var html string
	err := ps.run(ctx, req.GetLeaseId(), req.GetTimeout(), func(ctx context.Context, p Page) (err error) {
		html, err = p.Content(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	resp := &brokerv1.ContentResponse{Html: html}
	if err := checkResponse("the HTML", resp); err != nil {
		return nil, err
	}
	return resp, nil
}

func (ps *pageService) Text(ctx context.Context, req *brokerv1.TextRequest) (*brokerv1.TextResponse, error) {
	if err := checkSelector(req.GetSelector()); err != nil {
		return nil, err
	}
	var texts []string
	err := ps.run(ctx, req.GetLeaseId(), req.GetTimeout(), func(ctx context.Context, p Page) (err error) {
		texts, err = p.Text(ctx, req.GetSelector())
		return err
	})
	if err != nil {
		return nil, err
	}
	resp := &brokerv1.TextResponse{Texts: texts}
	if err := checkResponse("the texts", resp); err != nil {
		return nil, err
	}
	return resp, nil
}

func (ps *pageService) Screenshot(ctx context.Context, req *brokerv1.ScreenshotRequest) (*brokerv1.ScreenshotResponse, error) {
	format, out := "png", brokerv1.ImageFormat_IMAGE_FORMAT_PNG
	switch req.GetFormat() {
	case brokerv1.ImageFormat_IMAGE_FORMAT_UNSPECIFIED, brokerv1.ImageFormat_IMAGE_FORMAT_PNG:
		if req.GetQuality() != 0 {
			return nil, invalid("quality applies to JPEG only")
		}
	case brokerv1.ImageFormat_IMAGE_FORMAT_JPEG:
		format, out = "jpeg", brokerv1.ImageFormat_IMAGE_FORMAT_JPEG
	default:
		return nil, invalid(fmt.Sprintf("unknown format %v", req.GetFormat()))
	}
	if q := req.GetQuality(); q < 0 || q > 100 {
		return nil, invalid(fmt.Sprintf("quality must be 0-100, got %d", q))
	}
	var data []byte
	err := ps.run(ctx, req.GetLeaseId(), req.GetTimeout(), func(ctx context.Context, p Page) (err error) {
		data, err = p.Screenshot(ctx, browser.ScreenshotOptions{FullPage: req.GetFullPage(), Format: format, Quality: int(req.GetQuality())})
		return err
	})
	if err != nil {
		return nil, err
	}
	resp := &brokerv1.ScreenshotResponse{Data: data, Format: out}
	if err := checkResponse("the image", resp); err != nil {
		return nil, err
	}
	return resp, nil
}

func (ps *pageService) GetCookies(ctx context.Context, req *brokerv1.GetCookiesRequest) (*brokerv1.GetCookiesResponse, error) {
	if len(req.GetUrls()) > maxCookieURLs {
		return nil, invalid(fmt.Sprintf("at most %d urls, got %d", maxCookieURLs, len(req.GetUrls())))
	}
	for _, u := range req.GetUrls() {
		if err := checkURL(u); err != nil {
			return nil, err
		}
	}
	var cookies []browser.Cookie
	err := ps.run(ctx, req.GetLeaseId(), nil, func(ctx context.Context, p Page) (err error) {
		cookies, err = p.Cookies(ctx, req.GetUrls()...)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]*brokerv1.Cookie, len(cookies))
	for i, c := range cookies {
		out[i] = &brokerv1.Cookie{Name: c.Name, Value: c.Value, Domain: c.Domain, Path: c.Path,
			Expires: c.Expires, HttpOnly: c.HTTPOnly, Secure: c.Secure, SameSite: c.SameSite}
	}
	resp := &brokerv1.GetCookiesResponse{Cookies: out}
	if err := checkResponse("the cookies", resp); err != nil {
		return nil, err
	}
	return resp, nil
}

func (ps *pageService) SetCookies(ctx context.Context, req *brokerv1.SetCookiesRequest) (*brokerv1.SetCookiesResponse, error) {
	if len(req.GetCookies()) == 0 || len(req.GetCookies()) > maxCookies {
		return nil, invalid(fmt.Sprintf("cookies: 1-%d cookies, got %d", maxCookies, len(req.GetCookies())))
	}
	cookies := make([]browser.Cookie, len(req.GetCookies()))
	for i, c := range req.GetCookies() {
		if c.GetName() == "" {
			return nil, invalid(fmt.Sprintf("cookie %d: name must not be empty", i))
		}
		if err := checkCookie(i, c); err != nil {
			return nil, err
		}
		if (c.GetUrl() == "") == (c.GetDomain() == "") {
			return nil, invalid(fmt.Sprintf("cookie %q: set either url, or domain (with path)", c.GetName()))
		}
		if c.GetUrl() != "" {
			if err := checkURL(c.GetUrl()); err != nil {
				return nil, err
			}
		}
		switch c.GetSameSite() {
		case "", "Strict", "Lax", "None":
		default:
			return nil, invalid(fmt.Sprintf("cookie %q: same_site must be Strict, Lax or None", c.GetName()))
		}
		cookies[i] = browser.Cookie{Name: c.GetName(), Value: c.GetValue(), Domain: c.GetDomain(), Path: c.GetPath(),
			URL: c.GetUrl(), Expires: c.GetExpires(), HTTPOnly: c.GetHttpOnly(), Secure: c.GetSecure(), SameSite: c.GetSameSite()}
	}
	err := ps.run(ctx, req.GetLeaseId(), nil, func(ctx context.Context, p Page) error {
		return p.SetCookies(ctx, cookies)
	})
	if err != nil {
		return nil, err
	}
	return &brokerv1.SetCookiesResponse{}, nil
}
