// Package state keeps sticky sessions' state on disk: for each session key,
// its generation (the fencing number of its last grant) and its browser
// storage state (cookies and localStorage, in Playwright's JSON format).
//
// One file per key, named by the key's SHA-256 so that no key can name a
// path. Every write goes to a temporary file that is synced and renamed
// over the old one, then the directory is synced: a crash leaves the old
// record or the new one, never a mix. A lock file keeps a second broker
// off the same directory.
package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Record is what the store keeps for one session key.
type Record struct {
	Key        string    `json:"key"`
	Generation uint64    `json:"generation"`
	SavedAt    time.Time `json:"saved_at,omitzero"`
	// Storage is the storage state; nil when none is saved.
	Storage json.RawMessage `json:"storage_state,omitempty"`
	// Deleted: the session was deleted; only its generation is kept.
	Deleted bool `json:"deleted,omitempty"`
}

// MaxStorage bounds one session's saved storage state.
const MaxStorage = 16 << 20

// Store is a directory of session records. Its methods are safe for
// concurrent use.
type Store struct {
	dir  string
	lock *os.File

	mu sync.Mutex // serializes read-modify-write of the records
}

// Open opens (creating it if need be) the store in dir and locks it
// against other processes.
func Open(dir string) (*Store, error) {
	sessions := filepath.Join(dir, "sessions")
	if err := os.MkdirAll(sessions, 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("state: %s is in use by another broker (%v)", dir, err)
	}
	s := &Store{dir: sessions, lock: lock}
	if err := s.removeTemps(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the directory's lock.
func (s *Store) Close() error { return s.lock.Close() }

// Dir is the directory of the records.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(s.dir, hex.EncodeToString(sum[:16])+".json")
}

// removeTemps removes temporary files a crash left behind.
func (s *Store) removeTemps() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
	return nil
}

// Get reads the key's record; ok is false when there is none. A deleted
// session's record has its generation and no storage.
func (s *Store) Get(key string) (r Record, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readLocked(key)
}

func (s *Store) readLocked(key string) (Record, bool, error) {
	b, err := os.ReadFile(s.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return Record{Key: key}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("state: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, false, fmt.Errorf("state: session %q: %s is corrupt: %w", key, s.path(key), err)
	}
	if r.Key != key {
		return Record{}, false, fmt.Errorf("state: session %q: %s holds session %q", key, s.path(key), r.Key)
	}
	return r, true, nil
}

// update applies f to the key's record and writes it back atomically.
func (s *Store) update(key string, f func(*Record) error) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, _, err := s.readLocked(key)
	if err != nil {
		return Record{}, err
	}
	if err := f(&r); err != nil {
		return Record{}, err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return Record{}, fmt.Errorf("state: %w", err)
	}
	return r, s.writeLocked(s.path(key), b)
}

func (s *Store) writeLocked(path string, b []byte) error {
	tmp, err := os.CreateTemp(s.dir, ".tmp-")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("state: %w", err)
	}
	return syncDir(s.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// NextGeneration records and returns the key's next generation.
func (s *Store) NextGeneration(key string) (uint64, error) {
	r, err := s.update(key, func(r *Record) error {
		r.Generation++
		r.Deleted = false
		return nil
	})
	return r.Generation, err
}

// SaveStorage records the key's storage state.
func (s *Store) SaveStorage(key string, storage []byte) error {
	if len(storage) > MaxStorage {
		return fmt.Errorf("state: session %q: storage state of %d bytes is over %d", key, len(storage), MaxStorage)
	}
	if !json.Valid(storage) {
		return fmt.Errorf("state: session %q: storage state is not JSON", key)
	}
	_, err := s.update(key, func(r *Record) error {
		r.Deleted = false
		r.Storage = slices.Clone(storage)
		r.SavedAt = time.Now().UTC()
		return nil
	})
	return err
}

// Forget removes the key's storage state, keeping its generation so that
// a fencing number is never reused, and says whether there was a record.
func (s *Store) Forget(key string) (bool, error) {
	s.mu.Lock()
	_, ok, err := s.readLocked(key)
	s.mu.Unlock()
	if err != nil || !ok {
		return false, err
	}
	var existed bool
	_, err = s.update(key, func(r *Record) error {
		existed = !r.Deleted
		r.Deleted = true
		r.Storage = nil
		r.SavedAt = time.Time{}
		return nil
	})
	return existed, err
}

// List returns every record, storage state left out, by key.
func (s *Store) List() ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	var out []Record
	var errs []error
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			errs = append(errs, fmt.Errorf("%s is corrupt: %w", e.Name(), err))
			continue
		}
		if r.Deleted {
			continue
		}
		r.Storage = nil
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.Key, b.Key) })
	if len(errs) > 0 {
		return out, fmt.Errorf("state: %w", errors.Join(errs...))
	}
	return out, nil
}
