// Package lease owns the life of browser leases: admission against a fixed
// capacity with a FIFO queue, the idle TTL and the maximum lifetime, the
// serialization of commands on a lease, and the one path that reclaims a
// lease, exactly once, whatever ends it.
//
// It knows nothing of gRPC or of browsers: it manages leases over a Backend
// that opens and closes Sessions, so it is tested with a fake backend and
// testing/synctest's fake clock.
//
// # The reclaim path
//
// Every trigger (release, stream closed, TTL, max lifetime, admin revoke,
// backend loss, shutdown) calls into one place. Under the manager's lock the
// first trigger marks the lease closing and records its reason; every later
// trigger finds it closing, is counted as a duplicate and does nothing else.
// The winner then, outside the lock, cancels the lease's context (in-flight
// commands stop), closes the session under a deadline, and only then removes
// the lease from the table and frees its capacity, under the lock again. A
// closing lease cannot be renewed or used.
package lease
