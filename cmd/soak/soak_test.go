package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// driverDir follows cmd/broker's tests: $PLAYWRIGHT_DRIVER_PATH, else the
// folder `make setup` fills.
func driverDir() string {
	if d := os.Getenv("PLAYWRIGHT_DRIVER_PATH"); d != "" {
		return d
	}
	return filepath.Join("..", "..", ".cache", "playwright", "1.52.0")
}

// The soak at CI size: 300 cycles against a real broker and Chromium.
func TestSoak(t *testing.T) {
	if _, err := os.Stat(filepath.Join(driverDir(), "package", "cli.js")); err != nil {
		if os.Getenv("BROKER_REQUIRE_BROWSER") != "" {
			t.Fatal("Playwright driver missing; run make setup")
		}
		t.Skip("Playwright driver missing; run `make test`")
	}
	if testing.Short() {
		t.Skip("the soak takes about a minute")
	}
	var out bytes.Buffer
	err := run(context.Background(), []string{"--cycles", "300", "--driver-dir", driverDir()}, &out, &out)
	t.Logf("soak output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
}

func TestFlags(t *testing.T) {
	c, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatalf("parseFlags() = %v", err)
	}
	if c.cycles != 2000 || c.capacity != 4 || c.concurrency != 4 || c.warmup != 200 || c.maxRSSGrowth != 50<<20 {
		t.Errorf("parseFlags() = %+v, want 2000 cycles, capacity and concurrency 4, warm-up 200, 50 MB", c)
	}
	for _, args := range [][]string{{"--cycles", "0"}, {"extra"}, {"--capacity", "-1"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) = nil error, want one", args)
		}
	}
}
