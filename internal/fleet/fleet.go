// Package fleet makes several brokers one pool on Redis. It owns this
// broker's membership: a key per broker, holding its advertised address
// and load, written with a TTL and renewed by a heartbeat, so a broker
// that dies drops out when its key expires. It knows nothing of gRPC,
// leases or browsers: the broker's wiring tells it the load, and the gRPC
// edge asks it where the other brokers are.
//
// Lease ids name their owner (OwnerOf), so any broker can route a call for
// a lease to the broker that holds it.
//
// What the fleet asks of Redis scales with the fleet, not with the
// keyspace (which holds every sticky session's keys too) nor with the
// command rate: the members are listed from an index set rather than by
// SCAN, and Lookup, asked once per forwarded page command, answers from
// what it read within the last heartbeat interval.
package fleet

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// ErrUnavailable wraps every failure to reach Redis: what needs the fleet
// cannot be done now, what a broker does alone still can.
var ErrUnavailable = errors.New("fleet: Redis unreachable")

// ErrUnknownBroker: no live broker has that id.
var ErrUnknownBroker = errors.New("fleet: no live broker with that id")

// ErrDuplicateID: another live broker registers with this broker's id.
var ErrDuplicateID = errors.New("fleet: another live broker has this broker id")

// Load is what a broker tells the fleet about itself at each heartbeat.
type Load struct {
	Capacity, Active, Waiting int
	// Free is how many leases it could grant now without waiting.
	Free     int
	Draining bool
	// Principals is how many leases each principal holds (or is
	// acquiring) on the broker: the others count them toward the
	// principal's limit of live leases (PrincipalLeases).
	Principals map[string]int `json:",omitempty"`
}

// Member is a live broker as it last registered.
type Member struct {
	ID      string    `json:"id"`
	Address string    `json:"address"`
	Load    Load      `json:"load"`
	At      time.Time `json:"at"` // the heartbeat that wrote it
	// Instance is random per Fleet: a registration with this id but
	// another instance is another broker's (or an earlier process's).
	Instance string `json:"instance,omitempty"`
}

// Config configures a Fleet. Zero values mean the defaults.
type Config struct {
	// Redis is the client. Required.
	Redis *redis.Client
	// ID names this broker in the fleet and in its lease ids: 1 to 40
	// characters of a-z, 0-9 and '-'. Required (see ValidID).
	ID string
	// Address is where the other brokers reach this one. Required.
	Address string
	// Load reports this broker's load at each heartbeat. Required.
	Load func() Load
	// TTL is how long a registration lives without a heartbeat: a dead
	// broker drops out after at most this long. Default 5s.
	TTL time.Duration
	// Heartbeat is how often the registration is renewed. Default TTL/3.
	Heartbeat time.Duration
	// Sessions lists the sticky session keys whose sessions live on this
	// broker (held or warm): the heartbeat renews its ownership of them.
	// Nil: none.
	Sessions func() []string
	// Prefix starts every key. Default "browserbroker:".
	Prefix string
	// Logger; nil: no logs.
	Logger *zap.Logger
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

// ValidID reports whether id can name a broker.
func ValidID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("fleet: broker id %q: want 1 to 40 of a-z, 0-9 and '-', starting with a letter or digit", id)
	}
	return nil
}

// LeaseIDPrefix is how the lease ids of broker id begin.
func LeaseIDPrefix(id string) string { return "l_" + id + "." }

// OwnerOf returns the broker id a lease id names, or "" for the ids of a
// broker outside any fleet ("l_" and a random text, no dot).
func OwnerOf(leaseID string) string {
	rest, ok := strings.CutPrefix(leaseID, "l_")
	if !ok {
		return ""
	}
	owner, _, ok := strings.Cut(rest, ".")
	if !ok || ValidID(owner) != nil {
		return ""
	}
	return owner
}

