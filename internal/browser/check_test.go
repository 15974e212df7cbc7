package browser

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	good := t.TempDir()
	write := func(path, content string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(good, "package", "cli.js"), "", 0o644)
	write(filepath.Join(good, "package", "package.json"), `{"name":"playwright-core","version":"1.52.0"}`, 0o644)
	write(filepath.Join(good, "node"), "#!/bin/sh\n", 0o755)
	chromium := filepath.Join(good, "chromium")
	write(chromium, "#!/bin/sh\n", 0o755)

	oldVersion := t.TempDir()
	write(filepath.Join(oldVersion, "package", "cli.js"), "", 0o644)
	write(filepath.Join(oldVersion, "package", "package.json"), `{"version":"1.49.1"}`, 0o644)
	write(filepath.Join(oldVersion, "node"), "#!/bin/sh\n", 0o755)

	noNode := t.TempDir()
	write(filepath.Join(noNode, "package", "cli.js"), "", 0o644)

	for _, tc := range []struct {
		name      string
		cfg       Config
		wantParts []string // empty: no error
	}{
		{"ok", Config{DriverDir: good, ExecutablePath: chromium}, nil},
		{"no driver dir", Config{ExecutablePath: chromium}, []string{"make setup", "--driver-dir"}},
		{"missing cli.js", Config{DriverDir: t.TempDir() + "/nope", ExecutablePath: chromium},
			[]string{"nope/package/cli.js", "make setup", "--driver-dir"}},
		{"missing node", Config{DriverDir: noNode, ExecutablePath: chromium},
			[]string{filepath.Join(noNode, "node"), "make setup"}},
		{"wrong version", Config{DriverDir: oldVersion, ExecutablePath: chromium},
			[]string{"1.49.1", "1.52.0", "make setup"}},
		{"no chromium", Config{DriverDir: good}, []string{"make setup", "--chromium"}},
		{"missing chromium", Config{DriverDir: good, ExecutablePath: "/no/such/chromium"},
			[]string{"/no/such/chromium", "make setup", "--chromium"}},
		{"chromium not executable", Config{DriverDir: good, ExecutablePath: filepath.Join(good, "package", "cli.js")},
			[]string{"not executable", "--chromium"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.cfg)
			if len(tc.wantParts) == 0 {
				if err != nil {
					t.Fatalf("Check() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrNotInstalled) {
				t.Fatalf("Check() = %v, want ErrNotInstalled", err)
			}
			for _, part := range tc.wantParts {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("Check() = %q, want it to mention %q", err, part)
				}
			}
		})
	}
}
