package state

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestGenerationsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	for want := uint64(1); want <= 3; want++ {
		if g, err := s.NextGeneration("shop/user 1"); err != nil || g != want {
			t.Fatalf("NextGeneration = %d, %v; want %d", g, err, want)
		}
	}
	s.Close()
	s = open(t, dir)
	if g, err := s.NextGeneration("shop/user 1"); err != nil || g != 4 {
		t.Fatalf("NextGeneration after reopen = %d, %v; want 4", g, err)
	}
	if g, _ := s.NextGeneration("other"); g != 1 {
		t.Fatalf("another key's first generation = %d, want 1", g)
	}
}

func TestConcurrentGenerationsNeverRepeat(t *testing.T) {
	s := open(t, t.TempDir())
	var wg sync.WaitGroup
	seen := make(chan uint64, 100)
	for range 100 {
		wg.Go(func() {
			g, err := s.NextGeneration("k")
			if err != nil {
				t.Error(err)
			}
			seen <- g
		})
	}
	wg.Wait()
	close(seen)
	got := map[uint64]bool{}
	for g := range seen {
		if got[g] {
			t.Fatalf("generation %d handed out twice", g)
		}
		got[g] = true
	}
	if len(got) != 100 || !got[100] {
		t.Fatalf("got %d distinct generations up to 100? %v", len(got), got[100])
	}
}

func TestStorageSaveGetForget(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	state := []byte(`{"cookies":[{"name":"sid","value":"1"}],"origins":[]}`)
	if err := s.SaveStorage("k", state); err != nil {
		t.Fatal(err)
	}
	s.NextGeneration("k")
	s.Close()
	s = open(t, dir)
	r, ok, err := s.Get("k")
	if err != nil || !ok || string(r.Storage) != string(state) || r.Generation != 1 || r.SavedAt.IsZero() {
		t.Fatalf("Get after reopen = %+v, %v, %v; want the saved state, generation 1", r, ok, err)
	}
	if list, err := s.List(); err != nil || len(list) != 1 || list[0].Key != "k" || list[0].Storage != nil {
		t.Fatalf("List = %+v, %v; want k without its storage", list, err)
	}
	if existed, err := s.Forget("k"); !existed || err != nil {
		t.Fatalf("Forget = %v, %v; want true", existed, err)
	}
	if existed, _ := s.Forget("k"); existed {
		t.Fatal("Forget of a forgotten key says it existed")
	}
	r, _, _ = s.Get("k")
	if r.Storage != nil || r.Generation != 1 {
		t.Fatalf("after Forget: %+v; want no storage, generation kept", r)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Fatalf("List after Forget = %+v, want none", list)
	}
	if g, _ := s.NextGeneration("k"); g != 2 {
		t.Fatalf("generation after Forget = %d, want 2", g)
	}
	if existed, err := s.Forget("never"); existed || err != nil {
		t.Fatalf("Forget(unknown) = %v, %v", existed, err)
	}
}

func TestBadStorageRefused(t *testing.T) {
	s := open(t, t.TempDir())
	if err := s.SaveStorage("k", []byte("{not json")); err == nil {
		t.Fatal("SaveStorage of non-JSON succeeded")
	}
	if err := s.SaveStorage("k", make([]byte, MaxStorage+1)); err == nil {
		t.Fatal("SaveStorage over MaxStorage succeeded")
	}
}

func TestCorruptRecordIsReportedNotOverwritten(t *testing.T) {
	s := open(t, t.TempDir())
	s.NextGeneration("k")
	path := s.path("k")
	os.WriteFile(path, []byte("garbage"), 0o600)
	if _, err := s.NextGeneration("k"); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("NextGeneration over a corrupt record = %v, want a corrupt error", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "garbage" {
		t.Fatal("the corrupt record was overwritten (the generation would restart)")
	}
}

func TestKeysCannotNamePaths(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	for _, k := range []string{"../../etc/passwd", "/abs", "a/b"} {
		if _, err := s.NextGeneration(k); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "sessions"))
	if len(ents) != 3 {
		t.Fatalf("%d files in the store, want 3", len(ents))
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.Count(e.Name(), ".") != 1 {
			t.Fatalf("unexpected file %q", e.Name())
		}
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	if s, err := Open(dir); err == nil {
		s.Close()
		t.Fatal("a second Open of a locked store succeeded")
	}
}

func TestLeftoverTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	s.NextGeneration("k")
	s.Close()
	tmp := filepath.Join(dir, "sessions", ".tmp-123")
	os.WriteFile(tmp, []byte("half"), 0o600)
	open(t, dir)
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatal("a leftover temp file survived Open")
	}
	var r Record
	b, _ := os.ReadFile(filepath.Join(dir, "sessions", filepath.Base(s.path("k"))))
	if json.Unmarshal(b, &r); r.Generation != 1 {
		t.Fatalf("record after reopen: %+v", r)
	}
}