// Fleet is this broker's membership. New makes it, Start registers it and
// starts the heartbeat, Close stops it and deregisters.
type Fleet struct {
	cfg     Config
	rdb     *redis.Client
	log     *zap.Logger
	stop    chan struct{}
	done    chan struct{}
	kick    chan struct{} // Nudge
	started sync.Once
	inst    string // Member.Instance

	mu       sync.Mutex
	healthy  bool                 // the last heartbeat reached Redis
	lastErr  error                // why not, when not
	reported bool                 // a heartbeat has run (its state was logged)
	known    map[string]knownPeer // live when last read, by id
	// membersRead is when Members last read every member into known (or
	// MembersWithin began to), and membersErr how that read failed.
	membersRead time.Time
	membersErr  error
	// claimed is the session keys this broker claimed or renewed within
	// the last TTL, by when: the ones it may still own, which Close
	// releases.
	claimed map[string]time.Time
}

// knownPeer is a registration as last read from Redis. Lookup serves it
// without asking Redis until fresh, and while Redis is unreachable; it is
// dropped once Redis says the broker is gone.
type knownPeer struct {
	m     Member
	fresh time.Time
}

// New checks cfg and makes this broker's membership, not registered yet:
// its SessionStore serves the broker's lease manager, whose load the
// registration reports, so Start comes once that manager exists.
func New(cfg Config) (*Fleet, error) {
	if cfg.Redis == nil || cfg.Load == nil || cfg.Address == "" {
		return nil, errors.New("fleet: Redis, Load and Address are required")
	}
	if err := ValidID(cfg.ID); err != nil {
		return nil, err
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 5 * time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = cfg.TTL / 3
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "browserbroker:"
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	f := &Fleet{cfg: cfg, rdb: cfg.Redis, log: cfg.Logger, stop: make(chan struct{}), done: make(chan struct{}),
		kick: make(chan struct{}, 1), known: map[string]knownPeer{}, claimed: map[string]time.Time{},
		inst: rand.Text()}
	return f, nil
}

// Start registers this broker, with its load as Config.Load reports it
// now, and starts renewing the registration. A first registration that
// fails for want of Redis is not fatal: the broker serves alone and keeps
// trying. A registration under this id by another broker is: Start waits
// for it to expire (an earlier process of this broker, killed, perhaps
// with a longer TTL), and returns ErrDuplicateID as soon as it sees it
// renewed (a live broker with the same id). Later calls do nothing.
func (f *Fleet) Start() error {
	var err error
	f.started.Do(func() {
		if err = f.awaitID(); err != nil {
			close(f.done)
			return
		}
		f.heartbeat()
		go f.loop()
	})
	return err
}

// awaitID waits until this broker's id is free to register (or Redis is
// away, which the heartbeat handles): until the registration another
// instance left expires, however long its TTL. Seeing it renewed means a
// live broker has this id.
func (f *Fleet) awaitID() error {
	var first *Member
	for {
		other, left, err := f.register()
		if err != nil || other == nil {
			return nil
		}
		dup := fmt.Errorf("%w: %q, at %s: give each broker its own --broker-id", ErrDuplicateID, f.cfg.ID, other.Address)
		switch {
		case first == nil:
			first = other
			f.log.Warn("fleet: a registration with this broker id exists; waiting for it to expire",
				zap.String("broker_id", f.cfg.ID), zap.String("address", other.Address), zap.Time("at", other.At),
				zap.Duration("expires_in", left))
		case !other.At.Equal(first.At) || other.Instance != first.Instance:
			return dup // renewed meanwhile
		}
		if left < 0 {
			return dup // it never expires
		}
		select {
		case <-time.After(min(f.cfg.Heartbeat, left+10*time.Millisecond)):
		case <-f.stop:
			return ErrDuplicateID
		}
	}
}

// ID is this broker's id.
func (f *Fleet) ID() string { return f.cfg.ID }

func (f *Fleet) memberKey(id string) string { return f.cfg.Prefix + "member:" + id }

// membersKey is the index of the member keys: the set of the ids that
// registered, pruned of those whose key has expired.
func (f *Fleet) membersKey() string { return f.cfg.Prefix + "members" }

func (f *Fleet) loop() {
	defer close(f.done)
	t := time.NewTicker(f.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			f.heartbeat()
		case <-f.kick:
			f.register() // the load only: sessions are renewed on the tick
			// At most one nudged registration per nudgeGap: under churn
			// the load is written a few times a second, not once per lease
			// event. A nudge meanwhile waits in kick, so the last load is
			// written at the gap's end.
			gap := time.NewTimer(min(nudgeGap, f.cfg.Heartbeat))
			select {
			case <-f.stop:
				gap.Stop()
				return
			case <-gap.C:
			}
		}
	}
}

