package lease

import "fmt"

// Reason says why a lease was reclaimed: the first trigger that fired.
type Reason int

// The reclaim reasons. Their order matches the API's ReclaimReason enum.
const (
	ReasonUnspecified Reason = iota
	// Released: the holder gave the lease back.
	Released
	// StreamClosed: the holder's stream ended without a release.
	StreamClosed
	// TTLExpired: no activity within the idle TTL.
	TTLExpired
	// MaxLifetime: the lease reached its maximum lifetime.
	MaxLifetime
	// Revoked: an operator revoked it.
	Revoked
	// BrowserCrashed: the browser (or its driver) under the lease died.
	BrowserCrashed
	// Shutdown: the manager is closing.
	Shutdown
	// PageCrashed: the lease's page died; the browser lives on.
	PageCrashed

	numReasons
)

var reasonNames = [...]string{
	ReasonUnspecified: "UNSPECIFIED",
	Released:          "RELEASED",
	StreamClosed:      "STREAM_CLOSED",
	TTLExpired:        "TTL_EXPIRED",
	MaxLifetime:       "MAX_LIFETIME",
	Revoked:           "REVOKED",
	BrowserCrashed:    "BROWSER_CRASHED",
	Shutdown:          "SHUTDOWN",
	PageCrashed:       "PAGE_CRASHED",
}

func (r Reason) String() string {
	if r >= 0 && r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// Reasons lists every real reason, in order.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons-1)
	for r := Released; r < numReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}
