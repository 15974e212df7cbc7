package lease

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"
)

// Sticky sessions. A session key names a session that outlives its leases:
// one lease holds it at a time, and between leases its session stays open
// ("warm") for Config.SessionIdleTTL. The key is a lock with a FIFO line;
// whoever owns it (an acquire, then its lease; a closing warm session; a
// delete) is the only one that may touch the key's session. The manager
// saves a session (Saver) when its lease ends and before it closes it,
// unless the session was lost or is being deleted.
//
// Capacity: a warm session keeps the unit of capacity its lease had, so
// active + opening + warm never exceeds Capacity. When an acquire waits
// for capacity, the oldest warm sessions nobody owns are closed to make
// room.

// SessionStore keeps what outlives the broker for sticky sessions.
type SessionStore interface {
	// NextGeneration durably records and returns the key's next
	// generation: one more than the last one it returned for the key, ever.
	NextGeneration(key string) (uint64, error)
	// Forget removes the key's saved state and says whether there was
	// any. The generation stays, so a fencing number is never reused.
	Forget(key string) (bool, error)
}

// Saver is a Session whose state can be saved, so that a new session for
// the same key can start from it.
type Saver interface {
	Save(ctx context.Context) error
}

// MaxSessionKey is the longest session key, in bytes.
const MaxSessionKey = 200

// sticky is one session key's record, under Manager.mu. It exists while
// the key is owned, waited for, or has a warm session.
type sticky struct {
	key      string
	owned    bool         // see the package comment on sticky sessions
	waiters  []*keyWaiter // in line for the key
	holder   *Lease       // the lease holding the session, if any
	deleting int          // deletes under way: no saving, no warm keeping
	gen      uint64       // the last generation granted by this process

	warm      Session       // the open session between leases
	warmSince time.Time     // when it became warm
	warmTimer *time.Timer   // closes it after SessionIdleTTL
	warmStop  chan struct{} // closed when it stops being warm
	closing   Session       // the warm session being closed, for the auditor
}

type keyWaiter struct {
	ready  chan struct{} // closed once the waiter owns the key, or err is set
	err    error
	pos    chan int // latest position in line, buffer of one
	delete bool     // a delete: it stays in line through drain and shutdown
}

func checkSessionKey(k string) error {
	if len(k) > MaxSessionKey {
		return fmt.Errorf("%w: session_key is %d bytes, over %d", ErrInvalid, len(k), MaxSessionKey)
	}
	if !utf8.ValidString(k) {
		return fmt.Errorf("%w: session_key is not UTF-8", ErrInvalid)
	}
	for _, r := range k {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: session_key holds the unprintable %U", ErrInvalid, r)
		}
	}
	return nil
}

// lockKey makes the caller the key's owner, in line behind the owner and
// earlier waiters (or ahead of the waiters, for a delete), until timeout
// fires or ctx ends. onQueued, if not nil, hears the position in line.
func (m *Manager) lockKey(ctx context.Context, key string, timeout <-chan time.Time, onQueued func(int)) (*sticky, error) {
	m.mu.Lock()
	if err := m.refuseLocked(); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	n, w := m.queueForKeyLocked(key, false)
	m.mu.Unlock()
	return n, m.awaitKey(ctx, n, w, timeout, onQueued)
}

// queueForKeyLocked makes the caller the key's owner (w is nil) or puts it
// in line: at the back, or at the front for a delete.
func (m *Manager) queueForKeyLocked(key string, isDelete bool) (*sticky, *keyWaiter) {
	n := m.sticky[key]
	if n == nil {
		n = &sticky{key: key}
		m.sticky[key] = n
	}
	if !n.owned {
		n.owned = true
		return n, nil
	}
	w := &keyWaiter{ready: make(chan struct{}), pos: make(chan int, 1), delete: isDelete}
	if isDelete {
		n.waiters = slices.Insert(n.waiters, 0, w)
		m.notifyKeyLocked(n, 0) // everyone moved back one
	} else {
		n.waiters = append(n.waiters, w)
		m.notifyKeyLocked(n, len(n.waiters)-1) // only the newcomer's place is news
	}
	return n, w
}

