// Package locking provides the per-conversation flush lock: a worker takes a
// conversation's lock without waiting (TryLock), extends it while a flush
// runs, and releases it as its owner only. Each acquisition carries a fencing
// token that increases per conversation; the buffer store refuses a token
// lower than one it has seen, so a worker whose lock expired (a GC pause, a
// SIGSTOP) can change nothing once another worker took over.
package locking

import (
	"context"
	"errors"
	"time"

	"github.com/opencontext/chatbuf/chat"
)

// DefaultExpiry is how long a lock lives unless extended.
const DefaultExpiry = 10 * time.Second

var (
	// ErrBusy: another owner holds the lock.
	ErrBusy = errors.New("locking: conversation is locked by another owner")
	// ErrLost: the lock expired or was taken over; its owner must stop.
	ErrLost = errors.New("locking: lock lost")
)

// Locker hands out flush locks.
type Locker interface {
	// TryLock takes the conversation's lock if it is free; ErrBusy if not.
	TryLock(ctx context.Context, c chat.Conversation) (Lock, error)
}

// ManyLocker takes many conversations' locks in one go (one round trip for
// Redis). Busy conversations get a nil Lock.
type ManyLocker interface {
	Locker
	TryLockMany(ctx context.Context, cs []chat.Conversation) ([]Lock, error)
	UnlockMany(ctx context.Context, locks []Lock) error
}

// Lock is a held flush lock.
type Lock interface {
	// Fence is the lock's fencing token.
	Fence() int64
	// Until is when the lock expires unless extended, on the real clock
	// (work under the lock runs with a context that ends there), also for
	// a locker whose clock is injected.
	Until() time.Time
	// Extend renews the lock for its expiry; ErrLost if it is no longer held.
	Extend(ctx context.Context) error
	// Unlock releases the lock; ErrLost if it was no longer held.
	Unlock(ctx context.Context) error
}

// KeepAlive extends l every interval until the returned stop function is
// called. The returned context is cancelled, with cause ErrLost, as soon as
// an extension fails or the lock reaches its expiry unextended, so work done
// under it stops when the lock is gone.
func KeepAlive(ctx context.Context, l Lock, interval time.Duration) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	deadline, cancelDeadline := context.WithDeadlineCause(ctx, l.Until(), ErrLost)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-deadline.Done():
				cancel(context.Cause(deadline))
				return
			case <-t.C:
				if err := l.Extend(ctx); err != nil {
					cancel(errors.Join(ErrLost, err))
					return
				}
				cancelDeadline()
				deadline, cancelDeadline = context.WithDeadlineCause(ctx, l.Until(), ErrLost)
			}
		}
	}()
	return ctx, func() {
		cancel(context.Canceled)
		<-done
		cancelDeadline()
	}
}
