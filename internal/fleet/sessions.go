package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
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
//
// The keys with a generation are indexed in a set (sessionsKey), added by
// the INCR that creates them, so listing them does not SCAN the keyspace.
// Generations are never removed, so neither are their keys from the set.

const opTimeout = 3 * time.Second

func (f *Fleet) ownerKey(key string) string { return f.cfg.Prefix + "session-owner:" + key }
func (f *Fleet) genKey(key string) string   { return f.cfg.Prefix + "session-gen:" + key }
func (f *Fleet) stateKey(key string) string { return f.cfg.Prefix + "session-state:" + key }

// savedKey holds when the key's state was saved, beside the state itself,
// so that listing sessions reads a timestamp, not every saved state.
func (f *Fleet) savedKey(key string) string { return f.cfg.Prefix + "session-saved:" + key }

// sessionsKey is the index of the session keys with a generation.
func (f *Fleet) sessionsKey() string { return f.cfg.Prefix + "sessions" }

// ClaimSession makes this broker the owner of a session key if it has
// none, and returns the owner: this broker's id, or another's. One round
// trip.
func (f *Fleet) ClaimSession(ctx context.Context, key string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	owner, err := claimOwner.Run(ctx, f.rdb, []string{f.ownerKey(key)}, f.cfg.ID, f.cfg.TTL.Milliseconds()).Text()
	if err != nil {
		return "", f.unavailable(err)
	}
	if owner == f.cfg.ID {
		f.mu.Lock()
		f.claimed[key] = time.Now()
		f.mu.Unlock()
	}
	return owner, nil
}

// claimOwner sets the owner key (KEYS[1]) to ARGV[1] with a TTL of ARGV[2]
// ms if it has no owner, renews it if ARGV[1] owns it already, and returns
// the owner. In one step, so no claim sees the key expire between its
// check and its read.
var claimOwner = redis.NewScript(`
local owner = redis.call('GET', KEYS[1])
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
if owner == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return owner`)

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
	now := time.Now()
	f.mu.Lock()
	for _, k := range keys {
		f.claimed[k] = now
	}
	for k, at := range f.claimed {
		if now.Sub(at) > f.cfg.TTL {
			delete(f.claimed, k) // expired unless another instance renews it
		}
	}
	f.mu.Unlock()
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

// Sessions keeps sticky sessions' generations and storage state in Redis:
// per key, the generation (genKey), the storage state as Playwright gave
// it (stateKey) and when it was saved (savedKey).
type Sessions struct{ f *Fleet }

// NextGeneration increments the key's generation (INCR: never reused)
// and indexes the key, in one round trip.
func (s *Sessions) NextGeneration(key string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var incr *redis.IntCmd
	_, err := s.f.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		incr = p.Incr(ctx, s.f.genKey(key))
		p.SAdd(ctx, s.f.sessionsKey(), key)
		return nil
	})
	if err != nil {
		return 0, s.f.unavailable(err)
	}
	return uint64(incr.Val()), nil
}

// SaveStorage saves the key's storage state, and when, in one step.
func (s *Sessions) SaveStorage(key string, storage []byte) error {
	if len(storage) > state.MaxStorage {
		return fmt.Errorf("fleet: storage state of %d bytes is over the %d limit", len(storage), state.MaxStorage)
	}
	if !json.Valid(storage) {
		return fmt.Errorf("fleet: storage state of %q is not JSON", key)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := s.f.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.f.stateKey(key), storage, 0)
		p.Set(ctx, s.f.savedKey(key), time.Now().UTC().Format(time.RFC3339Nano), 0)
		return nil
	}); err != nil {
		return s.f.unavailable(err)
	}
	return nil
}

// Get returns the key's record: its generation and saved storage state.
func (s *Sessions) Get(key string) (state.Record, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	vals, err := s.f.rdb.MGet(ctx, s.f.genKey(key), s.f.savedKey(key), s.f.stateKey(key)).Result()
	if err != nil {
		return state.Record{}, false, s.f.unavailable(err)
	}
	r, err := record(key, vals[0], vals[1])
	if st, ok := vals[2].(string); ok && err == nil {
		if !json.Valid([]byte(st)) {
			return r, false, fmt.Errorf("fleet: saved state of %q is not JSON", key)
		}
		r.Storage = json.RawMessage(st)
	}
	return r, vals[0] != nil || vals[2] != nil, err
}

// record is a key's generation and save time, from the values of its
// genKey and savedKey (nil: none).
func record(key string, gen, saved any) (state.Record, error) {
	r := state.Record{Key: key}
	if g, ok := gen.(string); ok {
		n, err := strconv.ParseUint(g, 10, 64)
		if err != nil {
			return r, fmt.Errorf("fleet: generation of %q: %w", key, err)
		}
		r.Generation = n
	}
	if v, ok := saved.(string); ok {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return r, fmt.Errorf("fleet: save time of %q: %w", key, err)
		}
		r.SavedAt = t
	}
	return r, nil
}

// Forget removes the key's saved state; the generation stays.
func (s *Sessions) Forget(key string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var del *redis.IntCmd
	if _, err := s.f.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		del = p.Del(ctx, s.f.stateKey(key))
		p.Del(ctx, s.f.savedKey(key))
		return nil
	}); err != nil {
		return false, s.f.unavailable(err)
	}
	return del.Val() > 0, nil
}

// listBatch is how many sessions one MGET of List reads: a generation and
// a timestamp each.
const listBatch = 500

// List returns the records of every key with a generation, by key, storage
// state left out (as state.Store's): the generation and when the state was
// saved, never the saved states themselves. The keys come from the index;
// their records are read listBatch at a time, one round trip each, each
// within opTimeout.
func (s *Sessions) List() ([]state.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	keys, err := s.f.rdb.SMembers(ctx, s.f.sessionsKey()).Result() // the index: whatever else the keyspace holds
	cancel()
	if err != nil {
		return nil, s.f.unavailable(err)
	}
	sort.Strings(keys)
	var out []state.Record
	var errs []error
	for batch := range slices.Chunk(keys, listBatch) {
		rkeys := make([]string, 0, 2*len(batch))
		for _, k := range batch {
			rkeys = append(rkeys, s.f.genKey(k), s.f.savedKey(k))
		}
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		vals, err := s.f.rdb.MGet(ctx, rkeys...).Result()
		cancel()
		if err != nil {
			return nil, s.f.unavailable(err)
		}
		for i, k := range batch {
			if vals[2*i] == nil {
				continue // not a key with a generation
			}
			r, err := record(k, vals[2*i], vals[2*i+1])
			if err != nil {
				errs = append(errs, err)
				continue
			}
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
