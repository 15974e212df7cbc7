package server

import (
	"context"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/fleet"
	"github.com/browserbroker/broker/internal/lease"
	"github.com/browserbroker/broker/internal/state"
)

// Config configures the edge. Zero values mean the defaults.
type Config struct {
	// Leases is the lease manager. Required.
	Leases *lease.Manager
	// Browsers reports browser counts for GetStats; nil: none reported.
	Browsers interface{ Stats() browser.Stats }
	// CommandTimeout is the time limit of a page command that names none.
	// Default 30s.
	CommandTimeout time.Duration
	// MaxCommandTimeout caps every page command's time limit. Default 5m.
	MaxCommandTimeout time.Duration
	// Sessions lists sticky sessions saved on disk for ListSessions; nil:
	// only those the lease manager holds are listed.
	Sessions SessionRecords
	// MemoryAvailable reports the available memory for GetStats; nil: 0.
	MemoryAvailable func() uint64
	// Metrics, when set, observes grant waits and command durations.
	Metrics *Metrics
	// DisableEvaluate refuses PageService.Evaluate with PERMISSION_DENIED:
	// clients then cannot run their own scripts in pages. Default false.
	DisableEvaluate bool
	// Auth authenticates every call but health checks and reflection
	// (NewGRPCServer installs it): callers are principals that see and use only their own
	// leases, and AdminService needs the admin role. Nil: no
	// authentication; every caller is the anonymous principal "", which
	// may call everything.
	Auth *Auth
	// AcquireRate is how many acquires a second each principal may start,
	// with bursts of AcquireBurst (default: AcquireRate rounded up);
	// beyond it acquires fail with RESOURCE_EXHAUSTED. The anonymous
	// principal is not limited. 0: no limit.
	AcquireRate  float64
	AcquireBurst int
	// Fleet, when set, makes this broker one of a fleet: acquires it cannot
	// grant at once go to a broker with room, calls for other brokers'
	// leases go to their owner, and admin calls may answer for the fleet.
	// Nil: a broker on its own.
	Fleet Fleet
	// FleetDial are the options of connections to the other brokers
	// (their transport credentials). Required with Fleet.
	FleetDial []grpc.DialOption
	// Now is the clock of the acquire rate limit; nil: time.Now.
	Now func() time.Time
	// Logger; nil: no logs.
	Logger *zap.Logger
}

// SessionRecords lists the sticky sessions saved on disk.
type SessionRecords interface {
	List() ([]state.Record, error)
}

// Server implements the three browserbroker.v1 services.
type Server struct {
	cfg      Config
	leases   *lease.Manager
	log      *zap.Logger
	health   *health.Server  // set by NewGRPCServer
	acquires *acquireLimiter // nil: no rate limit
	peers    *peers          // connections to the fleet's other brokers
	ownIDs   string          // in a fleet, the prefix of this broker's lease ids
}

// setLeaseServing reports the lease service's readiness to health checks.
func (s *Server) setLeaseServing(on bool) {
	if s.health == nil {
		return
	}
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if on {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus(brokerv1.LeaseService_ServiceDesc.ServiceName, st)
}

var (
	_ brokerv1.LeaseServiceServer = (*leaseService)(nil)
	_ brokerv1.PageServiceServer  = (*pageService)(nil)
	_ brokerv1.AdminServiceServer = (*adminService)(nil)
)

// New returns the edge over a lease manager.
func New(cfg Config) *Server {
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = 30 * time.Second
	}
	if cfg.MaxCommandTimeout <= 0 {
		cfg.MaxCommandTimeout = 5 * time.Minute
	}
	if cfg.CommandTimeout > cfg.MaxCommandTimeout {
		cfg.CommandTimeout = cfg.MaxCommandTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	s := &Server{cfg: cfg, leases: cfg.Leases, log: cfg.Logger, peers: &peers{dial: cfg.FleetDial},
		acquires: newAcquireLimiter(cfg.AcquireRate, cfg.AcquireBurst, cfg.Now)}
	if cfg.Fleet != nil {
		s.ownIDs = fleet.LeaseIDPrefix(cfg.Fleet.ID())
	}
	return s
}

// Register registers the services on a gRPC server. Authentication and
// the admin role check are NewGRPCServer's interceptors: with Config.Auth
// set, services registered without them refuse every lease and page call.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	brokerv1.RegisterLeaseServiceServer(g, &leaseService{s: s})
	brokerv1.RegisterPageServiceServer(g, &pageService{s: s})
	brokerv1.RegisterAdminServiceServer(g, &adminService{s: s})
}

// commandContext bounds a page command by its requested timeout (or the
// default), capped by the maximum; a shorter deadline already on ctx wins.
func (s *Server) commandContext(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d == 0 {
		d = s.cfg.CommandTimeout
	}
	d = min(d, s.cfg.MaxCommandTimeout)
	return context.WithTimeout(ctx, d)
}
