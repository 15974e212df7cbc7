package lease

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// fakeBackend is a Backend whose sessions are counters. Tests steer it
// through its fields.
type fakeBackend struct {
	mu       sync.Mutex
	live     int
	maxLive  int // most sessions live at once
	sessions []*fakeSession
	openErr  error         // Open fails with it, when set
	openGate chan struct{} // Open waits for it, when set
	// closeHang makes Close wait for its context to end.
	closeHang atomic.Bool
	// saveErr makes Save fail with it, when set.
	saveErr atomic.Pointer[error]
}

type fakeSession struct {
	b          *fakeBackend
	closeCalls atomic.Int32
	lost       chan struct{}
	lostOnce   sync.Once
	lostReason Reason
	lostMsg    string
	saves      atomic.Int32 // Save calls
	saveAfter  atomic.Int32 // Save calls after Close: a bug
}

// Save makes fake sessions Savers, so sticky sessions get saved.
func (s *fakeSession) Save(ctx context.Context) error {
	s.saves.Add(1)
	if s.closeCalls.Load() > 0 {
		s.saveAfter.Add(1)
		return errors.New("fake: saved after close")
	}
	if err := s.b.saveErr.Load(); err != nil {
		return *err
	}
	return nil
}

func (b *fakeBackend) Open(ctx context.Context, spec any) (Session, error) {
	b.mu.Lock()
	gate, err := b.openGate, b.openErr
	b.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	s := &fakeSession{b: b, lost: make(chan struct{})}
	b.mu.Lock()
	b.live++
	b.maxLive = max(b.maxLive, b.live)
	b.sessions = append(b.sessions, s)
	b.mu.Unlock()
	return s, nil
}

func (b *fakeBackend) Live() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.live
}

func (b *fakeBackend) opened() []*fakeSession {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*fakeSession(nil), b.sessions...)
}

var errCloseTimeout = errors.New("fake: close timed out")

func (s *fakeSession) Close(ctx context.Context) error {
	if s.closeCalls.Add(1) > 1 {
		return errors.New("fake: closed twice")
	}
	s.b.mu.Lock()
	s.b.live--
	s.b.mu.Unlock()
	if s.b.closeHang.Load() {
		<-ctx.Done()
		return errCloseTimeout
	}
	return nil
}

func (s *fakeSession) Lost() <-chan struct{} { return s.lost }

func (s *fakeSession) LostReason() (Reason, string) { return s.lostReason, s.lostMsg }

func (s *fakeSession) crash(r Reason, msg string) {
	s.lostOnce.Do(func() {
		s.lostReason, s.lostMsg = r, msg
		close(s.lost)
	})
}
