package buffer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
)

// Redis is a Store in Redis. Each state change is one Lua script; AppendBatch
// pipelines one script call per conversation.
type Redis struct {
	rdb  redis.UniversalClient
	keys chat.Keys
	cfg  Config
}

var _ Store = (*Redis)(nil)

// NewRedis returns a Store on rdb.
func NewRedis(rdb redis.UniversalClient, cfg Config) *Redis {
	cfg = cfg.withDefaults()
	return &Redis{rdb: rdb, keys: chat.NewKeys(cfg.KeyPrefix), cfg: cfg}
}

// appendScript appends messages of one conversation.
//
// KEYS[1] -> buffer (LIST)
// KEYS[2] -> dedupe (ZSET: dedupe key -> first seen, ms)
// KEYS[3] -> due index (ZSET: tag -> oldest receive time, ms)
// ARGV[1] -> now, ms
// ARGV[2] -> dedupe window, ms
// ARGV[3] -> buffer TTL, ms
// ARGV[4] -> the conversation's tag
// ARGV[5..] -> pairs: dedupe key, record
//
// Output: {buffer length, then per message 1 (appended) or 0 (duplicate)}
// Time complexity: O(k log n) for k messages, n dedupe keys in the window.
var appendScript = redis.NewScript(`
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[2])))
local out = {0}
local first = nil
for i = 5, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    out[#out + 1] = 0
  else
    redis.call('ZADD', KEYS[2], now, ARGV[i])
    redis.call('RPUSH', KEYS[1], ARGV[i + 1])
    first = first or ARGV[i + 1]
    out[#out + 1] = 1
  end
end
if first then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[3], 'NX', string.match(first, '^%d+'), ARGV[4])
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
out[1] = redis.call('LLEN', KEYS[1])
return out
`)

// Append implements Store.
func (r *Redis) Append(ctx context.Context, it Item) (Appended, error) {
	res, err := r.AppendBatch(ctx, []Item{it})
	if err != nil {
		return Appended{}, err
	}
	return res[0], res[0].Err
}

// AppendBatch implements Store: one script call per conversation (items of
// one conversation keep their order), all in one pipeline.
func (r *Redis) AppendBatch(ctx context.Context, items []Item) ([]Appended, error) {
	if len(items) == 0 {
		return nil, nil
	}
	groups := groupByConversation(items)
	now := strconv.FormatInt(r.cfg.Now().UnixMilli(), 10)
	window := strconv.FormatInt(r.cfg.DedupeWindow.Milliseconds(), 10)
	ttl := strconv.FormatInt(r.cfg.TTL.Milliseconds(), 10)

	run := func() []redis.Cmder {
		pipe := r.rdb.Pipeline()
		for _, g := range groups {
			c := items[g[0]].Conv
			keys := []string{r.keys.Buffer(c), r.keys.Dedupe(c), r.keys.Due()}
			args := make([]any, 0, 4+2*len(g))
			args = append(args, now, window, ttl, c.Tag())
			for _, i := range g {
				args = append(args, items[i].Key, items[i].Record)
			}
			appendScript.EvalSha(ctx, pipe, keys, args...)
		}
		cmds, _ := pipe.Exec(ctx) // errors are read per command below
		return cmds
	}
	cmds := run()
	if slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return isNoScript(c.Err()) }) {
		// The server lost its script cache (restart, SCRIPT FLUSH). What ran
		// before is deduplicated on the retry.
		if err := appendScript.Load(ctx, r.rdb).Err(); err != nil {
			return nil, fmt.Errorf("buffer: append: load script: %w", err)
		}
		cmds = run()
	}

	out := make([]Appended, len(items))
	for gi, g := range groups {
		cmd := cmds[gi].(*redis.Cmd)
		if err := cmd.Err(); err != nil {
			var rerr redis.Error
			if !errors.As(err, &rerr) || isTransient(rerr) {
				return nil, fmt.Errorf("buffer: append: %w", err)
			}
			// Redis refused this conversation's script (a key of the wrong
			// type, say): report it on its items, keep the others.
			err = fmt.Errorf("buffer: append to %s: %w", items[g[0]].Conv, err)
			for _, i := range g {
				out[i].Err = err
			}
			continue
		}
		vals, err := cmd.Int64Slice()
		if err != nil || len(vals) != len(g)+1 {
			return nil, fmt.Errorf("buffer: append: unexpected reply %v (%v)", vals, err)
		}
		for j, i := range g {
			out[i] = Appended{Dup: vals[j+1] == 0, Len: vals[0]}
		}
	}
	// Within a conversation, report each item's length as it was after it.
	for _, g := range groups {
		if out[g[0]].Err != nil {
			continue
		}
		n := out[g[len(g)-1]].Len
		for j := len(g) - 1; j >= 0; j-- {
			out[g[j]].Len = n
			if !out[g[j]].Dup {
				n--
			}
		}
	}
	return out, nil
}

