package client

import (
	"context"
	"crypto/tls"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// DefaultKeepaliveTime is how often [Dial]'s connection pings an idle
// broker; a ping unanswered for 10s closes the connection, which ends its
// leases. The broker accepts pings every 5s or more rarely, also when no
// stream is open, and drops connections that ping more often. Override it
// with WithDialOptions(grpc.WithKeepaliveParams(...)).
const DefaultKeepaliveTime = 20 * time.Second

// Client is a connection to a broker. It is safe for concurrent use; one
// Client can hold many leases at once.
type Client struct {
	owned *grpc.ClientConn // closed by Close; nil when the caller owns conn

	leases brokerv1.LeaseServiceClient
	page   brokerv1.PageServiceClient
	admin  brokerv1.AdminServiceClient
	health healthpb.HealthClient

	// closing is cancelled by Close; it ends every lease stream.
	closing     context.Context
	cancelClose context.CancelFunc

	mu     sync.Mutex
	closed bool
	// streams counts acquires in progress and held leases; Close waits for
	// it to drop to zero.
	streams sync.WaitGroup
}

// Option configures [Dial].
type Option interface {
	applyDial(*dialConfig)
}

type dialConfig struct {
	creds    credentials.TransportCredentials
	dialOpts []grpc.DialOption
}

type dialOptionFunc func(*dialConfig)

func (f dialOptionFunc) applyDial(c *dialConfig) { f(c) }

// WithTransportCredentials sets the connection's transport security, such
// as credentials.NewTLS(cfg). Default: insecure (plaintext), which suits a
// broker on the same host or a private network.
func WithTransportCredentials(creds credentials.TransportCredentials) Option {
	return dialOptionFunc(func(c *dialConfig) { c.creds = creds })
}

// WithTLS connects with TLS configured by cfg: its RootCAs verify the
// broker (nil: the system's roots), its Certificates are the client
// certificate for a broker that requires one (--client-ca), and its
// ServerName overrides the name checked in the broker's certificate.
func WithTLS(cfg *tls.Config) Option {
	return WithTransportCredentials(credentials.NewTLS(cfg))
}

// WithToken authenticates every call with a bearer token, sent as the
// `authorization: Bearer TOKEN` metadata, to a broker started with
// --auth-tokens. The token is sent over plaintext connections too: use
// [WithTLS] unless the broker is on the same host.
func WithToken(token string) Option {
	return WithDialOptions(grpc.WithPerRPCCredentials(bearerToken(token)))
}

// bearerToken is a per-call credential.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false: a broker on loopback takes tokens in
// plaintext; one on a network refuses to unless it runs with --insecure.
func (bearerToken) RequireTransportSecurity() bool { return false }

// WithDialOptions adds options to grpc.NewClient. They are applied after
// Dial's own, so they win: grpc.WithKeepaliveParams replaces the default
// keepalive, for instance.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return dialOptionFunc(func(c *dialConfig) { c.dialOpts = append(c.dialOpts, opts...) })
}

// Dial returns a Client for the broker at addr (such as "localhost:7070" or
// any grpc.NewClient target). It does not connect yet: an unreachable broker
// shows up as an UNAVAILABLE status on the first call. The connection pings
// the broker every [DefaultKeepaliveTime] so that a dead broker or network
// path is noticed, and its leases end, even when no call is under way.
// [Client.Close] closes the connection.
func Dial(addr string, opts ...Option) (*Client, error) {
	cfg := dialConfig{creds: insecure.NewCredentials()}
	for _, o := range opts {
		o.applyDial(&cfg)
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(cfg.creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                DefaultKeepaliveTime,
			Timeout:             10 * time.Second,
			PermitWithoutStream: true,
		}),
	}, cfg.dialOpts...)
	conn, err := grpc.NewClient(addr, dialOpts...)
	if err != nil {
		return nil, err
	}
	c := New(conn)
	c.owned = conn
	return c, nil
}

// New returns a Client over a connection the caller owns, such as one shared
// with other services or an in-memory one in tests. [Client.Close] then ends
// the client's leases but leaves conn open.
func New(conn grpc.ClientConnInterface) *Client {
	closing, cancel := context.WithCancel(context.Background())
	return &Client{
		leases:      brokerv1.NewLeaseServiceClient(conn),
		page:        brokerv1.NewPageServiceClient(conn),
		admin:       brokerv1.NewAdminServiceClient(conn),
		health:      healthpb.NewHealthClient(conn),
		closing:     closing,
		cancelClose: cancel,
	}
}

// errClientClosed ends the leases and acquires of a closed Client.
var errClientClosed = status.Error(codes.Canceled, "client closed")

// Close ends every lease the client still holds, without release (the
// broker reclaims them with STREAM_CLOSED), fails acquires in progress with
// CANCELLED, waits until their goroutines have returned, and closes the
// connection if [Dial] opened it. Release leases first to give them back
// cleanly. Close is idempotent; it must not be called from an
// [AcquireOptions.OnQueued] callback.
func (c *Client) Close() error {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.mu.Unlock()
	c.cancelClose()
	c.streams.Wait()
	if already || c.owned == nil {
		return nil
	}
	return c.owned.Close()
}

// track counts a new lease stream, unless the client is closed.
func (c *Client) track() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.streams.Add(1)
	return true
}
