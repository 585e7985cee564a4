package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Cache over a go-redis client. It never closes the client.
type Redis struct {
	c      redis.UniversalClient
	prefix string
}

var _ Cache = (*Redis)(nil)

// NewRedis returns a Cache that stores its keys in Redis under cfg.Prefix.
func NewRedis(client redis.UniversalClient, cfg Config) *Redis {
	return &Redis{c: client, prefix: cfg.withDefaults().Prefix}
}

func (r *Redis) key(k string) string { return r.prefix + k }

// classify turns a go-redis error into the package's errors: redis.Nil is
// ErrMiss, WRONGTYPE is ErrWrongType, a reply about integers is
// ErrNotInteger, a network failure or an unavailable server is
// ErrUnavailable. An error caused by the caller's own context is returned
// wrapped but unclassified: it says nothing about Redis.
func classify(ctx context.Context, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redis.Nil):
		return ErrMiss
	}
	var reply redis.Error
	if !errors.As(err, &reply) {
		if ctx.Err() != nil {
			return fmt.Errorf("cache: redis: %w", err)
		}
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "WRONGTYPE"):
		return fmt.Errorf("%w: %w", ErrWrongType, err)
	case strings.HasPrefix(msg, "ERR value is not an integer"),
		strings.HasPrefix(msg, "ERR increment or decrement would overflow"),
		strings.HasPrefix(msg, "ERR decrement would overflow"):
		return fmt.Errorf("%w: %w", ErrNotInteger, err)
	}
	for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "ERR max number of clients"} {
		if strings.HasPrefix(msg, p) {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	return fmt.Errorf("cache: redis: %w", err)
}

func (r *Redis) Get(ctx context.Context, key string) (string, error) {
	v, err := r.c.Get(ctx, r.key(key)).Result()
	return v, classify(ctx, err)
}

func (r *Redis) Set(ctx context.Context, key, value string, o SetOptions) (bool, error) {
	if err := o.check(); err != nil {
		return false, err
	}
	a := redis.SetArgs{TTL: o.TTL}
	switch {
	case o.NX:
		a.Mode = "NX"
	case o.XX:
		a.Mode = "XX"
	}
	err := r.c.SetArgs(ctx, r.key(key), value, a).Err()
	if errors.Is(err, redis.Nil) {
		return false, nil // NX or XX condition not met
	}
	return err == nil, classify(ctx, err)
}

func (r *Redis) Delete(ctx context.Context, keys ...string) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = r.key(k)
	}
	n, err := r.c.Del(ctx, full...).Result()
	return n, classify(ctx, err)
}

func (r *Redis) Exists(ctx context.Context, key string) (bool, error) {
	n, err := r.c.Exists(ctx, r.key(key)).Result()
	return n == 1, classify(ctx, err)
}

func (r *Redis) Expire(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if err := checkTTL("TTL", ttl); err != nil {
		return false, err
	}
	ok, err := r.c.PExpire(ctx, r.key(key), ttl).Result()
	return ok, classify(ctx, err)
}

func (r *Redis) TTL(ctx context.Context, key string) (time.Duration, error) {
	d, err := r.c.PTTL(ctx, r.key(key)).Result()
	if err != nil {
		return 0, classify(ctx, err)
	}
	// go-redis passes Redis's -2 (no key) and -1 (no TTL) through as raw
	// durations.
	switch d {
	case -2:
		return 0, ErrMiss
	case -1:
		return NoTTL, nil
	}
	return d, nil
}

func (r *Redis) GetJSON(ctx context.Context, key string, v any) error {
	return getJSON(ctx, r, key, v)
}

func (r *Redis) SetJSON(ctx context.Context, key string, v any, o SetOptions) (bool, error) {
	return setJSON(ctx, r, key, v, o)
}

func (r *Redis) LPush(ctx context.Context, key string, values ...string) (int64, error) {
	return r.push(ctx, r.c.LPush, key, values)
}

func (r *Redis) RPush(ctx context.Context, key string, values ...string) (int64, error) {
	return r.push(ctx, r.c.RPush, key, values)
}

func (r *Redis) push(ctx context.Context, f func(context.Context, string, ...any) *redis.IntCmd, key string, values []string) (int64, error) {
	if len(values) == 0 {
		return r.LLen(ctx, key)
	}
	n, err := f(ctx, r.key(key), toAny(values)...).Result()
	return n, classify(ctx, err)
}

func (r *Redis) LPop(ctx context.Context, key string) (string, error) {
	v, err := r.c.LPop(ctx, r.key(key)).Result()
	return v, classify(ctx, err)
}

func (r *Redis) RPop(ctx context.Context, key string) (string, error) {
	v, err := r.c.RPop(ctx, r.key(key)).Result()
	return v, classify(ctx, err)
}