// heartbeat renews this broker's registration and its sticky sessions'
// ownership.
func (f *Fleet) heartbeat() {
	if other, _, err := f.register(); err == nil && other == nil {
		ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Heartbeat)
		f.noteRedis(f.renewSessions(ctx))
		cancel()
	}
}

// register writes this broker's registration, with its load now and its
// TTL, and its id into the index of members: one round trip. Each
// heartbeat adds the id again, so an index that lost it (a Redis restart)
// has it back within a heartbeat. A registration with this id by another
// instance is left alone and returned; the fleet counts as unreachable
// meanwhile, so this broker forwards nothing under an id that is not its
// own.
func (f *Fleet) register() (other *Member, left time.Duration, err error) {
	m := Member{ID: f.cfg.ID, Address: f.cfg.Address, Load: f.cfg.Load(), At: time.Now(), Instance: f.inst}
	b, _ := json.Marshal(m)
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Heartbeat)
	defer cancel()
	res, err := registerMember.Run(ctx, f.rdb, []string{f.memberKey(f.cfg.ID), f.membersKey()},
		b, f.cfg.TTL.Milliseconds(), f.inst, f.cfg.ID).Slice()
	switch {
	case errors.Is(err, redis.Nil):
		f.noteRedis(nil)
		return nil, 0, nil
	case err == nil && len(res) != 2:
		err = fmt.Errorf("fleet: registration answered %v", res)
	}
	if err != nil {
		f.noteRedis(err)
		return nil, 0, err
	}
	other = &Member{}
	cur, _ := res[0].(string)
	if jerr := json.Unmarshal([]byte(cur), other); jerr != nil {
		other.Address = "(unreadable registration)"
	}
	ms, _ := res[1].(int64)
	f.noteRedis(fmt.Errorf("%w: %q, at %s", ErrDuplicateID, f.cfg.ID, other.Address))
	return other, time.Duration(ms) * time.Millisecond, nil
}

