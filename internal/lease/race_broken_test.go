//go:build leasefault

package lease

import "testing"

// TestRaceModelCatchesBrokenReclaim tests the race model itself: built with
// -tags leasefault, the manager's reclaim has a second cleanup path (a
// trigger that finds the lease already closing closes its session again),
// and the model must catch it.
//
//	go test -race -tags leasefault -run Broken ./internal/lease/
func TestRaceModelCatchesBrokenReclaim(t *testing.T) {
	cfg := ciRace
	cfg.Rounds, cfg.Leases = 1, 300
	sum, errs := runRaceModel(t, cfg, 0)
	t.Log(sum)
	if len(errs) == 0 {
		t.Fatal("race model over a manager with a broken reclaim: no violation, want the double cleanup caught")
	}
	if kinds := violationKinds(errs); kinds["exactly-once"] == 0 {
		t.Fatalf("race model over a manager with a broken reclaim found %v, want exactly-once violations among them", kinds)
	}
	t.Logf("caught: %s", describeViolations(errs, 5))
}
