package server

import (
	"context"
	"errors"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/browserbroker/broker/internal/browser"
	"github.com/browserbroker/broker/internal/lease"
)

// errorCodes is the one table from domain errors to status codes, checked
// in order. Messages of these errors are written to be safe for clients.
var errorCodes = []struct {
	err  error
	code codes.Code
}{
	{lease.ErrNotFound, codes.NotFound},
	{lease.ErrInvalid, codes.InvalidArgument},
	{lease.ErrNoCapacity, codes.ResourceExhausted},
	{lease.ErrQueueFull, codes.ResourceExhausted},
	{lease.ErrLimit, codes.ResourceExhausted},
	{lease.ErrShuttingDown, codes.Unavailable},
	{lease.ErrDraining, codes.Unavailable},
	{browser.ErrInvalidArgument, codes.InvalidArgument},
	{browser.ErrEvaluation, codes.InvalidArgument},
	{browser.ErrNavigated, codes.Aborted},
	{browser.ErrTimeout, codes.DeadlineExceeded},
	{browser.ErrNavigation, codes.Unavailable},
	{browser.ErrPageCrashed, codes.Aborted},
	{browser.ErrBrowserCrashed, codes.Aborted},
	{browser.ErrDriverCrashed, codes.Aborted},
	{browser.ErrClosed, codes.Aborted},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
	// Last: a backend failure wraps the browser's error, matched above
	// when it is one of those.
	{lease.ErrBackend, codes.Unavailable},
}

// toStatus turns a domain error into a gRPC status error. Errors it does
// not know become Internal with a fixed message; the detail is logged.
func toStatus(log *zap.Logger, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var re *lease.ReclaimedError
	if errors.As(err, &re) {
		if re.InFlight {
			return status.Error(codes.Aborted, re.Error())
		}
		return status.Error(codes.FailedPrecondition, re.Error())
	}
	for _, e := range errorCodes {
		if errors.Is(err, e.err) {
			return status.Error(e.code, err.Error())
		}
	}
	log.Error("unexpected error", zap.Error(err))
	return status.Error(codes.Internal, "internal error")
}

func invalid(msg string) error { return status.Error(codes.InvalidArgument, msg) }