// registerMember sets the member key (KEYS[1]) to ARGV[1] with a TTL of
// ARGV[2] ms and adds the id ARGV[4] to the index (KEYS[2]), unless the
// key holds the registration of another instance than ARGV[3], which it
// returns instead, with its remaining TTL in ms (PTTL: -1 for none). (A
// registration without an instance, of an earlier build, is replaced.)
var registerMember = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, m = pcall(cjson.decode, cur)
  if ok and type(m) == 'table' and type(m.instance) == 'string' and m.instance ~= ARGV[3] then
    return {cur, redis.call('PTTL', KEYS[1])}
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
return false`)

// noteRedis records whether Redis answered, and logs each change between
// reaching it and not, once.
func (f *Fleet) noteRedis(err error) {
	f.mu.Lock()
	changed := !f.reported || f.healthy != (err == nil)
	f.healthy, f.lastErr, f.reported = err == nil, err, true
	f.mu.Unlock()
	switch {
	case !changed:
	case err != nil:
		f.log.Warn("fleet: out of the fleet (Redis unreachable, or this id taken); serving this broker's leases only", zap.Error(err))
	default:
		f.log.Info("fleet: registered", zap.String("broker_id", f.cfg.ID), zap.String("address", f.cfg.Address))
	}
}

// nudgeGap is the least time between two registrations that nudges ask
// for.
const nudgeGap = 100 * time.Millisecond

// Nudge asks for a heartbeat soon, without waiting for it: the load
// changed (a lease was granted or ended), and the fleet should see it
// before the next tick. Nudges while one is pending are merged, and the
// registrations they cause are at least nudgeGap apart.
func (f *Fleet) Nudge() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// Healthy reports whether the last heartbeat reached Redis, and if not,
// why.
func (f *Fleet) Healthy() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.healthy, f.lastErr
}

func (f *Fleet) unavailable(err error) error {
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// Members returns the live brokers, this one included, ordered by id: the
// ids in the index, then their registrations (two round trips, whatever
// else the keyspace holds). Ids whose registration expired are pruned from
// the index on the way.
func (f *Fleet) Members(ctx context.Context) ([]Member, error) {
	ids, err := f.rdb.SMembers(ctx, f.membersKey()).Result()
	if err != nil {
		return nil, f.membersFailed(err)
	}
	var vals []any
	if len(ids) > 0 {
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = f.memberKey(id)
		}
		if vals, err = f.rdb.MGet(ctx, keys...).Result(); err != nil {
			return nil, f.membersFailed(err)
		}
	}
	out := make([]Member, 0, len(vals))
	var expired []string
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			expired = append(expired, ids[i])
			continue
		}
		var m Member
		if json.Unmarshal([]byte(s), &m) != nil || ValidID(m.ID) != nil {
			continue
		}
		out = append(out, m)
	}
	if len(expired) > 0 {
		if err := f.prune(ctx, expired); err != nil {
			f.log.Debug("fleet: pruning expired members from the index", zap.Strings("broker_ids", expired), zap.Error(err))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	// What Redis does not list is gone. Freshness is kept, not extended:
	// MGET says a key is live now, not how long it will be.
	f.mu.Lock()
	known := make(map[string]knownPeer, len(out))
	for _, m := range out {
		known[m.ID] = knownPeer{m: m, fresh: f.known[m.ID].fresh}
	}
	f.known, f.membersRead, f.membersErr = known, time.Now(), nil
	f.mu.Unlock()
	return out, nil
}

// membersFailed records that a read of the members failed, and why; the
// members last read stay known.
func (f *Fleet) membersFailed(err error) error {
	err = f.unavailable(err)
	f.mu.Lock()
	f.membersErr = err
	f.mu.Unlock()
	return err
}

// pruneMembers removes from the index (KEYS[1]) the ids (ARGV) whose
// member key (KEYS[i+1]) does not exist, in one step, so that a broker
// that registers meanwhile is never removed: its SET and SADD run either
// before the check, which then finds its key, or after the SREM.
var pruneMembers = redis.NewScript(`
local n = 0
for i, id in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    n = n + redis.call('SREM', KEYS[1], id)
  end
