package completion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Redis is the Cache shared by every instance on one Redis (or Redis
// Cluster). Entry expiry follows Config.Now; Redis TTLs on every key reclaim
// the memory of what has expired or been abandoned.
type Redis struct {
	c   redis.UniversalClient
	cfg Config
	k   keys
}

var _ Cache = (*Redis)(nil)

// NewRedis returns a completion cache over client. It returns ErrInvalid
// for a bad Config (an unknown strategy, a negative size...).
func NewRedis(client redis.UniversalClient, cfg Config) (*Redis, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Redis{c: client, cfg: cfg, k: newKeys(cfg.Prefix)}, nil
}

// getScript reads an entry and, on a hit, records the access.
//
// KEYS[1] -> cache:{u}:<key> (the entry)
// KEYS[2] -> access_order:{u}
// KEYS[3] -> hot_keys:{u}
// ARGV[1] -> member (escaped key)
// ARGV[2] -> now, ms
// ARGV[3] -> context hash that must match; "" matches any
// ARGV[4] -> TTL, ms (0: none) to keep on hot_keys
// Output: the suggestions JSON on a hit; nil on a miss.
// Time complexity: O(log n), n the user's entries.
var getScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 's', 'h', 'e')
if not v[1] then return false end
local e = tonumber(v[3])
if e > 0 and e <= tonumber(ARGV[2]) then return false end
if ARGV[3] ~= '' and v[2] ~= ARGV[3] then return false end
redis.call('ZADD', KEYS[2], 'XX', ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
return v[1]
`)

func (r *Redis) Get(ctx context.Context, user, key, contextHash string) ([]Suggestion, error) {
	if err := checkIDs(userKey, user, key); err != nil {
		return nil, err
	}
	v, err := getScript.Run(ctx, r.c,
		[]string{r.k.entry(user, key), r.k.accessOrder(user), r.k.hotKeys(user)},
		escape(key), ms(r.cfg.Now()), contextHash, r.cfg.entryTTL().Milliseconds(),
	).Result()
	hit := err == nil
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("completion: get: %w", err)
	}
	// The counters are global keys, outside the user's slot: not in the script.
	outcome := statMisses
	if hit {
		outcome = statHits
	}
	pipe := r.c.Pipeline()
	pipe.Incr(ctx, r.k.stat(statTotalRequests))
	pipe.Incr(ctx, r.k.stat(outcome))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("completion: count get: %w", err)
	}
	if !hit {
		return nil, ErrMiss
	}
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("completion: get: unexpected reply %#v", v)
	}
	return decodeSuggestions(s)
}

// dropLua defines drop(m): remove member m from the user's sets and delete
// its entry. It expects KEYS[1..5] = key_index, access_order,
// confidence_order, expiry_order, hot_keys and ARGV[1] = the entry key
// prefix (the entry keys share the user's hash tag, hence the slot).
const dropLua = `
local function drop(m)
	redis.call('DEL', ARGV[1] .. m)
	for i = 1, 4 do redis.call('ZREM', KEYS[i], m) end
	redis.call('HDEL', KEYS[5], m)
end
`

// putScript stores an entry, removes the user's expired entries, then
// evicts beyond the maximum size, sparing hot keys once.
//
// KEYS[1] -> key_index:{u}
// KEYS[2] -> access_order:{u}
// KEYS[3] -> confidence_order:{u}
// KEYS[4] -> expiry_order:{u}
// KEYS[5] -> hot_keys:{u}
// KEYS[6] -> cache:{u}:<key> (the entry)
// ARGV[1] -> entry key prefix, cache:{u}:
// ARGV[2] -> member (escaped key)
// ARGV[3] -> suggestions JSON
// ARGV[4] -> context hash
// ARGV[5] -> confidence
// ARGV[6] -> now, ms
// ARGV[7] -> expiry, ms (0: never)
// ARGV[8] -> TTL, ms (0: none)
// ARGV[9] -> max size
// ARGV[10] -> eviction order: 2 (access_order) or 3 (confidence_order)
// ARGV[11] -> hot threshold: more reads than this spare a key once
// ARGV[12] -> the most hot keys one Put may spare
// Output: the number of entries evicted.
// Time complexity: O((1 + x + e + s) log n): x expired entries removed, e
// evictions (1 in a steady state), s <= ARGV[12] spared, n the user's entries.
var putScript = redis.NewScript(dropLua + `
for _, x in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[6])) do drop(x) end

