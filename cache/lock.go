package cache

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"
)

// LockOptions tune Acquire. The zero value tries once for a 10s lock.
type LockOptions struct {
	// Expiry is how long the lock lives unless released. Default 10s.
	Expiry time.Duration
	// Wait is how long Acquire keeps trying; 0 tries once.
	Wait time.Duration
	// RetryInterval is the pause between tries while waiting. Default 50ms.
	RetryInterval time.Duration
}

// Lock is a held lock. It expires on its own after LockOptions.Expiry.
type Lock struct {
	c     Cache
	name  string
	owner string
}

// Acquire takes the lock called name on c, trying for up to o.Wait. It
// returns ErrLockHeld when another owner kept it all that time. The lock is
// advisory and, on Memory (or Fallback in memory mode), local to the process.
func Acquire(ctx context.Context, c Cache, name string, o LockOptions) (*Lock, error) {
	if o.Expiry <= 0 {
		o.Expiry = 10 * time.Second
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = 50 * time.Millisecond
	}
	l := &Lock{c: c, name: name, owner: rand.Text()}
	deadline := time.Now().Add(o.Wait)
	for {
		ok, err := c.TryLock(ctx, name, l.owner, o.Expiry)
		if err != nil {
			return nil, err
		}
		if ok {
			return l, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("%w: %q", ErrLockHeld, name)
		}
		t := time.NewTimer(min(o.RetryInterval, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("cache: acquire %q: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

// Release frees the lock. It returns ErrNotOwner if the lock had expired
// (and perhaps been taken by someone else): nothing was released then.
func (l *Lock) Release(ctx context.Context) error {
	ok, err := l.c.Unlock(ctx, l.name, l.owner)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %q", ErrNotOwner, l.name)
	}
	return nil
}
