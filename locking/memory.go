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
	// known lists each conversation in fences once, with the time after
	// which its entries may go (its lock's expiry). TryLock looks at the
	// front and forgets conversations whose lock has expired and whose
	// fence the clock has passed (a new fence, at least the time in ms,
	// is then larger anyway): the maps hold only recently locked
	// conversations.
	known []knownConv
}

type knownConv struct {
	c     chat.Conversation
	after time.Time
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
	m.forgetIdle(now)
	last, known := m.fences[c]
	fence := max(last+1, now.UnixMilli())
	m.fences[c] = fence
	l := &memLock{m: m, c: c, fence: fence, until: now.Add(m.expiry)}
	m.held[c] = l
	if !known {
		m.known = append(m.known, knownConv{c, l.until})
	}
	return l, nil
}

// forgetIdle drops conversations whose lock expired and whose fence lies in
// the past, a few per call, from the front of known; m.mu held.
func (m *Memory) forgetIdle(now time.Time) {
	for range 8 {
		if len(m.known) == 0 || now.Before(m.known[0].after) {
			return
		}
		k := m.known[0]
		m.known[0] = knownConv{}
		m.known = m.known[1:]
		if l, ok := m.held[k.c]; ok && now.Before(l.until) {
			m.known = append(m.known, knownConv{k.c, l.until}) // still held: look again then
			continue
		}
		if m.fences[k.c] >= now.UnixMilli() {
			m.known = append(m.known, knownConv{k.c, now.Add(time.Millisecond)})
			continue
		}
		delete(m.held, k.c)
		delete(m.fences, k.c)
	}
}

// Size reports how many conversations the locker keeps state for.
func (m *Memory) Size() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.fences)
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
