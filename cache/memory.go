package cache

import (
	"container/heap"
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/opencontext/chatbuf/internal/indexheap"
)

// Memory is a Cache in process memory with Redis semantics. Expired keys
// are invisible at once (every operation checks the deadline against
// Config.Now) and are reclaimed without being read: a min-heap of deadlines
// is swept every Config.SweepInterval by a goroutine that Close stops.
type Memory struct {
	prefix string
	now    func() time.Time

	mu   sync.Mutex
	data map[string]*item
	exp  *indexheap.Heap[*item] // items with a deadline, soonest first

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ Cache = (*Memory)(nil)

type kind uint8

const (
	kindString kind = iota + 1
	kindList
	kindHash
	kindSet
)

type item struct {
	key      string
	kind     kind
	str      string
	list     []string
	hash     map[string]string
	set      map[string]struct{}
	expireAt time.Time // zero: never
	index    int       // position in Memory.exp, -1 when absent
}

// NewMemory returns a Memory cache and starts its sweeper; call Close.
func NewMemory(cfg Config) *Memory {
	cfg = cfg.withDefaults()
	m := &Memory{
		prefix: cfg.Prefix,
		now:    cfg.Now,
		data:   make(map[string]*item),
		exp: indexheap.New(func(a, b *item) bool { return a.expireAt.Before(b.expireAt) },
			func(it *item) *int { return &it.index }),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go m.run(cfg.SweepInterval)
	return m
}

func (m *Memory) run(every time.Duration) {
	defer close(m.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.sweep()
		}
	}
}

// sweep removes every expired key: O(k log n) for k expired keys.
func (m *Memory) sweep() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for len(m.exp.Items) > 0 && now.After(m.exp.Items[0].expireAt) {
		m.remove(m.exp.Items[0])
	}
}

// flush drops every key (Fallback calls it when Redis is back).
func (m *Memory) flush() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data)
	m.exp.Items = nil
}

// Close stops the sweeper. The cache stays usable; expired keys are then
// only reclaimed when touched.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() { close(m.stop) })
	<-m.done
	return nil
}

func (m *Memory) Ping(context.Context) error { return nil }

// lookup returns the live item at key (already prefixed) or nil, removing
// it if it has expired. Callers hold m.mu.
func (m *Memory) lookup(key string) *item {
	it := m.data[key]
	if it == nil {
		return nil
	}
	// Redis expires a key once its clock is past the deadline.
	if !it.expireAt.IsZero() && m.now().After(it.expireAt) {
		m.remove(it)
		return nil
	}
	return it
}

// typed is lookup plus a type check.
func (m *Memory) typed(key string, k kind) (*item, error) {
	it := m.lookup(m.prefix + key)
	if it != nil && it.kind != k {
		return nil, fmt.Errorf("%w: %q", ErrWrongType, key)
	}
	return it, nil
}

// create returns the item at key of kind k, making it if needed.
func (m *Memory) create(key string, k kind) (*item, error) {
	it, err := m.typed(key, k)
	if err != nil || it != nil {
		return it, err
	}
	it = &item{key: m.prefix + key, kind: k, index: -1}
	switch k {
	case kindHash:
		it.hash = make(map[string]string)
	case kindSet:
		it.set = make(map[string]struct{})
	}
	m.data[it.key] = it
	return it, nil
}

func (m *Memory) remove(it *item) {
	delete(m.data, it.key)
	if it.index >= 0 {
		heap.Remove(m.exp, it.index)
	}
}

// removeIfEmpty deletes an aggregate left without elements, as Redis does.
func (m *Memory) removeIfEmpty(it *item) {
	if len(it.list)+len(it.hash)+len(it.set) == 0 && it.kind != kindString {
		m.remove(it)
	}
}

func (m *Memory) setExpiry(it *item, at time.Time) {
	it.expireAt = at
	switch {
	case at.IsZero() && it.index >= 0:
		heap.Remove(m.exp, it.index)
	case at.IsZero():
	case it.index >= 0:
		heap.Fix(m.exp, it.index)
	default:
		heap.Push(m.exp, it)
	}
}