func (r *Redis) LRange(ctx context.Context, key string, start, stop int64) ([]string, error) {
	v, err := r.c.LRange(ctx, r.key(key), start, stop).Result()
	return v, classify(ctx, err)
}

func (r *Redis) LLen(ctx context.Context, key string) (int64, error) {
	n, err := r.c.LLen(ctx, r.key(key)).Result()
	return n, classify(ctx, err)
}

func (r *Redis) LTrim(ctx context.Context, key string, start, stop int64) error {
	return classify(ctx, r.c.LTrim(ctx, r.key(key), start, stop).Err())
}

func (r *Redis) HGet(ctx context.Context, key, field string) (string, error) {
	v, err := r.c.HGet(ctx, r.key(key), field).Result()
	return v, classify(ctx, err)
}

func (r *Redis) HSet(ctx context.Context, key, field, value string) (bool, error) {
	n, err := r.c.HSet(ctx, r.key(key), field, value).Result()
	return n == 1, classify(ctx, err)
}

func (r *Redis) HMSet(ctx context.Context, key string, fields map[string]string) error {
	if len(fields) == 0 {
		return nil
	}
	return classify(ctx, r.c.HSet(ctx, r.key(key), fields).Err())
}

func (r *Redis) HGetAll(ctx context.Context, key string) (map[string]string, error) {
	v, err := r.c.HGetAll(ctx, r.key(key)).Result()
	return v, classify(ctx, err)
}

func (r *Redis) HDel(ctx context.Context, key string, fields ...string) (int64, error) {
	if len(fields) == 0 {
		return 0, nil
	}
	n, err := r.c.HDel(ctx, r.key(key), fields...).Result()
	return n, classify(ctx, err)
}

func (r *Redis) SAdd(ctx context.Context, key string, members ...string) (int64, error) {
	if len(members) == 0 {
		return 0, nil
	}
	n, err := r.c.SAdd(ctx, r.key(key), toAny(members)...).Result()
	return n, classify(ctx, err)
}

func (r *Redis) SRem(ctx context.Context, key string, members ...string) (int64, error) {
	if len(members) == 0 {
		return 0, nil
	}
	n, err := r.c.SRem(ctx, r.key(key), toAny(members)...).Result()
	return n, classify(ctx, err)
}

func (r *Redis) SIsMember(ctx context.Context, key, member string) (bool, error) {
	ok, err := r.c.SIsMember(ctx, r.key(key), member).Result()
	return ok, classify(ctx, err)
}

func (r *Redis) SMembers(ctx context.Context, key string) ([]string, error) {
	v, err := r.c.SMembers(ctx, r.key(key)).Result()
	return v, classify(ctx, err)
}

func (r *Redis) Incr(ctx context.Context, key string, n int64) (int64, error) {
	v, err := r.c.IncrBy(ctx, r.key(key), n).Result()
	return v, classify(ctx, err)
}

func (r *Redis) Decr(ctx context.Context, key string, n int64) (int64, error) {
	v, err := r.c.DecrBy(ctx, r.key(key), n).Result()
	return v, classify(ctx, err)
}

func (r *Redis) GetSet(ctx context.Context, key, value string) (string, bool, error) {
	v, err := r.c.GetSet(ctx, r.key(key), value).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	return v, err == nil, classify(ctx, err)
}

func (r *Redis) TryLock(ctx context.Context, name, owner string, expiry time.Duration) (bool, error) {
	if err := checkTTL("lock expiry", expiry); err != nil {
		return false, err
	}
	return r.Set(ctx, lockKey(name), owner, SetOptions{TTL: expiry, NX: true})
}

// unlockScript deletes a lock only if it still holds the caller's token.
//
// KEYS[1] -> the lock key
// ARGV[1] -> the owner token
// Output: 1 when the lock was the owner's and is now released, 0 otherwise.
// Time complexity: O(1).
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0
`)

func (r *Redis) Unlock(ctx context.Context, name, owner string) (bool, error) {
	v, err := unlockScript.Run(ctx, r.c, []string{r.key(lockKey(name))}, owner).Result()
	if err != nil {
		return false, classify(ctx, err)
	}
	switch v {
	case int64(1):
		return true, nil
	case int64(0):
		return false, nil
	default:
		return false, fmt.Errorf("cache: unlock: unexpected reply %#v", v)
	}
}

func (r *Redis) Ping(ctx context.Context) error {
	return classify(ctx, r.c.Ping(ctx).Err())
}

// Close does nothing: the client belongs to the caller.
func (r *Redis) Close() error { return nil }

func toAny(s []string) []any {
	a := make([]any, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}
