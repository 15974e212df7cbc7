package dashboard

import (
	"context"
	"sync"
	"time"
)

// thumbnailMaxAge is how long a thumbnail is served before another is
// taken: at most one screenshot per lease per second.
const thumbnailMaxAge = time.Second

// thumbnails caches each lease's last thumbnail. Requests for a lease
// whose thumbnail is under a second old get it; requests while one is
// being taken wait for that one. So each lease gets at most one screenshot
// a second, however many dashboards watch it.
type thumbnails struct {
	shoot   func(ctx context.Context, id string) ([]byte, error)
	timeout time.Duration
	now     func() time.Time
	ctx     context.Context // ends at close: shots in flight stop
	cancel  context.CancelFunc
	shots   sync.WaitGroup

	mu     sync.Mutex
	leases map[string]*thumbnail
}

// thumbnail is one screenshot of a lease, taken or being taken.
type thumbnail struct {
	started time.Time
	done    chan struct{} // closed once data and err are set
	data    []byte
	err     error
}

func newThumbnails(shoot func(context.Context, string) ([]byte, error), timeout time.Duration, now func() time.Time) *thumbnails {
	ctx, cancel := context.WithCancel(context.Background())
	return &thumbnails{shoot: shoot, timeout: timeout, now: now, ctx: ctx, cancel: cancel,
		leases: make(map[string]*thumbnail)}
}

// get returns the lease's thumbnail, taking one if the last is a second
// old or more. The screenshot runs on its own, so that a requester that
// leaves does not spoil it for the others.
func (c *thumbnails) get(ctx context.Context, id string) ([]byte, error) {
	now := c.now()
	c.mu.Lock()
	t := c.leases[id]
	if t == nil || (finished(t) && now.Sub(t.started) >= thumbnailMaxAge) {
		t = &thumbnail{started: now, done: make(chan struct{})}
		c.leases[id] = t
		c.shots.Add(1)
		go c.take(id, t)
	}
	c.mu.Unlock()
	select {
	case <-t.done:
		return t.data, t.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func (c *thumbnails) take(id string, t *thumbnail) {
	defer c.shots.Done()
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	defer cancel()
	t.data, t.err = c.shoot(ctx, id)
	close(t.done)
}

func finished(t *thumbnail) bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// keep forgets the thumbnails of leases not in live.
func (c *thumbnails) keep(live map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, t := range c.leases {
		if !live[id] && finished(t) {
			delete(c.leases, id)
		}
	}
}

// close stops the screenshots in flight and waits for them.
func (c *thumbnails) close() {
	c.cancel()
	c.shots.Wait()
}
