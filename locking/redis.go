package locking

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/redisscript"
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

var _ ManyLocker = (*Redis)(nil)

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

// fenceTTL keeps a fence counter long after its last use, so tokens of
// consecutive owners come from one counter.
const fenceTTL = 7 * 24 * time.Hour

// TryLock implements Locker. It takes the lock as TryLockMany does (one
// script: lock and fencing token), which also works when Redis is full.
func (r *Redis) TryLock(ctx context.Context, c chat.Conversation) (Lock, error) {
	locks, err := r.TryLockMany(ctx, []chat.Conversation{c})
	if err != nil {
		return nil, err
	}
	if locks[0] == nil {
		return nil, ErrBusy
	}
	return locks[0], nil
}

// lockManyScript takes a conversation's lock the way redsync does (SET NX
// PX with a random value) and hands out its next fencing token.
//
// KEYS[1] -> the lock (STRING, redsync's format)
// KEYS[2] -> fence counter (STRING)
// ARGV[1] -> the owner's random value
// ARGV[2] -> lock expiry, ms
// ARGV[3] -> now, ms
// ARGV[4] -> TTL of the fence counter, ms
//
// The first write (PEXPIRE) needs no memory: Redis refuses a script for
// want of memory (maxmemory, noeviction) only at its first write, and a
// flush, which frees memory, must be able to lock when Redis is full.
//
// Output: 0 when the lock is held by another owner, else the fencing token.
// Time complexity: O(1).
var lockManyScript = redis.NewScript(`
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
local v = redis.call('INCR', KEYS[2])
local now = tonumber(ARGV[3])
if v < now then
  redis.call('SET', KEYS[2], ARGV[3])
  v = now
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return v
`)

// TryLockMany implements ManyLocker: one pipelined round trip. The locks
// are redsync locks (same key, value and expiry format); Extend and Unlock
// go through redsync.
func (r *Redis) TryLockMany(ctx context.Context, cs []chat.Conversation) ([]Lock, error) {
	values := make([]string, len(cs))
	// The fence floor comes from the configured clock; the lock's validity
	// is a deadline on the real one, as redsync's is (work under the lock
	// runs with a context that ends there).
	now, start := r.now(), time.Now()
	for i := range cs {
		v, err := randomValue()
		if err != nil {
			return nil, err
		}
		values[i] = v
	}
	cmds, err := redisscript.Pipelined(ctx, r.rdb, lockManyScript, len(cs), func(p redis.Pipeliner, i int) *redis.Cmd {
		return lockManyScript.EvalSha(ctx, p, []string{r.keys.Lock(cs[i]), r.keys.Fence(cs[i])},
			values[i], r.expiry.Milliseconds(), now.UnixMilli(), fenceTTL.Milliseconds())
	})
	if err != nil {
		return nil, fmt.Errorf("locking: lock many: %w", err)
	}
	// As redsync does: the lock is good until its expiry less the time
	// taken and a 1% drift allowance.
	until := start.Add(r.expiry - time.Since(start) - r.expiry/100)
	locks := make([]Lock, len(cs))
	for i, c := range cs {
		fence, err := cmds[i].Int64()
		if err != nil {
			return nil, fmt.Errorf("locking: lock %s: %w", c, err)
		}
		if fence == 0 {
			continue
		}
		m := r.rs.NewMutex(r.keys.Lock(c), redsync.WithExpiry(r.expiry), redsync.WithTries(1), redsync.WithValue(values[i]))
		locks[i] = &redisLock{m: m, fence: fence, until: until}
	}
	return locks, nil
}

// unlockScript is redsync's release: delete the lock if it still holds the
// owner's value.
//
// KEYS[1] -> the lock
// ARGV[1] -> the owner's value
//
// Output: 1 released; 0 held by another owner; -1 expired.
// Time complexity: O(1).
var unlockScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return redis.call('DEL', KEYS[1]) end
if v == false then return -1 end
return 0
`)

// UnlockMany implements ManyLocker: one pipelined round trip. Nil locks are
// skipped; it returns ErrLost if any lock was no longer held.
func (r *Redis) UnlockMany(ctx context.Context, locks []Lock) error {
	var held []*redisLock
	for _, l := range locks {
		if rl, ok := l.(*redisLock); ok && rl != nil {
			held = append(held, rl)
		}
	}
	if len(held) == 0 {
		return nil
	}
	cmds, err := redisscript.Pipelined(ctx, r.rdb, unlockScript, len(held), func(p redis.Pipeliner, i int) *redis.Cmd {
		return unlockScript.EvalSha(ctx, p, []string{held[i].m.Name()}, held[i].m.Value())
	})
	if err != nil {
		return fmt.Errorf("locking: unlock many: %w", err)
	}
	lost := false
	for _, c := range cmds {
		n, err := c.Int64()
		if err != nil {
			return fmt.Errorf("locking: unlock many: %w", err)
		}
		lost = lost || n != 1
	}
	if lost {
		return ErrLost
	}
	return nil
}

func randomValue() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("locking: random value: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

type redisLock struct {
	m     *redsync.Mutex
	fence int64
	until time.Time
}

func (l *redisLock) Fence() int64     { return l.fence }
func (l *redisLock) Until() time.Time { return l.until }

func (l *redisLock) Extend(ctx context.Context) error {
	ok, err := l.m.ExtendContext(ctx)
	if err == nil && !ok {
		err = ErrLost
	}
	if err != nil {
		return fmt.Errorf("locking: extend %s: %w", l.m.Name(), errors.Join(ErrLost, err))
	}
	l.until = l.m.Until()
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