// groupByConversation returns the indexes of items per conversation, in
// order of first appearance.
func groupByConversation(items []Item) [][]int {
	if len(items) == 1 {
		return [][]int{{0}}
	}
	idx := make(map[chat.Conversation]int, len(items))
	var groups [][]int
	for i, it := range items {
		g, ok := idx[it.Conv]
		if !ok {
			g = len(groups)
			idx[it.Conv] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

// isTransient reports a server reply that concerns the server, not the
// conversation: loading its data, busy with a script, failing over.
func isTransient(err redis.Error) bool {
	for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"} {
		if strings.HasPrefix(err.Error(), p) {
			return true
		}
	}
	return false
}

func isNoScript(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "NOSCRIPT")
}

// claimScript returns the in-flight batch, or claims a new one.
//
// KEYS[1] -> buffer (LIST)
// KEYS[2] -> in-flight batch (LIST)
// KEYS[3] -> meta (HASH: fence, ctr, batch, reason, created, pos)
// KEYS[4] -> due index (ZSET)
// ARGV[1] -> fence
// ARGV[2] -> max messages
// ARGV[3] -> min messages
// ARGV[4] -> claim a partial buffer whose head was received before this, ms (0: never)
// ARGV[5] -> reason
// ARGV[6] -> now, ms
// ARGV[7] -> TTL, ms
// ARGV[8] -> the conversation's tag
//
// Output: {-1} fenced; {0} nothing to claim;
// {1 new | 2 resumed, token, reason, created ms, pos, records...}
// Time complexity: O(k) for a batch of k messages.
var claimScript = redis.NewScript(`
local fence = tonumber(ARGV[1])
local seen = tonumber(redis.call('HGET', KEYS[3], 'fence') or '0')
if fence < seen then return {-1} end
if fence > seen then redis.call('HSET', KEYS[3], 'fence', ARGV[1]) end
redis.call('PEXPIRE', KEYS[3], ARGV[7])
local pos = redis.call('HGET', KEYS[3], 'pos') or '0'
local code, token, reason, created
if redis.call('EXISTS', KEYS[2]) == 1 then
  local m = redis.call('HMGET', KEYS[3], 'batch', 'reason', 'created')
  code, token, reason, created = 2, m[1], m[2], m[3]
else
  local n = redis.call('LLEN', KEYS[1])
  if n == 0 then
    redis.call('ZREM', KEYS[4], ARGV[8])
    return {0}
  end
  if n < tonumber(ARGV[3]) then
    local before = tonumber(ARGV[4])
    if before == 0 then return {0} end
    local head = redis.call('LINDEX', KEYS[1], 0)
    if tonumber(string.match(head, '^%d+')) >= before then return {0} end
  end
  for i = 1, math.min(n, tonumber(ARGV[2])) do
    redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
  local last = tonumber(redis.call('HGET', KEYS[3], 'ctr') or '0')
  token = string.format('%d', math.max(last + 1, tonumber(ARGV[6])))
  code, reason, created = 1, ARGV[5], ARGV[6]
  redis.call('HSET', KEYS[3], 'ctr', token, 'batch', token, 'reason', reason, 'created', created)
end
local out = {code, token, reason, created, pos}
for _, rec in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do out[#out + 1] = rec end
return out
`)

// Claim implements Store.
func (r *Redis) Claim(ctx context.Context, c chat.Conversation, fence int64, w Want) (Batch, error) {
	if w.Max <= 0 {
		return Batch{}, fmt.Errorf("buffer: claim: max %d, want > 0", w.Max)
	}
	var before int64
	if !w.Before.IsZero() {
		before = w.Before.UnixMilli()
	}
	keys := []string{r.keys.Buffer(c), r.keys.Inflight(c), r.keys.Meta(c), r.keys.Due()}
	v, err := claimScript.Run(ctx, r.rdb, keys, fence, w.Max, w.Min, before, string(w.Reason),
		r.cfg.Now().UnixMilli(), r.cfg.TTL.Milliseconds(), c.Tag()).Slice()
	if err != nil {
		return Batch{}, fmt.Errorf("buffer: claim %s: %w", c, err)
	}
	code, ok := v[0].(int64)
	if !ok {
		return Batch{}, fmt.Errorf("buffer: claim %s: unexpected reply %v", c, v)
	}
	switch code {
	case -1:
		return Batch{}, ErrFenced
	case 0:
		return Batch{}, nil
	case 1, 2:
		return parseClaim(code == 2, v[1:])
	default:
		return Batch{}, fmt.Errorf("buffer: claim %s: unexpected reply code %d", c, code)
	}
}

func parseClaim(resumed bool, v []any) (Batch, error) {
	if len(v) < 5 {
		return Batch{}, fmt.Errorf("buffer: claim: unexpected reply %v", v)
	}
	strs := make([]string, 4)
	for i := range strs {
		s, ok := v[i].(string)
		if !ok {
			return Batch{}, fmt.Errorf("buffer: claim: unexpected reply field %d: %v", i, v[i])
		}
		strs[i] = s
	}
	token, err1 := strconv.ParseInt(strs[0], 10, 64)
	created, err2 := strconv.ParseInt(strs[2], 10, 64)
	pos, err3 := strconv.ParseUint(strs[3], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Batch{}, fmt.Errorf("buffer: claim: unexpected reply: %w", err)
	}
	b := Batch{
		Token:   token,
		Reason:  chat.Trigger(strs[1]),
		Created: time.UnixMilli(created),
		Resumed: resumed,
		After:   pos,
		Records: make([][]byte, 0, len(v)-4),
	}
	for _, rec := range v[4:] {
		s, ok := rec.(string)
		if !ok {
			return Batch{}, fmt.Errorf("buffer: claim: unexpected record %v", rec)
		}
		b.Records = append(b.Records, []byte(s))
	}
	return b, nil
}

// commitScript deletes a published in-flight batch.
//
// KEYS[1] -> in-flight batch (LIST)
// KEYS[2] -> meta (HASH)
// KEYS[3] -> buffer (LIST)
// KEYS[4] -> due index (ZSET)
// ARGV[1] -> fence
// ARGV[2] -> token
// ARGV[3] -> sink position of the batch
// ARGV[4] -> the conversation's tag
//
// Output: -1 fenced; -2 no such batch in flight; else the buffer's length.
// Time complexity: O(k + log n) for a batch of k messages, n due conversations.
var commitScript = redis.NewScript(`
if redis.call('HGET', KEYS[2], 'fence') ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[2], 'batch') ~= ARGV[2] then return -2 end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], 'batch', 'reason', 'created')
redis.call('HSET', KEYS[2], 'pos', ARGV[3])
local n = redis.call('LLEN', KEYS[3])
if n == 0 then
  redis.call('ZREM', KEYS[4], ARGV[4])
else
  redis.call('ZADD', KEYS[4], string.match(redis.call('LINDEX', KEYS[3], 0), '^%d+'), ARGV[4])
end
return n
`)

// Commit implements Store.
func (r *Redis) Commit(ctx context.Context, c chat.Conversation, fence, token int64, pos uint64) (int64, error) {
	keys := []string{r.keys.Inflight(c), r.keys.Meta(c), r.keys.Buffer(c), r.keys.Due()}
	n, err := commitScript.Run(ctx, r.rdb, keys, fence, token, strconv.FormatUint(pos, 10), c.Tag()).Int64()
	if err != nil {
		return 0, fmt.Errorf("buffer: commit %s: %w", c, err)
	}
	switch {
	case n == -1:
		return 0, ErrFenced
	case n == -2:
		return 0, ErrNoBatch
	case n >= 0:
		return n, nil
	default:
		return 0, fmt.Errorf("buffer: commit %s: unexpected reply %d", c, n)
	}
}

// Due implements Store: one ZRANGE BYSCORE, O(log n + limit).
func (r *Redis) Due(ctx context.Context, before time.Time, limit int) ([]chat.Conversation, error) {
	tags, err := r.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key:     r.keys.Due(),
		Start:   "-inf",
		Stop:    "(" + strconv.FormatInt(before.UnixMilli(), 10),
		ByScore: true,
		Count:   int64(limit),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("buffer: due: %w", err)
	}
	out := make([]chat.Conversation, 0, len(tags))
	for _, tag := range tags {
		c, err := chat.ParseTag(tag)
		if err != nil {
			return nil, fmt.Errorf("buffer: due index holds %q: %w", tag, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Oldest implements Store.
func (r *Redis) Oldest(ctx context.Context) (time.Time, bool, error) {
	zs, err := r.rdb.ZRangeWithScores(ctx, r.keys.Due(), 0, 0).Result()
	if err != nil {
		return time.Time{}, false, fmt.Errorf("buffer: oldest: %w", err)
	}
	if len(zs) == 0 {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(int64(zs[0].Score)), true, nil
}

// Len implements Store.
func (r *Redis) Len(ctx context.Context, c chat.Conversation) (int64, error) {
	n, err := r.rdb.LLen(ctx, r.keys.Buffer(c)).Result()
	if err != nil {
		return 0, fmt.Errorf("buffer: len %s: %w", c, err)
	}
	return n, nil
}
