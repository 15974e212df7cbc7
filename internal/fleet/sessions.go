package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/browserbroker/broker/internal/state"
)

// Sticky sessions fleet-wide. A session key has at most one owner broker
// at a time: a key in Redis set with NX and an expiry, renewed by the
// owner's heartbeat while the session lives there (held or warm). Its
// fencing generation is an INCR counter that is never reset, and its
// storage state is saved in Redis on every lease end, so when its owner
// dies the key expires and any broker restores the session from the last
// save, with the next generation.
//
// Sessions implements the lease manager's SessionStore and what the
// broker's backend and admin service read of saved sessions, like the
// single broker's state.Store.

const opTimeout = 3 * time.Second

func (f *Fleet) ownerKey(key string) string { return f.cfg.Prefix + "session-owner:" + key }
func (f *Fleet) genKey(key string) string   { return f.cfg.Prefix + "session-gen:" + key }
func (f *Fleet) stateKey(key string) string { return f.cfg.Prefix + "session-state:" + key }

// ClaimSession makes this broker the owner of a session key if it has
// none, and returns the owner: this broker's id, or another's.
func (f *Fleet) ClaimSession(ctx context.Context, key string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	ok, err := f.rdb.SetNX(ctx, f.ownerKey(key), f.cfg.ID, f.cfg.TTL).Result()
	if err != nil {
		return "", f.unavailable(err)
	}
	if ok {
		return f.cfg.ID, nil
	}
	owner, err := f.rdb.Get(ctx, f.ownerKey(key)).Result()
	if errors.Is(err, redis.Nil) { // expired between the two: try once more
		return f.ClaimSession(ctx, key)
	}
	if err != nil {
		return "", f.unavailable(err)
	}
	if owner == f.cfg.ID {
		f.rdb.PExpire(ctx, f.ownerKey(key), f.cfg.TTL)
	}
	return owner, nil
}

// renewOwned extends this broker's ownership of the keys whose sessions
// live here; a key another broker owns is left alone.
var renewOwned = redis.NewScript(`
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2]) end
end
return 0`)

func (f *Fleet) renewSessions(ctx context.Context) error {
	if f.cfg.Sessions == nil {
		return nil
	}
	keys := f.cfg.Sessions()
	for len(keys) > 0 {
		n := min(len(keys), 500)
		ks := make([]string, n)
		for i, k := range keys[:n] {
			ks[i] = f.ownerKey(k)
		}
		if err := renewOwned.Run(ctx, f.rdb, ks, f.cfg.ID, f.cfg.TTL.Milliseconds()).Err(); err != nil {
			return err
		}
		keys = keys[n:]
	}
	return nil
}

// SessionStore returns the fleet's store of sticky sessions' generations
// and storage state.
func (f *Fleet) SessionStore() *Sessions { return &Sessions{f: f} }

// Sessions keeps sticky sessions' generations and storage state in Redis.
type Sessions struct{ f *Fleet }

type savedState struct {
	SavedAt time.Time       `json:"saved_at"`
	Storage json.RawMessage `json:"storage_state"`
}

// NextGeneration increments the key's generation (INCR: never reused).
func (s *Sessions) NextGeneration(key string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	n, err := s.f.rdb.Incr(ctx, s.f.genKey(key)).Result()
	if err != nil {
		return 0, s.f.unavailable(err)
	}
	return uint64(n), nil
}

// SaveStorage saves the key's storage state.
func (s *Sessions) SaveStorage(key string, storage []byte) error {
	if len(storage) > state.MaxStorage {
		return fmt.Errorf("fleet: storage state of %d bytes is over the %d limit", len(storage), state.MaxStorage)
	}
	b, err := json.Marshal(savedState{SavedAt: time.Now(), Storage: storage})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := s.f.rdb.Set(ctx, s.f.stateKey(key), b, 0).Err(); err != nil {
		return s.f.unavailable(err)
	}
	return nil
}

// Get returns the key's record: its generation and saved storage state.
func (s *Sessions) Get(key string) (state.Record, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	vals, err := s.f.rdb.MGet(ctx, s.f.genKey(key), s.f.stateKey(key)).Result()
	if err != nil {
		return state.Record{}, false, s.f.unavailable(err)
	}
	return record(key, vals[0], vals[1])
}

func record(key string, gen, saved any) (state.Record, bool, error) {
	r := state.Record{Key: key}
	if g, ok := gen.(string); ok {
		n, err := strconv.ParseUint(g, 10, 64)
		if err != nil {
			return r, false, fmt.Errorf("fleet: generation of %q: %w", key, err)
		}
		r.Generation = n
	}
	if v, ok := saved.(string); ok {
		var st savedState
		if err := json.Unmarshal([]byte(v), &st); err != nil {
			return r, false, fmt.Errorf("fleet: saved state of %q: %w", key, err)
		}
		r.SavedAt, r.Storage = st.SavedAt, st.Storage
	}
	return r, gen != nil || saved != nil, nil
}

// Forget removes the key's saved state; the generation stays.
func (s *Sessions) Forget(key string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	n, err := s.f.rdb.Del(ctx, s.f.stateKey(key)).Result()
	if err != nil {
		return false, s.f.unavailable(err)
	}
	return n > 0, nil
}

// List returns the records of every key with a generation, by key.
func (s *Sessions) List() ([]state.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	prefix := s.f.genKey("")
	var keys []string
	iter := s.f.rdb.Scan(ctx, 0, prefix+"*", 200).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, strings.TrimPrefix(iter.Val(), prefix))
	}
	if err := iter.Err(); err != nil {
		return nil, s.f.unavailable(err)
	}
	sort.Strings(keys)
	var out []state.Record
	var errs []error
	for _, k := range keys {
		r, ok, err := s.Get(k)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			out = append(out, r)
		}
	}
	return out, errors.Join(errs...)
}

// SessionOwner returns the broker that owns a session key; "" when none
// does.
func (f *Fleet) SessionOwner(ctx context.Context, key string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	owner, err := f.rdb.Get(ctx, f.ownerKey(key)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", f.unavailable(err)
	}
	return owner, nil
}
