// Package fleet makes several brokers one pool on Redis. It owns this
// broker's membership: a key per broker, holding its advertised address
// and load, written with a TTL and renewed by a heartbeat, so a broker
// that dies drops out when its key expires. It knows nothing of gRPC,
// leases or browsers: the broker's wiring tells it the load, and the gRPC
// edge asks it where the other brokers are.
//
// Lease ids name their owner (OwnerOf), so any broker can route a call for
// a lease to the broker that holds it.
package fleet

import (
	"context"
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

// Load is what a broker tells the fleet about itself at each heartbeat.
type Load struct {
	Capacity, Active, Waiting int
	// Free is how many leases it could grant now without waiting.
	Free     int
	Draining bool
}

// Member is a live broker as it last registered.
type Member struct {
	ID      string    `json:"id"`
	Address string    `json:"address"`
	Load    Load      `json:"load"`
	At      time.Time `json:"at"` // the heartbeat that wrote it
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

// Fleet is this broker's membership. New registers it and starts the
// heartbeat; Close stops it and deregisters.
type Fleet struct {
	cfg  Config
	rdb  *redis.Client
	log  *zap.Logger
	stop chan struct{}
	done chan struct{}
	kick chan struct{} // Nudge

	mu       sync.Mutex
	healthy  bool              // the last heartbeat reached Redis
	lastErr  error             // why not, when not
	reported bool              // a heartbeat has run (its state was logged)
	known    map[string]Member // last seen, for routing while Redis is away
}

// New registers this broker and starts renewing the registration. A
// first registration that fails is not fatal: the broker serves alone and
// keeps trying.
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
		kick: make(chan struct{}, 1), known: map[string]Member{}}
	f.heartbeat()
	go f.loop()
	return f, nil
}

// ID is this broker's id.
func (f *Fleet) ID() string { return f.cfg.ID }

func (f *Fleet) memberKey(id string) string { return f.cfg.Prefix + "member:" + id }

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
		}
	}
}

// heartbeat renews this broker's registration and its sticky sessions'
// ownership.
func (f *Fleet) heartbeat() {
	if err := f.register(); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Heartbeat)
		f.noteRedis(f.renewSessions(ctx))
		cancel()
	}
}

// register writes this broker's registration, with its load now and its
// TTL.
func (f *Fleet) register() error {
	m := Member{ID: f.cfg.ID, Address: f.cfg.Address, Load: f.cfg.Load(), At: time.Now()}
	b, _ := json.Marshal(m)
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Heartbeat)
	defer cancel()
	err := f.rdb.Set(ctx, f.memberKey(f.cfg.ID), b, f.cfg.TTL).Err()
	f.noteRedis(err)
	return err
}

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
		f.log.Warn("fleet: Redis unreachable; serving this broker's leases only", zap.Error(err))
	default:
		f.log.Info("fleet: registered", zap.String("broker_id", f.cfg.ID), zap.String("address", f.cfg.Address))
	}
}

// Refresh renews the registration now, with the load as it is now,
// rather than at the next heartbeat: when the broker's lease manager has
// just started, say, so the fleet does not see it full until then.
func (f *Fleet) Refresh() { f.heartbeat() }

// Nudge asks for a heartbeat soon, without waiting for it: the load
// changed (a lease was granted or ended), and the fleet should see it
// before the next tick. Nudges while one is pending are merged.
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

// Members returns the live brokers, this one included, ordered by id.
func (f *Fleet) Members(ctx context.Context) ([]Member, error) {
	var keys []string
	iter := f.rdb.Scan(ctx, 0, f.memberKey("*"), 100).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, f.unavailable(err)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	vals, err := f.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, f.unavailable(err)
	}
	out := make([]Member, 0, len(vals))
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue // expired between SCAN and MGET
		}
		var m Member
		if json.Unmarshal([]byte(s), &m) != nil || ValidID(m.ID) != nil {
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	f.mu.Lock()
	for _, m := range out {
		f.known[m.ID] = m
	}
	f.mu.Unlock()
	return out, nil
}

// Lookup returns the live broker with that id. While Redis is unreachable
// it answers from the last registration seen, so calls for leases on
// brokers it already knew still find them.
func (f *Fleet) Lookup(ctx context.Context, id string) (Member, error) {
	s, err := f.rdb.Get(ctx, f.memberKey(id)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return Member{}, fmt.Errorf("%w: %s", ErrUnknownBroker, id)
	case err != nil:
		f.mu.Lock()
		m, ok := f.known[id]
		f.mu.Unlock()
		if ok {
			return m, nil
		}
		return Member{}, f.unavailable(err)
	}
	var m Member
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return Member{}, fmt.Errorf("fleet: registration of %s: %w", id, err)
	}
	f.mu.Lock()
	f.known[id] = m
	f.mu.Unlock()
	return m, nil
}

// PickFree returns the live broker other than this one with the most free
// capacity, not draining; false when none has room.
func (f *Fleet) PickFree(ctx context.Context) (Member, bool, error) {
	ms, err := f.Members(ctx)
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

// Close stops the heartbeat and removes the registration, so the others
// stop sending work here at once rather than after the TTL.
func (f *Fleet) Close() error {
	close(f.stop)
	<-f.done
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := f.rdb.Del(ctx, f.memberKey(f.cfg.ID)).Err(); err != nil {
		return f.unavailable(err)
	}
	return nil
}
