//go:build !leasefault

package lease

// injectBrokenReclaim breaks the reclaim path on purpose, to prove that the
// race model catches a broken reclaim. Only -tags leasefault sets it.
const injectBrokenReclaim = false
