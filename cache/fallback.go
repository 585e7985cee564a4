package cache

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Modes reported by Fallback.Mode and FallbackConfig.OnModeChange.
const (
	ModeRedis  = "redis"
	ModeMemory = "memory"
)

// FallbackConfig tunes a Fallback. The zero value means the defaults.
type FallbackConfig struct {
	// ProbeBackoff is the first pause before Redis is probed again after a
	// failure; it doubles after each failed probe. Default 100ms.
	ProbeBackoff time.Duration
	// ProbeMaxBackoff caps the pause. Default 30s.
	ProbeMaxBackoff time.Duration
	// ProbeTimeout bounds one PING. Default 1s.
	ProbeTimeout time.Duration
	// Logger receives the mode switches. Default slog.Default().
	Logger *slog.Logger
	// OnModeChange, if set, is called with ModeMemory or ModeRedis on every
	// switch, in order. It must return quickly (e.g. set a gauge).
	OnModeChange func(mode string)
}

// Fallback is a Cache that uses primary (Redis) and, from the first call that
// fails with ErrUnavailable until a background PING succeeds again, the
// in-memory secondary. The failed call itself is retried on memory, so
// callers see no error. Misses, wrong types and other replies from Redis are
// not failures and are passed through.
//
// Memory is a stand-in, not a replica: what was written during the outage
// is dropped when Redis answers again, and Redis's data is used from then on.
type Fallback struct {
	primary Cache
	mem     *Memory
	cfg     FallbackConfig

	memoryMode atomic.Bool

	mu     sync.Mutex // serializes switches
	closed bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

var _ Cache = (*Fallback)(nil)

// NewFallback returns a Fallback over primary (normally a *Redis) and mem.
// Close stops the prober and closes both caches.
func NewFallback(primary Cache, mem *Memory, cfg FallbackConfig) *Fallback {
	if cfg.ProbeBackoff <= 0 {
		cfg.ProbeBackoff = 100 * time.Millisecond
	}
	if cfg.ProbeMaxBackoff <= 0 {
		cfg.ProbeMaxBackoff = 30 * time.Second
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Fallback{primary: primary, mem: mem, cfg: cfg, stop: make(chan struct{})}
}

// Mode returns ModeRedis or ModeMemory.
func (f *Fallback) Mode() string {
	if f.memoryMode.Load() {
		return ModeMemory
	}
	return ModeRedis
}

// do runs op on Redis, or on memory while in memory mode or when Redis has
// just failed with ErrUnavailable.
func do[T any](f *Fallback, op func(Cache) (T, error)) (T, error) {
	if !f.memoryMode.Load() {
		v, err := op(f.primary)
		if !errors.Is(err, ErrUnavailable) {
			return v, err
		}
		f.toMemory(err)
	}
	return op(f.mem)
}

func (f *Fallback) toMemory(cause error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.memoryMode.Load() {
		return
	}
	f.memoryMode.Store(true)
	f.cfg.Logger.Warn("cache: redis unavailable, using memory", "mode", ModeMemory, "error", cause)
	if f.cfg.OnModeChange != nil {
		f.cfg.OnModeChange(ModeMemory)
	}
	f.wg.Add(1)
	go f.probe()
}

// probe PINGs Redis with exponential backoff until it answers or Close.
func (f *Fallback) probe() {
	defer f.wg.Done()
	delay := f.cfg.ProbeBackoff
	for attempt := 1; ; attempt++ {
		t := time.NewTimer(delay)
		select {
		case <-f.stop:
			t.Stop()
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), f.cfg.ProbeTimeout)
		err := f.primary.Ping(ctx)
		cancel()
		if err == nil {
			f.toRedis(attempt)
			return
		}
		f.cfg.Logger.Debug("cache: redis probe failed", "attempt", attempt, "next", delay, "error", err)
		delay = min(2*delay, f.cfg.ProbeMaxBackoff)
	}
}

func (f *Fallback) toRedis(attempts int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	f.mem.flush()
	f.memoryMode.Store(false)
	f.cfg.Logger.Info("cache: redis is back, leaving memory", "mode", ModeRedis, "probes", attempts)
	if f.cfg.OnModeChange != nil {
		f.cfg.OnModeChange(ModeRedis)
	}
}

// Close stops the prober and closes the memory cache and primary.
func (f *Fallback) Close() error {
	f.mu.Lock()
	if !f.closed {
		f.closed = true
		close(f.stop)
	}
	f.mu.Unlock()
	f.wg.Wait()
	return errors.Join(f.primary.Close(), f.mem.Close())
}

// Ping pings the backend in use.
func (f *Fallback) Ping(ctx context.Context) error {
	_, err := do(f, func(c Cache) (struct{}, error) { return struct{}{}, c.Ping(ctx) })
	return err
}

func (f *Fallback) Get(ctx context.Context, key string) (string, error) {
	return do(f, func(c Cache) (string, error) { return c.Get(ctx, key) })
}

func (f *Fallback) Set(ctx context.Context, key, value string, o SetOptions) (bool, error) {
	return do(f, func(c Cache) (bool, error) { return c.Set(ctx, key, value, o) })
}

func (f *Fallback) Delete(ctx context.Context, keys ...string) (int64, error) {
	return do(f, func(c Cache) (int64, error) { return c.Delete(ctx, keys...) })
}

func (f *Fallback) Exists(ctx context.Context, key string) (bool, error) {
	return do(f, func(c Cache) (bool, error) { return c.Exists(ctx, key) })
}

func (f *Fallback) Expire(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	return do(f, func(c Cache) (bool, error) { return c.Expire(ctx, key, ttl) })
}

func (f *Fallback) TTL(ctx context.Context, key string) (time.Duration, error) {
	return do(f, func(c Cache) (time.Duration, error) { return c.TTL(ctx, key) })
}

func (f *Fallback) GetJSON(ctx context.Context, key string, v any) error {
	return getJSON(ctx, f, key, v)
}

func (f *Fallback) SetJSON(ctx context.Context, key string, v any, o SetOptions) (bool, error) {
	return setJSON(ctx, f, key, v, o)
}

func (f *Fallback) LPush(ctx context.Context, key string, values ...string) (int64, error) {
	return do(f, func(c Cache) (int64, error) { return c.LPush(ctx, key, values...) })
}

func (f *Fallback) RPush(ctx context.Context, key string, values ...string) (int64, error) {
	return do(f, func(c Cache) (int64, error) { return c.RPush(ctx, key, values...) })
}

func (f *Fallback) LPop(ctx context.Context, key string) (string, error) {
	return do(f, func(c Cache) (string, error) { return c.LPop(ctx, key) })
}

func (f *Fallback) RPop(ctx context.Context, key string) (string, error) {
	return do(f, func(c Cache) (string, error) { return c.RPop(ctx, key) })
}

func (f *Fallback) LRange(ctx context.Context, key string, start, stop int64) ([]string, error) {
	return do(f, func(c Cache) ([]string, error) { return c.LRange(ctx, key, start, stop) })
}

func (f *Fallback) LLen(ctx context.Context, key string) (int64, error) {
	return do(f, func(c Cache) (int64, error) { return c.LLen(ctx, key) })
}

func (f *Fallback) LTrim(ctx context.Context, key string, start, stop int64) error {
	_, err := do(f, func(c Cache) (struct{}, error) { return struct{}{}, c.LTrim(ctx, key, start, stop) })
	return err
}

func (f *Fallback) HGet(ctx context.Context, key, field string) (string, error) {
	return do(f, func(c Cache) (string, error) { return c.HGet(ctx, key, field) })
}

func (f *Fallback) HSet(ctx context.Context, key, field, value string) (bool, error) {
	return do(f, func(c Cache) (bool, error) { return c.HSet(ctx, key, field, value) })
}

func (f *Fallback) HMSet(ctx context.Context, key string, fields map[string]string) error {
	_, err := do(f, func(c Cache) (struct{}, error) { return struct{}{}, c.HMSet(ctx, key, fields) })
	return err
}

func (f *Fallback) HGetAll(ctx context.Context, key string) (map[string]string, error) {
	return do(f, func(c Cache) (map[string]string, error) { return c.HGetAll(ctx, key) })
}

func (f *Fallback) HDel(ctx context.Context, key string, fields ...string) (int64, error) {
	return do(f, func(c Cache) (int64, error) { return c.HDel(ctx, key, fields...) })
}

func (f *Fallback) SAdd(ctx context.Context, key string, members ...string) (int64, error) {
	return do(f, func(c Cache) (int64, error) { return c.SAdd(ctx, key, members...) })
}

func (f *Fallback) SRem(ctx context.Context, key string, members ...string) (int64, error) {
	return do(f, func(c Cache) (int64, error) { return c.SRem(ctx, key, members...) })
}

func (f *Fallback) SIsMember(ctx context.Context, key, member string) (bool, error) {
	return do(f, func(c Cache) (bool, error) { return c.SIsMember(ctx, key, member) })
}

func (f *Fallback) SMembers(ctx context.Context, key string) ([]string, error) {
	return do(f, func(c Cache) ([]string, error) { return c.SMembers(ctx, key) })
}

func (f *Fallback) Incr(ctx context.Context, key string, n int64) (int64, error) {
	return do(f, func(c Cache) (int64, error) { return c.Incr(ctx, key, n) })
}

func (f *Fallback) Decr(ctx context.Context, key string, n int64) (int64, error) {
	return do(f, func(c Cache) (int64, error) { return c.Decr(ctx, key, n) })
}

func (f *Fallback) GetSet(ctx context.Context, key, value string) (string, bool, error) {
	type old struct {
		v  string
		ok bool
	}
	o, err := do(f, func(c Cache) (old, error) {
		v, ok, err := c.GetSet(ctx, key, value)
		return old{v, ok}, err
	})
	return o.v, o.ok, err
}

func (f *Fallback) TryLock(ctx context.Context, name, owner string, expiry time.Duration) (bool, error) {
	return do(f, func(c Cache) (bool, error) { return c.TryLock(ctx, name, owner, expiry) })
}

func (f *Fallback) Unlock(ctx context.Context, name, owner string) (bool, error) {
	return do(f, func(c Cache) (bool, error) { return c.Unlock(ctx, name, owner) })
}
