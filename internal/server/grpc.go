package server

import (
	"context"
	"crypto/tls"
	"runtime/debug"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// GRPCConfig configures the gRPC server. Zero values mean the defaults.
type GRPCConfig struct {
	// KeepaliveTime: after this long without activity on a connection the
	// server pings the client. Default 10s.
	KeepaliveTime time.Duration
	// KeepaliveTimeout: a ping unanswered for this long closes the
	// connection, which ends its lease streams (STREAM_CLOSED). A client that
	// vanished without closing its connection is thus noticed within
	// KeepaliveTime + KeepaliveTimeout. Default 5s.
	KeepaliveTimeout time.Duration
	// MaxRecvMsgSize bounds a request. Default 4 MiB.
	MaxRecvMsgSize int
	// TLS, when set, serves TLS with it (mutual TLS when it requires
	// client certificates); nil: plaintext.
	TLS *tls.Config
}

// observeCommands times page commands for the metrics.
func (s *Server) observeCommands(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method, ok := strings.CutPrefix(info.FullMethod, "/"+brokerv1.PageService_ServiceDesc.ServiceName+"/")
	if !ok || s.cfg.Metrics == nil {
		return handler(ctx, req)
	}
	start := time.Now()
	resp, err := handler(ctx, req)
	s.cfg.Metrics.observeCommand(method, status.Code(err).String(), time.Since(start))
	return resp, err
}

// NewGRPCServer returns a gRPC server with the broker's services, the
// standard health service (SERVING) and reflection. A panic in a handler
// becomes INTERNAL with a fixed message; the stack goes to the log only.
// With the Server's Config.Auth every call but health checks and
// reflection must be authenticated.
func NewGRPCServer(s *Server, cfg GRPCConfig) (*grpc.Server, *health.Server) {
	if cfg.KeepaliveTime <= 0 {
		cfg.KeepaliveTime = 10 * time.Second
	}
	if cfg.KeepaliveTimeout <= 0 {
		cfg.KeepaliveTimeout = 5 * time.Second
	}
	if cfg.MaxRecvMsgSize <= 0 {
		cfg.MaxRecvMsgSize = 4 << 20
	}
	onPanic := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		s.log.Error("panic in handler", zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	unary := []grpc.UnaryServerInterceptor{recovery.UnaryServerInterceptor(onPanic)}
	stream := []grpc.StreamServerInterceptor{recovery.StreamServerInterceptor(onPanic)}
	if a := s.cfg.Auth; a != nil {
		unary = append(unary, a.unaryInterceptor)
		stream = append(stream, a.streamInterceptor)
	}
	unary = append(unary, s.routeByLease, s.observeCommands)
	var creds []grpc.ServerOption
	if cfg.TLS != nil {
		creds = append(creds, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	g := grpc.NewServer(append(creds,
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    cfg.KeepaliveTime,
			Timeout: cfg.KeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			// Clients may ping as often as every 5s, also without streams.
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	)...)
	s.Register(g)
	h := health.NewServer()
	for _, name := range []string{"", brokerv1.LeaseService_ServiceDesc.ServiceName,
		brokerv1.PageService_ServiceDesc.ServiceName, brokerv1.AdminService_ServiceDesc.ServiceName} {
		h.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	s.health = h
	healthpb.RegisterHealthServer(g, h)
	reflection.Register(g)
	return g, h
}
