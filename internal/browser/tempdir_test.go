package browser

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMkdirTempStaysShortForChromium(t *testing.T) {
	deep := filepath.Join(t.TempDir(), strings.Repeat("d", 80))
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", deep)
	dir, fellBack, err := MkdirTemp("broker-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if !fellBack || !TempDirFits(dir) || strings.HasPrefix(dir, deep) {
		t.Errorf("MkdirTemp under a %d-byte TMPDIR = %q (fell back %v); want a folder Chromium can start in", len(deep), dir, fellBack)
	}

	shallow := t.TempDir()
	if !TempDirFits(shallow + "/broker-1234567890") {
		t.Skipf("the test's own TMPDIR %q is too deep to check the plain case", shallow)
	}
	t.Setenv("TMPDIR", shallow)
	dir, fellBack, err = MkdirTemp("broker-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if fellBack || filepath.Dir(dir) != shallow {
		t.Errorf("MkdirTemp under %q = %q (fell back %v); want it in TMPDIR", shallow, dir, fellBack)
	}
}