end
return n`)

func (f *Fleet) prune(ctx context.Context, ids []string) error {
	keys := make([]string, 0, len(ids)+1)
	args := make([]any, len(ids))
	keys = append(keys, f.membersKey())
	for i, id := range ids {
		keys = append(keys, f.memberKey(id))
		args[i] = id
	}
	return pruneMembers.Run(ctx, f.rdb, keys, args...).Err()
}

// PrincipalLeases is how many leases principal holds on the other live
// brokers, as they last registered: a broker's lease limits count them
// beside its own. The members are read as MembersWithin a heartbeat
// interval reads them, so the count is at most about two heartbeats old;
// while Redis is away it counts the last seen.
func (f *Fleet) PrincipalLeases(principal string) int {
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Heartbeat)
	_, _ = f.MembersWithin(ctx, f.cfg.Heartbeat) // on failure: the last seen
	cancel()
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for id, k := range f.known {
		if id != f.cfg.ID {
			n += k.m.Load.Principals[principal]
		}
	}
	return n
}

// Lookup returns the live broker with that id. It is asked on every call
// routed to another broker, so it answers without a round trip from the
// registration it read within the last heartbeat interval (and within
// that registration's remaining TTL): a broker that shuts down is found
// gone at most a heartbeat interval later, one that dies when its key
// expires, as without the cache. While Redis is unreachable it answers
// from the last registration seen, however old, so calls for leases on
// brokers it already knew still find them.
func (f *Fleet) Lookup(ctx context.Context, id string) (Member, error) {
	start := time.Now()
	f.mu.Lock()
	k, ok := f.known[id]
	f.mu.Unlock()
	if ok && start.Before(k.fresh) {
		return k.m, nil
	}
	var get *redis.StringCmd
	var ttl *redis.DurationCmd
	// GET's error is the one that counts, and is read below.
	_, _ = f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, f.memberKey(id))
		ttl = p.PTTL(ctx, f.memberKey(id))
		return nil
	})
	s, err := get.Result()
	switch {
	case errors.Is(err, redis.Nil):
		f.mu.Lock()
		delete(f.known, id)
		f.mu.Unlock()
		return Member{}, fmt.Errorf("%w: %s", ErrUnknownBroker, id)
	case err != nil:
		if ok {
			return k.m, nil
		}
		return Member{}, f.unavailable(err)
	}
	var m Member
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return Member{}, fmt.Errorf("fleet: registration of %s: %w", id, err)
	}
	// Fresh for a heartbeat interval, and never past the key's expiry as
	// read (-1 or -2 when it has none, or it expired since the GET: not
	// fresh at all).
	fresh := min(f.cfg.Heartbeat, ttl.Val())
	f.mu.Lock()
	f.known[id] = knownPeer{m: m, fresh: start.Add(fresh)}
	f.mu.Unlock()
	return m, nil
}

// MembersWithin is Members for the callers that ask often (the lease
// limits, the acquires waiting in a queue, the dashboard): when a read
// began within maxAge (0: never), it answers what that read found, the
// members last seen and its error, without a round trip. One caller at a
// time reads; the others meanwhile, and every caller for maxAge after a
// failed read (Redis away), get the last answer rather than wait on Redis.
func (f *Fleet) MembersWithin(ctx context.Context, maxAge time.Duration) ([]Member, error) {
	f.mu.Lock()
	if maxAge > 0 && time.Since(f.membersRead) < maxAge {
		ms := make([]Member, 0, len(f.known))
		for _, k := range f.known {
			ms = append(ms, k.m)
		}
		err := f.membersErr
		f.mu.Unlock()
		sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
		return ms, err
	}
	f.membersRead = time.Now()
	f.mu.Unlock()
	return f.Members(ctx)
}

// PickFree returns the live broker other than this one with the most free
// capacity, not draining; false when none has room. It reads the members
// as MembersWithin(maxAge) does, so that acquires waiting in the queue can
// keep asking without a round trip each. While the last heartbeat did not
// reach Redis it fails at once with ErrUnavailable, rather than making
// each acquire wait for Redis to time out.
func (f *Fleet) PickFree(ctx context.Context, maxAge time.Duration) (Member, bool, error) {
	if ok, err := f.Healthy(); !ok && err != nil {
		return Member{}, false, f.unavailable(err)
	}
	ms, err := f.MembersWithin(ctx, maxAge)
	if err != nil {
		return Member{}, false, err
	}
	var best Member
	found := false
	for _, m := range ms {
		if m.ID == f.cfg.ID || m.Load.Draining || m.Load.Free <= 0 {
			continue
		}
		if !found || m.Load.Free > best.Load.Free {
			best, found = m, true
		}
	}
	return best, found, nil
}

// Close stops the heartbeat, removes the registration and gives up the
// sticky sessions this broker owns, so the others stop sending work here,
// and restore those sessions from their saved state, at once rather than
// after the TTL. The caller has closed the sessions (and saved them)
// first. What another broker (or instance) owns is left alone.
func (f *Fleet) Close() error {
	f.started.Do(func() { close(f.done) }) // never started: no loop to wait for
	close(f.stop)
	<-f.done
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	keys := []string{f.memberKey(f.cfg.ID), f.membersKey()}
	f.mu.Lock()
	for k := range f.claimed {
		keys = append(keys, f.ownerKey(k))
	}
	f.mu.Unlock()
	if err := leave.Run(ctx, f.rdb, keys, f.inst, f.cfg.ID).Err(); err != nil {
		return f.unavailable(err)
	}
	return nil
}

// leave removes the member key (KEYS[1]) and the id ARGV[2] from the index
// (KEYS[2]) if the key is instance ARGV[1]'s registration, and the session
// owner keys (KEYS[3...]) that name the broker ARGV[2].
var leave = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, m = pcall(cjson.decode, cur)
  if ok and type(m) == 'table' and m.instance == ARGV[1] then
    redis.call('DEL', KEYS[1])
    redis.call('SREM', KEYS[2], ARGV[2])
  end
end
for i = 3, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[2] then redis.call('DEL', KEYS[i]) end
end
return 0`)
