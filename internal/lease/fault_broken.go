//go:build leasefault

package lease

// injectBrokenReclaim: this build's reclaim is broken on purpose, for
// TestRaceModelCatchesBrokenReclaim. Never ship a leasefault build.
const injectBrokenReclaim = true
