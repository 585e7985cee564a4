package locking

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
)

// Redis is a Locker on Redis: a redsync mutex per conversation, and a
// fencing counter beside it.
type Redis struct {
	rdb    redis.UniversalClient
	rs     *redsync.Redsync
	keys   chat.Keys
	expiry time.Duration
	now    func() time.Time
}

var _ Locker = (*Redis)(nil)

// Config tunes a Locker. Zero values mean the defaults.
type Config struct {
	KeyPrefix string           // "" means chat.DefaultKeyPrefix
	Expiry    time.Duration    // DefaultExpiry when zero
	Now       func() time.Time // the clock; time.Now when nil
}

func (c Config) withDefaults() Config {
	if c.Expiry <= 0 {
		c.Expiry = DefaultExpiry
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// NewRedis returns a Locker on rdb.
func NewRedis(rdb redis.UniversalClient, cfg Config) *Redis {
	cfg = cfg.withDefaults()
	return &Redis{
		rdb:    rdb,
		rs:     redsync.New(goredis.NewPool(rdb)),
		keys:   chat.NewKeys(cfg.KeyPrefix),
		expiry: cfg.Expiry,
		now:    cfg.Now,
	}
}

// fenceScript hands out the next fencing token of a conversation.
//
// KEYS[1] -> fence counter (STRING)
// ARGV[1] -> now, ms
// ARGV[2] -> TTL of the counter, ms
//
// Output: the token: the counter plus one, or now if that is larger, so the
// counter keeps increasing even after it expired and started over.
// Time complexity: O(1).
var fenceScript = redis.NewScript(`
local v = redis.call('INCR', KEYS[1])
local now = tonumber(ARGV[1])
if v < now then
  redis.call('SET', KEYS[1], ARGV[1])
  v = now
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return v
`)

// fenceTTL keeps a fence counter long after its last use, so tokens of
// consecutive owners come from one counter.
const fenceTTL = 7 * 24 * time.Hour

// TryLock implements Locker.
func (r *Redis) TryLock(ctx context.Context, c chat.Conversation) (Lock, error) {
	m := r.rs.NewMutex(r.keys.Lock(c), redsync.WithExpiry(r.expiry), redsync.WithTries(1))
	if err := m.TryLockContext(ctx); err != nil {
		var taken *redsync.ErrTaken
		if errors.Is(err, redsync.ErrFailed) || errors.As(err, &taken) {
			return nil, ErrBusy
		}
		return nil, fmt.Errorf("locking: lock %s: %w", c, err)
	}
	fence, err := fenceScript.Run(ctx, r.rdb, []string{r.keys.Fence(c)}, r.now().UnixMilli(), fenceTTL.Milliseconds()).Int64()
	if err != nil {
		_, _ = m.UnlockContext(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("locking: fence %s: %w", c, err)
	}
	return &redisLock{m: m, fence: fence}, nil
}

type redisLock struct {
	m     *redsync.Mutex
	fence int64
}

func (l *redisLock) Fence() int64     { return l.fence }
func (l *redisLock) Until() time.Time { return l.m.Until() }

func (l *redisLock) Extend(ctx context.Context) error {
	ok, err := l.m.ExtendContext(ctx)
	if err == nil && !ok {
		err = ErrLost
	}
	if err != nil {
		return fmt.Errorf("locking: extend %s: %w", l.m.Name(), errors.Join(ErrLost, err))
	}
	return nil
}

func (l *redisLock) Unlock(ctx context.Context) error {
	ok, err := l.m.UnlockContext(ctx)
	if err != nil {
		if errors.Is(err, redsync.ErrLockAlreadyExpired) {
			return ErrLost
		}
		var taken *redsync.ErrTaken
		if errors.As(err, &taken) {
			return ErrLost
		}
		return fmt.Errorf("locking: unlock %s: %w", l.m.Name(), err)
	}
	if !ok {
		return ErrLost
	}
	return nil
}
