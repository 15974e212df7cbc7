package lease

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestInspectWaitsItsTurnAndIsNoActivity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{})
		l := mustAcquire(t, m, AcquireRequest{TTL: 10 * time.Second})
		before, err := m.Get(l.ID())
		if err != nil {
			t.Fatalf("Get(%s) = %v", l.ID(), err)
		}

		// A holder's command runs for 3s; an Inspect that arrives during
		// it runs only after it.
		var order []string
		cmdDone := make(chan error, 1)
		go func() {
			cmdDone <- m.DoCommand(context.Background(), "", l.ID(), "Navigate", func(ctx context.Context, s Session) error {
				time.Sleep(3 * time.Second)
				order = append(order, "command")
				return nil
			})
		}()
		synctest.Wait()
		time.Sleep(time.Second)
		err = m.Inspect(context.Background(), l.ID(), func(ctx context.Context, s Session) error {
			order = append(order, "inspect")
			return nil
		})
		if err != nil {
			t.Fatalf("Inspect = %v, want nil", err)
		}
		if err := <-cmdDone; err != nil {
			t.Fatalf("DoCommand = %v", err)
		}
		if len(order) != 2 || order[0] != "command" || order[1] != "inspect" {
			t.Fatalf("order %v, want [command inspect]", order)
		}
		afterCmd, _ := m.Get(l.ID())
		if afterCmd.Commands != before.Commands+1 || afterCmd.LastCommand != "Navigate" {
			t.Fatalf("after one command and one Inspect: Commands %d, LastCommand %q; want %d and Navigate",
				afterCmd.Commands, afterCmd.LastCommand, before.Commands+1)
		}

		// Inspect does not touch the lease: no command counted, no expiry
		// moved.
		time.Sleep(5 * time.Second)
		if err := m.Inspect(context.Background(), l.ID(), func(context.Context, Session) error { return nil }); err != nil {
			t.Fatalf("Inspect = %v", err)
		}
		after, _ := m.Get(l.ID())
		if after.Commands != afterCmd.Commands || !after.ExpiresAt.Equal(afterCmd.ExpiresAt) || !after.LastActivity.Equal(afterCmd.LastActivity) {
			t.Fatalf("Inspect changed the lease: commands %d→%d, expires %v→%v, last activity %v→%v; want unchanged",
				afterCmd.Commands, after.Commands, afterCmd.ExpiresAt, after.ExpiresAt, afterCmd.LastActivity, after.LastActivity)
		}

		// Nor does a long Inspect keep an idle lease alive: the lease
		// expires on time and the Inspect sees why.
		err = m.Inspect(context.Background(), l.ID(), func(ctx context.Context, s Session) error {
			<-ctx.Done()
			return ctx.Err()
		})
		var re *ReclaimedError
		if !errors.As(err, &re) || re.Reason != TTLExpired {
			t.Fatalf("Inspect across the idle expiry = %v, want reclaimed TTL_EXPIRED", err)
		}
		synctest.Wait() // the reclaim finishes in its own goroutine
		if got := reasonOf(t, l); got != TTLExpired {
			t.Fatalf("lease ended %v, want TTL_EXPIRED", got)
		}
		if err := m.Inspect(context.Background(), l.ID(), func(context.Context, Session) error { return nil }); !errors.As(err, &re) {
			t.Fatalf("Inspect of a reclaimed lease = %v, want *ReclaimedError", err)
		}
	})
}

func TestQueueWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := newManager(t, Config{Capacity: 1})
		l := mustAcquire(t, m, AcquireRequest{})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for range 2 {
			go m.Acquire(ctx, AcquireRequest{Wait: time.Minute}, nil)
			synctest.Wait()
			time.Sleep(2 * time.Second)
		}
		got := m.QueueWaits()
		if len(got) != 2 || got[0] != 4*time.Second || got[1] != 2*time.Second {
			t.Fatalf("QueueWaits() = %v, want [4s 2s]", got)
		}
		cancel()
		synctest.Wait()
		if got := m.QueueWaits(); len(got) != 0 {
			t.Fatalf("QueueWaits() after the waiters left = %v, want none", got)
		}
		l.Reclaim(Released, "")
	})
}
