package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Errors returned by every implementation. Test them with errors.Is: real
// errors wrap them together with the underlying cause.
var (
	// ErrMiss: the key, field or element does not exist (or has expired).
	ErrMiss = errors.New("cache: miss")
	// ErrWrongType: the key holds a value of another type (Redis WRONGTYPE).
	ErrWrongType = errors.New("cache: wrong type")
	// ErrNotInteger: a counter operation on a value that is not an integer,
	// or one that would overflow int64.
	ErrNotInteger = errors.New("cache: value is not an integer")
	// ErrInvalid: an invalid argument (negative TTL, NX with XX, ...).
	ErrInvalid = errors.New("cache: invalid argument")
	// ErrUnavailable: the backend could not be reached (connection refused,
	// reset, timed out, server loading...). Fallback switches to memory on it.
	ErrUnavailable = errors.New("cache: unavailable")
	// ErrLockHeld: Acquire could not take the lock within its wait time.
	ErrLockHeld = errors.New("cache: lock held")
	// ErrNotOwner: Release found the lock expired or taken by another owner.
	ErrNotOwner = errors.New("cache: lock not owned")
)

// NoTTL is what TTL returns for a key that exists and never expires.
const NoTTL time.Duration = -1

// DefaultPrefix is the key prefix used when Config.Prefix is empty.
const DefaultPrefix = "opencontext:"

// Config tunes a cache. The zero value means the documented defaults.
type Config struct {
	// Prefix is put in front of every key. Default "opencontext:".
	Prefix string
	// Now is the clock of Memory (default time.Now). Redis keeps its own time.
	Now func() time.Time
	// SweepInterval is how often Memory reclaims expired keys without
	// waiting for them to be read. Default 1s.
	SweepInterval time.Duration
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Second
	}
	return c
}

// SetOptions are the options of Set. The zero value stores the value with
// no expiry, unconditionally.
type SetOptions struct {
	TTL time.Duration // >= 1ms: expire after TTL; 0: never
	NX  bool          // only set when the key does not exist
	XX  bool          // only set when the key exists
}

func (o SetOptions) check() error {
	if o.TTL != 0 {
		if err := checkTTL("TTL", o.TTL); err != nil {
			return err
		}
	}
	if o.NX && o.XX {
		return fmt.Errorf("%w: NX and XX together", ErrInvalid)
	}
	return nil
}

// Cache is implemented by Redis, Memory and Fallback with identical
// semantics (one conformance suite runs against all of them). Every key can
// be given a TTL with Expire, whatever its type. Empty lists, hashes and sets
// do not exist, as in Redis.
type Cache interface {
	// Get returns the string at key, or ErrMiss.
	Get(ctx context.Context, key string) (string, error)
	// Set stores value; it reports false when NX or XX prevented the write.
	// A plain Set clears any previous TTL.
	Set(ctx context.Context, key, value string, o SetOptions) (bool, error)
	// Delete removes the keys and returns how many existed.
	Delete(ctx context.Context, keys ...string) (int64, error)
	Exists(ctx context.Context, key string) (bool, error)
	// Expire sets a TTL (> 0) on an existing key of any type; false if the
	// key does not exist.
	Expire(ctx context.Context, key string, ttl time.Duration) (bool, error)
	// TTL returns the remaining time to live (millisecond precision), NoTTL
	// for a key without expiry, or ErrMiss.
	TTL(ctx context.Context, key string) (time.Duration, error)

	// GetJSON decodes the JSON string at key into v, or returns ErrMiss.
	GetJSON(ctx context.Context, key string, v any) error
	// SetJSON stores v encoded as JSON, as Set does.
	SetJSON(ctx context.Context, key string, v any, o SetOptions) (bool, error)

	// LPush and RPush add values at the head or tail and return the length.
	LPush(ctx context.Context, key string, values ...string) (int64, error)
	RPush(ctx context.Context, key string, values ...string) (int64, error)
	// LPop and RPop remove an element from the head or tail, or ErrMiss.
	LPop(ctx context.Context, key string) (string, error)
	RPop(ctx context.Context, key string) (string, error)
	// LRange and LTrim take Redis indexes: inclusive, negative from the end.
	LRange(ctx context.Context, key string, start, stop int64) ([]string, error)
	LLen(ctx context.Context, key string) (int64, error)
	LTrim(ctx context.Context, key string, start, stop int64) error

	// HGet returns a field, or ErrMiss.
	HGet(ctx context.Context, key, field string) (string, error)
	// HSet reports whether the field is new.
	HSet(ctx context.Context, key, field, value string) (bool, error)
	HMSet(ctx context.Context, key string, fields map[string]string) error
	// HGetAll returns an empty map for a missing key.
	HGetAll(ctx context.Context, key string) (map[string]string, error)
	HDel(ctx context.Context, key string, fields ...string) (int64, error)

	SAdd(ctx context.Context, key string, members ...string) (int64, error)
	SRem(ctx context.Context, key string, members ...string) (int64, error)
	SIsMember(ctx context.Context, key, member string) (bool, error)
	// SMembers returns the members in no particular order.
	SMembers(ctx context.Context, key string) ([]string, error)

	// Incr and Decr add or subtract n (a missing key counts as 0) and keep
	// the key's TTL.
	Incr(ctx context.Context, key string, n int64) (int64, error)
	Decr(ctx context.Context, key string, n int64) (int64, error)
	// GetSet stores value (clearing any TTL) and returns the previous value;
	// existed is false when there was none.
	GetSet(ctx context.Context, key, value string) (old string, existed bool, err error)

	// TryLock takes the lock name for owner if it is free; it expires after
	// expiry (> 0). Most callers want Acquire.
	TryLock(ctx context.Context, name, owner string, expiry time.Duration) (bool, error)
	// Unlock releases the lock only if owner still holds it (checked
	// atomically); false otherwise.
	Unlock(ctx context.Context, name, owner string) (bool, error)

	// Ping checks that the backend answers.
	Ping(ctx context.Context) error
	// Close releases what the cache started (never a client it was given).
	Close() error
}

// checkTTL rejects what Redis cannot store: TTLs are whole milliseconds.
func checkTTL(what string, d time.Duration) error {
	if d < time.Millisecond {
		return fmt.Errorf("%w: %s must be at least 1ms, got %v", ErrInvalid, what, d)
	}
	return nil
}

// lockKey is the key that holds the lock called name (under the prefix).
func lockKey(name string) string { return "lock:" + name }

func getJSON(ctx context.Context, c Cache, key string, v any) error {
	s, err := c.Get(ctx, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return fmt.Errorf("cache: decode JSON at %q: %w", key, err)
	}
	return nil
}

func setJSON(ctx context.Context, c Cache, key string, v any, o SetOptions) (bool, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return false, fmt.Errorf("cache: encode JSON for %q: %w", key, err)
	}
	return c.Set(ctx, key, string(b), o)
}
