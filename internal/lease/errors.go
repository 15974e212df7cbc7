package lease

import (
	"errors"
	"fmt"
)

// Sentinel errors. The gRPC edge maps each to a status code in one table.
var (
	// ErrNotFound: no lease has that id (and none had it recently).
	ErrNotFound = errors.New("lease: not found")
	// ErrNoCapacity: no capacity became free within the wait timeout.
	ErrNoCapacity = errors.New("lease: no capacity within the wait timeout")
	// ErrWithdrawn: the acquire left the queue because its
	// AcquireRequest.Withdraw was closed.
	ErrWithdrawn = errors.New("lease: withdrawn from the queue")
	// ErrQueueFull: the wait queue is at its limit.
	ErrQueueFull = errors.New("lease: wait queue full")
	// ErrShuttingDown: the manager is closing and grants nothing new.
	ErrShuttingDown = errors.New("lease: shutting down")
	// ErrDraining: the manager is draining and grants nothing new.
	ErrDraining = errors.New("lease: draining: no new leases are granted here")
	// ErrInvalid: an argument is out of range.
	ErrInvalid = errors.New("lease: invalid argument")
	// ErrLimit: the principal is at one of its limits.
	ErrLimit = errors.New("lease: limit reached")
	// ErrBackend: the backend failed to open a session.
	ErrBackend = errors.New("lease: backend failed")
)

// ReclaimedError is returned for a lease whose reclaim has begun. InFlight
// is true for a command that was running when the reclaim began (and was cut
// short by it), false for a call that arrived afterwards.
type ReclaimedError struct {
	ID       string
	Reason   Reason
	Message  string
	InFlight bool
}

func (e *ReclaimedError) Error() string {
	what := "lease %s was reclaimed (%s)"
	if e.InFlight {
		what = "lease %s was reclaimed while the command ran (%s)"
	}
	s := fmt.Sprintf(what, e.ID, e.Reason)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}
