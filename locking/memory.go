package locking

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/opencontext/chatbuf/chat"
)

// Memory is a Locker in process memory with the same semantics as Redis, for
// a single instance or while Redis is unreachable.
type Memory struct {
	expiry time.Duration
	now    func() time.Time

	mu     sync.Mutex
	held   map[chat.Conversation]*memLock
	fences map[chat.Conversation]int64
}

var _ ManyLocker = (*Memory)(nil)

// NewMemory returns an in-memory Locker.
func NewMemory(cfg Config) *Memory {
	cfg = cfg.withDefaults()
	return &Memory{
		expiry: cfg.Expiry,
		now:    cfg.Now,
		held:   map[chat.Conversation]*memLock{},
		fences: map[chat.Conversation]int64{},
	}
}

// TryLock implements Locker.
func (m *Memory) TryLock(ctx context.Context, c chat.Conversation) (Lock, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if l, ok := m.held[c]; ok && now.Before(l.until) {
		return nil, ErrBusy
	}
	fence := max(m.fences[c]+1, now.UnixMilli())
	m.fences[c] = fence
	l := &memLock{m: m, c: c, fence: fence, until: now.Add(m.expiry)}
	m.held[c] = l
	return l, nil
}

type memLock struct {
	m     *Memory
	c     chat.Conversation
	fence int64
	until time.Time // guarded by m.mu
}

func (l *memLock) Fence() int64 { return l.fence }

// Until implements Lock: a deadline on the real clock (work under the lock
// runs with a context that ends there), however far the configured clock,
// which the expiry itself follows, is from it.
func (l *memLock) Until() time.Time {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	return time.Now().Add(l.until.Sub(l.m.now()))
}

// owned reports whether l is still the conversation's live lock; m.mu held.
func (l *memLock) owned() bool {
	return l.m.held[l.c] == l && l.m.now().Before(l.until)
}

func (l *memLock) Extend(ctx context.Context) error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if !l.owned() {
		return ErrLost
	}
	l.until = l.m.now().Add(l.m.expiry)
	return nil
}

func (l *memLock) Unlock(ctx context.Context) error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	ok := l.owned()
	if l.m.held[l.c] == l {
		delete(l.m.held, l.c)
	}
	if !ok {
		return ErrLost
	}
	return nil
}

// TryLockMany implements ManyLocker.
func (m *Memory) TryLockMany(ctx context.Context, cs []chat.Conversation) ([]Lock, error) {
	locks := make([]Lock, len(cs))
	for i, c := range cs {
		l, err := m.TryLock(ctx, c)
		switch {
		case err == nil:
			locks[i] = l
		case errors.Is(err, ErrBusy):
		default:
			return nil, err
		}
	}
	return locks, nil
}

// UnlockMany implements ManyLocker.
func (m *Memory) UnlockMany(ctx context.Context, locks []Lock) error {
	var lost bool
	for _, l := range locks {
		if l != nil {
			lost = l.Unlock(ctx) != nil || lost
		}
	}
	if lost {
		return ErrLost
	}
	return nil
}