local m = ARGV[2]
local ttl = tonumber(ARGV[8])
if redis.call('ZADD', KEYS[1], 0, m) == 1 then
	redis.call('HDEL', KEYS[5], m) -- a new entry starts cold
end
redis.call('HSET', KEYS[6], 's', ARGV[3], 'h', ARGV[4], 'c', ARGV[5], 'e', ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[6], m)
redis.call('ZADD', KEYS[3], ARGV[5], m)
if ttl > 0 then
	redis.call('ZADD', KEYS[4], ARGV[7], m)
	for i = 1, 6 do redis.call('PEXPIRE', KEYS[i], ttl) end
else
	redis.call('ZREM', KEYS[4], m)
	for i = 1, 6 do redis.call('PERSIST', KEYS[i]) end
end

local order = KEYS[tonumber(ARGV[10])]
local max, hot, spares = tonumber(ARGV[9]), tonumber(ARGV[11]), tonumber(ARGV[12])
local n = redis.call('ZCARD', KEYS[1])
local evicted, idx, nspared, sparing, spared = 0, 0, 0, true, {}
while n > max do
	local c = redis.call('ZRANGE', order, idx, idx)[1]
	if not c then
		-- Only the new entry and spared keys are left: evict spared ones too.
		if not sparing then break end
		sparing, idx = false, 0
	elseif c == m or (sparing and spared[c]) then
		idx = idx + 1
	elseif sparing and nspared < spares and tonumber(redis.call('HGET', KEYS[5], c) or '0') > hot then
		redis.call('HDEL', KEYS[5], c) -- the hot mark is spent
		spared[c] = true
		nspared = nspared + 1
		idx = idx + 1
	else
		drop(c)
		n = n - 1
		evicted = evicted + 1
	end