// awaitKey waits until w owns the key (nil w: it does already).
func (m *Manager) awaitKey(ctx context.Context, n *sticky, w *keyWaiter, timeout <-chan time.Time, onQueued func(int)) error {
	if w == nil {
		return nil
	}
	var err error
	for err == nil {
		select {
		case <-w.ready:
			return w.err
		case p := <-w.pos:
			if onQueued != nil {
				onQueued(p)
			}
		case <-ctx.Done():
			err = context.Cause(ctx)
		case <-timeout:
			err = fmt.Errorf("%w: session %q stayed held by another lease", ErrNoCapacity, n.key)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-w.ready:
		if w.err != nil {
			return w.err
		}
		m.unlockKeyLocked(n) // handed to us in the same instant: pass it on
	default:
		i := slices.Index(n.waiters, w)
		n.waiters = slices.Delete(n.waiters, i, i+1)
		m.notifyKeyLocked(n, i)
		m.forgetIdleLocked(n)
	}
	return err
}

// unlockKeyLocked hands the key to the next in line, or frees it.
func (m *Manager) unlockKeyLocked(n *sticky) {
	if len(n.waiters) > 0 {
		w := n.waiters[0]
		n.waiters = slices.Delete(n.waiters, 0, 1)
		close(w.ready)
		m.notifyKeyLocked(n, 0)
		return
	}
	n.owned = false
	m.forgetIdleLocked(n)
}

// forgetIdleLocked drops the key's record when nothing refers to it.
func (m *Manager) forgetIdleLocked(n *sticky) {
	if !n.owned && len(n.waiters) == 0 && n.warm == nil && n.holder == nil {
		delete(m.sticky, n.key)
	}
}

// notifyKeyLocked tells the key's waiters from index from on their place
// in line. Callers pass the first index whose place changed, so that a
// waiter hears of each change once and of no non-change (the queued
// positions a client streams).
func (m *Manager) notifyKeyLocked(n *sticky, from int) {
	for i := from; i < len(n.waiters); i++ {
		w := n.waiters[i]
		select {
		case <-w.pos:
		default:
		}
		w.pos <- i + 1
	}
}

// failKeyWaitersLocked sends every acquire in line for a key away with err.
func (m *Manager) failKeyWaitersLocked(err error) {
	for _, n := range m.sticky {
		kept := n.waiters[:0]
		for _, w := range n.waiters {
			if w.delete {
				kept = append(kept, w)
				continue
			}
			w.err = err
			close(w.ready)
		}
		clear(n.waiters[len(kept):])
		n.waiters = kept
		m.notifyKeyLocked(n, 0)
	}
}

// takeWarmLocked takes the key's warm session out of the warm set. The
// caller owns the key, and the session's unit of capacity: it stays in
// m.warm until closed, or moves to m.opening for a new lease.
func (m *Manager) takeWarmLocked(n *sticky) Session {
	s := n.warm
	if s == nil {
		return nil
	}
	n.warm = nil
	n.warmTimer.Stop()
	close(n.warmStop)
	return s
}

// parkLocked makes s the key's warm session: the ending lease's unit of
// capacity becomes the warm session's.
func (m *Manager) parkLocked(n *sticky, s Session) {
	n.warm = s
	n.warmSince = time.Now()
	stop := make(chan struct{})
	n.warmStop = stop
	m.warm++
	n.warmTimer = time.AfterFunc(m.cfg.SessionIdleTTL, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.closeWarmLocked(n, s, true, "idle for "+m.cfg.SessionIdleTTL.String())
	})
	go func() {
		select {
		case <-s.Lost():
			_, why := s.LostReason()
			m.mu.Lock()
			defer m.mu.Unlock()
			m.closeWarmLocked(n, s, false, "lost: "+why)
		case <-stop:
		}
	}()
}

// closeWarmLocked begins closing the key's warm session s, if it is still
// warm and nobody owns the key; the closer owns the key until it is closed.
func (m *Manager) closeWarmLocked(n *sticky, s Session, save bool, why string) bool {
	if n.warm != s || n.owned {
		return false
	}
	n.owned = true
	m.beginCloseWarmLocked(n)
	m.reclaims.Add(1)
	go func() {
		defer m.reclaims.Done()
		m.closeWarm(n, s, save, why)
		m.mu.Lock()
		m.unlockKeyLocked(n)
		m.mu.Unlock()
	}()
	return true
}

// beginCloseWarmLocked takes the key's warm session out to close it; the
// caller owns the key and then calls closeWarm.
func (m *Manager) beginCloseWarmLocked(n *sticky) Session {
	s := m.takeWarmLocked(n)
	if s != nil {
		n.closing = s
		m.warmClosing++
	}
	return s
}

// closeWarm closes a warm session taken out by beginCloseWarmLocked,
// saving it first when asked, and frees its unit of capacity. It is the one
// place a warm session is closed.
func (m *Manager) closeWarm(n *sticky, s Session, save bool, why string) {
	var saveErr error
	if save {
		saveErr = m.save(s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CloseTimeout)
	err := s.Close(ctx)
	cancel()

	m.mu.Lock()
	n.closing = nil
	m.warm--
	m.warmClosing--
	m.dispatchLocked()
	m.mu.Unlock()
	m.changed()
	fields := []zap.Field{zap.String("session_key", n.key), zap.String("why", why)}
	if saveErr != nil {
		fields = append(fields, zap.NamedError("save_error", saveErr))
	}
	if err != nil {
		m.log.Warn("warm session closed; closing failed", append(fields, zap.Error(err))...)
		return
	}
	m.log.Info("warm session closed", fields...)
}

// evictLocked closes the oldest warm sessions nobody owns while acquires
// wait for capacity that they hold.
func (m *Manager) evictLocked() {
	free := m.cfg.Capacity - m.active - m.opening - m.warm
	need := len(m.queue) - max(free, 0) - m.warmClosing
	for ; need > 0; need-- {
		var oldest *sticky
		for _, n := range m.sticky {
			if n.warm != nil && !n.owned && (oldest == nil || n.warmSince.Before(oldest.warmSince)) {
				oldest = n
			}
		}
		if oldest == nil {
			return
		}
		m.closeWarmLocked(oldest, oldest.warm, true, "evicted: an acquire needs the capacity")
	}
}

// save saves a session's state, if it can be saved.
func (m *Manager) save(s Session) error {
	sv, ok := s.(Saver)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CloseTimeout)
	defer cancel()
	return sv.Save(ctx)
}