func (m *Memory) Get(_ context.Context, key string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.typed(key, kindString)
	if err != nil {
		return "", err
	}
	if it == nil {
		return "", ErrMiss
	}
	return it.str, nil
}

func (m *Memory) Set(_ context.Context, key, value string, o SetOptions) (bool, error) {
	if err := o.check(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.lookup(m.prefix + key)
	if (o.NX && old != nil) || (o.XX && old == nil) {
		return false, nil
	}
	if old != nil {
		m.remove(old) // SET replaces a value of any type, and its TTL
	}
	it, _ := m.create(key, kindString) // cannot fail: the key is free
	it.str = value
	if o.TTL > 0 {
		m.setExpiry(it, m.now().Add(o.TTL))
	}
	return true, nil
}

func (m *Memory) Delete(_ context.Context, keys ...string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for _, k := range keys {
		if it := m.lookup(m.prefix + k); it != nil {
			m.remove(it)
			n++
		}
	}
	return n, nil
}

func (m *Memory) Exists(_ context.Context, key string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lookup(m.prefix+key) != nil, nil
}

func (m *Memory) Expire(_ context.Context, key string, ttl time.Duration) (bool, error) {
	if err := checkTTL("TTL", ttl); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	it := m.lookup(m.prefix + key)
	if it == nil {
		return false, nil
	}
	m.setExpiry(it, m.now().Add(ttl))
	return true, nil
}

func (m *Memory) TTL(_ context.Context, key string) (time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it := m.lookup(m.prefix + key)
	switch {
	case it == nil:
		return 0, ErrMiss
	case it.expireAt.IsZero():
		return NoTTL, nil
	}
	return it.expireAt.Sub(m.now()).Truncate(time.Millisecond), nil
}

func (m *Memory) GetJSON(ctx context.Context, key string, v any) error {
	return getJSON(ctx, m, key, v)
}

func (m *Memory) SetJSON(ctx context.Context, key string, v any, o SetOptions) (bool, error) {
	return setJSON(ctx, m, key, v, o)
}

func (m *Memory) Incr(_ context.Context, key string, n int64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.add(key, n)
}

func (m *Memory) Decr(_ context.Context, key string, n int64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n == -n && n != 0 { // math.MinInt64 cannot be negated
		return 0, fmt.Errorf("%w: decrement would overflow", ErrNotInteger)
	}
	return m.add(key, -n)
}

// add is INCRBY: the key keeps its TTL. Callers hold m.mu.
func (m *Memory) add(key string, n int64) (int64, error) {
	it, err := m.typed(key, kindString)
	if err != nil {
		return 0, err
	}
	var cur int64
	if it != nil {
		// Redis accepts only the canonical form: no '+', spaces or leading zeros.
		v, err := strconv.ParseInt(it.str, 10, 64)
		if err != nil || strconv.FormatInt(v, 10) != it.str {
			return 0, fmt.Errorf("%w: %q", ErrNotInteger, key)
		}
		cur = v
	}
	sum := cur + n
	if (n > 0 && sum < cur) || (n < 0 && sum > cur) {
		return 0, fmt.Errorf("%w: increment would overflow", ErrNotInteger)
	}
	if it == nil {
		it, _ = m.create(key, kindString)
	}
	it.str = strconv.FormatInt(sum, 10)
	return sum, nil
}

func (m *Memory) GetSet(_ context.Context, key, value string) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.typed(key, kindString)
	if err != nil {
		return "", false, err
	}
	var old string
	existed := it != nil
	if existed {
		old = it.str
		m.setExpiry(it, time.Time{}) // GETSET clears the TTL, as SET does
	} else {
		it, _ = m.create(key, kindString)
	}
	it.str = value
	return old, existed, nil
}

func (m *Memory) TryLock(ctx context.Context, name, owner string, expiry time.Duration) (bool, error) {
	if err := checkTTL("lock expiry", expiry); err != nil {
		return false, err
	}
	return m.Set(ctx, lockKey(name), owner, SetOptions{TTL: expiry, NX: true})
}

func (m *Memory) Unlock(_ context.Context, name, owner string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, err := m.typed(lockKey(name), kindString)
	if err != nil || it == nil || it.str != owner {
		return false, err
	}
	m.remove(it)
	return true, nil
}