end
return evicted
`)

func (r *Redis) Put(ctx context.Context, user, key string, suggestions []Suggestion, contextHash string, confidence float64) error {
	enc, err := encodePut(user, key, suggestions, confidence)
	if err != nil {
		return err
	}
	now := r.cfg.Now()
	ttl := r.cfg.entryTTL()
	var expiry int64
	if ttl > 0 {
		expiry = ms(now.Add(ttl))
	}
	order := 2
	if r.cfg.Strategy == StrategyTTL {
		order = 3
	}
	v, err := putScript.Run(ctx, r.c, append(r.k.userSets(user), r.k.entry(user, key)),
		r.k.entryPrefix(user), escape(key), enc, contextHash,
		strconv.FormatFloat(confidence, 'g', -1, 64), ms(now), expiry, ttl.Milliseconds(),
		r.cfg.MaxSize, order, r.cfg.HotThreshold, maxHotSpares,
	).Result()
	if err != nil {
		return fmt.Errorf("completion: put: %w", err)
	}
	evicted, ok := v.(int64)
	switch {
	case !ok || evicted < 0:
		return fmt.Errorf("completion: put: unexpected reply %#v", v)
	case evicted > 0:
		if err := r.c.IncrBy(ctx, r.k.stat(statEvictions), evicted).Err(); err != nil {
			return fmt.Errorf("completion: count evictions: %w", err)
		}
	}
	return nil
}

// invalidateScript removes the user's entries whose escaped key lies in a
// lexicographic range: one key ("[k", "[k") or a prefix (see lexRange).
// The range bounds are data, never patterns: no glob is interpreted.
//
// KEYS[1..5] -> key_index, access_order, confidence_order, expiry_order, hot_keys of {u}
// ARGV[1] -> entry key prefix, cache:{u}:
// ARGV[2] -> lower bound for ZRANGEBYLEX
// ARGV[3] -> upper bound for ZRANGEBYLEX
// Output: the number of entries removed.
// Time complexity: O((1 + k) log n), k entries removed.
var invalidateScript = redis.NewScript(dropLua + `
local ms = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3])
for _, m in ipairs(ms) do drop(m) end
return #ms
`)

func (r *Redis) invalidate(ctx context.Context, user, lo, hi string) (int, error) {
	v, err := invalidateScript.Run(ctx, r.c, r.k.userSets(user), r.k.entryPrefix(user), lo, hi).Result()
	if err != nil {
		return 0, fmt.Errorf("completion: invalidate: %w", err)
	}
	n, ok := v.(int64)
	if !ok || n < 0 {
		return 0, fmt.Errorf("completion: invalidate: unexpected reply %#v", v)
	}
	return int(n), nil
}

func (r *Redis) Invalidate(ctx context.Context, user, key string) (int, error) {
	if err := checkIDs(userKey, user, key); err != nil {
		return 0, err
	}
	m := "[" + escape(key)
	return r.invalidate(ctx, user, m, m)
}

func (r *Redis) InvalidatePrefix(ctx context.Context, user, prefix string) (int, error) {
	if err := checkIDs(userKey[:1], user); err != nil {
		return 0, err
	}
	lo, hi := lexRange(escape(prefix))
	return r.invalidate(ctx, user, lo, hi)
}

func (r *Redis) PutPrecomputed(ctx context.Context, user, docID string, value json.RawMessage) error {
	if err := checkPrecomputed(user, docID, value); err != nil {
		return err
	}
	// The deadline travels with the value so that Config.Now rules expiry;
	// the Redis TTL reclaims the key.
	expiry := ms(r.cfg.Now().Add(r.cfg.PrecomputedTTL))
	v := strconv.FormatInt(expiry, 10) + ":" + string(value)
	if err := r.c.Set(ctx, r.k.precomputed(user, docID), v, r.cfg.PrecomputedTTL).Err(); err != nil {
		return fmt.Errorf("completion: put precomputed: %w", err)
	}
	return nil
}

func (r *Redis) GetPrecomputed(ctx context.Context, user, docID string) (json.RawMessage, error) {
	if err := checkIDs(userDoc, user, docID); err != nil {
		return nil, err
	}
	v, err := r.c.Get(ctx, r.k.precomputed(user, docID)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrMiss
	}
	if err != nil {
		return nil, fmt.Errorf("completion: get precomputed: %w", err)
	}
	exp, value, ok := strings.Cut(v, ":")
	deadline, err := strconv.ParseInt(exp, 10, 64)
	if !ok || err != nil {
		return nil, fmt.Errorf("completion: get precomputed: malformed value %.40q", v)
	}
	if deadline <= ms(r.cfg.Now()) {
		return nil, ErrMiss
	}
	return json.RawMessage(value), nil
}

var statNames = []string{statTotalRequests, statHits, statMisses, statEvictions}

// Stats reads the counters back from Redis (one pipelined round trip).
func (r *Redis) Stats(ctx context.Context) (Stats, error) {
	pipe := r.c.Pipeline()
	cmds := make([]*redis.StringCmd, len(statNames))
	for i, name := range statNames {
		cmds[i] = pipe.Get(ctx, r.k.stat(name))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Stats{}, fmt.Errorf("completion: stats: %w", err)
	}
	var vals [4]int64
	for i, cmd := range cmds {
		n, err := cmd.Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return Stats{}, fmt.Errorf("completion: stats %s: %w", statNames[i], err)
		}
		vals[i] = n
	}
	s := Stats{TotalRequests: vals[0], Hits: vals[1], Misses: vals[2], Evictions: vals[3]}
	s.computeHitRate()
	return s, nil
}