// keepable says whether a lease's session may be saved and kept warm
// after the lease: not when it crashed or was lost.
func keepable(l *Lease) bool {
	if l.reason == BrowserCrashed || l.reason == PageCrashed {
		return false
	}
	select {
	case <-l.session.Lost():
		return false
	default:
		return true
	}
}

// SessionState is where a sticky session is.
type SessionState int

const (
	// SessionHeld: a lease holds it.
	SessionHeld SessionState = iota + 1
	// SessionWarm: open between leases.
	SessionWarm
	// SessionIdle: neither (acquires wait for it, or it is being opened
	// or closed).
	SessionIdle
)

// SessionInfo describes a sticky session the manager knows.
type SessionInfo struct {
	Key        string
	State      SessionState
	LeaseID    string    // the holder (SessionHeld)
	Generation uint64    // the last generation this process granted; 0: none
	ClosesAt   time.Time // when a warm session closes unless leased
	Waiting    int
}

// Sessions describes the sticky sessions the manager knows, by key.
func (m *Manager) Sessions() []SessionInfo {
	m.mu.Lock()
	out := make([]SessionInfo, 0, len(m.sticky))
	for _, n := range m.sticky {
		si := SessionInfo{Key: n.key, State: SessionIdle, Generation: n.gen, Waiting: len(n.waiters)}
		switch {
		case n.holder != nil:
			si.State, si.LeaseID = SessionHeld, n.holder.id
		case n.warm != nil:
			si.State, si.ClosesAt = SessionWarm, n.warmSince.Add(m.cfg.SessionIdleTTL)
		}
		out = append(out, si)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b SessionInfo) int {
		switch {
		case a.Key < b.Key:
			return -1
		case a.Key > b.Key:
			return 1
		}
		return 0
	})
	return out
}

// DeleteSession ends the sticky session: its lease, if one holds it, is
// reclaimed with Revoked (the reason it ended for is returned), its warm
// session closed without saving, its saved state forgotten. It waits for
// acquires already in line for the key. ErrNotFound if neither the
// manager nor the store knows the key.
func (m *Manager) DeleteSession(ctx context.Context, key string) (Reason, error) {
	if err := checkSessionKey(key); err != nil {
		return ReasonUnspecified, err
	}
	// In one step: no saving or keeping from now on, the holder's reclaim
	// begun, and first in line for the key.
	m.mu.Lock()
	_, known := m.sticky[key]
	n, w := m.queueForKeyLocked(key, true)
	n.deleting++
	held := n.holder
	if held != nil {
		m.reclaimLocked(held, Revoked, "session deleted")
	}
	m.mu.Unlock()
	reason := ReasonUnspecified
	if held != nil {
		<-held.done
		reason = held.reason // written before done was closed
	}
	if err := m.awaitKey(ctx, n, w, nil, nil); err != nil {
		m.mu.Lock()
		n.deleting--
		m.forgetIdleLocked(n)
		m.mu.Unlock()
		return reason, err
	}
	m.mu.Lock()
	s := m.beginCloseWarmLocked(n)
	m.mu.Unlock()
	if s != nil {
		known = true
		m.closeWarm(n, s, false, "session deleted")
	}
	stored, err := m.store.Forget(key)
	m.mu.Lock()
	n.deleting--
	m.unlockKeyLocked(n)
	m.mu.Unlock()
	switch {
	case err != nil:
		return reason, fmt.Errorf("%w: forgetting session %q: %w", ErrBackend, key, err)
	case !known && !stored:
		return reason, fmt.Errorf("%w: no session %q", ErrNotFound, key)
	}
	m.log.Info("session deleted", zap.String("session_key", key), zap.Stringer("lease_reason", reason))
	return reason, nil
}

// memStore is the SessionStore of a manager given none: generations in
// memory, nothing saved.
type memStore struct {
	mu   sync.Mutex
	gens map[string]uint64
}

func (s *memStore) NextGeneration(key string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gens == nil {
		s.gens = make(map[string]uint64)
	}
	s.gens[key]++
	return s.gens[key], nil
}

func (s *memStore) Forget(key string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.gens[key]
	return ok, nil
}
