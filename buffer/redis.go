package buffer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/redisscript"
)

// Redis is a Store in Redis. Each state change is one Lua script; AppendBatch
// pipelines the script calls of many conversations.
//
// On Redis Cluster every script touches the keys of one conversation, which
// share its slot; the due index is kept per slot (Keys.DueSlot), and the
// slots in use are listed in Keys.DueSlots, which Due and Oldest read.
type Redis struct {
	rdb     redis.UniversalClient
	cluster *redis.ClusterClient // nil on a single Redis
	keys    chat.Keys
	cfg     Config

	registered sync.Map // slot tag -> time it was last added to DueSlots
	slotsMu    sync.Mutex
	slots      []string // cached DueSlots members
	slotsAt    time.Time
}

var _ ManyStore = (*Redis)(nil)

// NewRedis returns a Store on rdb.
func NewRedis(rdb redis.UniversalClient, cfg Config) *Redis {
	cfg = cfg.withDefaults()
	r := &Redis{rdb: rdb, keys: chat.NewKeys(cfg.KeyPrefix), cfg: cfg}
	r.cluster, _ = rdb.(*redis.ClusterClient)
	return r
}

// dueKey is the due index that holds c.
func (r *Redis) dueKey(c chat.Conversation) string {
	if r.cluster == nil {
		return r.keys.Due()
	}
	return r.keys.DueSlot(chat.SlotTag(chat.Slot(r.keys.Buffer(c))))
}

// idleKey is the idle index that holds c.
func (r *Redis) idleKey(c chat.Conversation) string {
	if r.cluster == nil {
		return r.keys.Idle()
	}
	return r.keys.IdleSlot(chat.SlotTag(chat.Slot(r.keys.Buffer(c))))
}

func (r *Redis) idleFlag() int {
	if r.cfg.TrackIdle {
		return 1
	}
	return 0
}

// registerEvery is how often a process adds a slot it uses to DueSlots
// again, in case DueSlots was lost (a failover, say).
const registerEvery = time.Minute

// register lists the due slots of items in DueSlots before this process
// uses them, and again every registerEvery: one round trip, and only for
// slots new (or due again) to it.
func (r *Redis) register(ctx context.Context, items []Item) error {
	if r.cluster == nil {
		return nil
	}
	var tags []any
	now := time.Now()
	for _, it := range items {
		tag := chat.SlotTag(chat.Slot(r.keys.Buffer(it.Conv)))
		at, ok := r.registered.Load(tag)
		if (!ok || now.Sub(at.(time.Time)) > registerEvery) && !slices.Contains(tags, any(tag)) {
			tags = append(tags, tag)
		}
	}
	if len(tags) == 0 {
		return nil
	}
	if err := r.rdb.SAdd(ctx, r.keys.DueSlots(), tags...).Err(); err != nil {
		return fmt.Errorf("buffer: register due slots: %w", err)
	}
	for _, t := range tags {
		r.registered.Store(t, now)
	}
	return nil
}

// dueKeys returns every due index key to read.
func (r *Redis) dueKeys(ctx context.Context) ([]string, error) {
	return r.indexKeys(ctx, r.keys.Due(), r.keys.DueSlot)
}

// indexKeys returns every key of an index kept per slot on a cluster
// (slotKey of each slot in use) and in one key (single) otherwise.
func (r *Redis) indexKeys(ctx context.Context, single string, slotKey func(string) string) ([]string, error) {
	if r.cluster == nil {
		return []string{single}, nil
	}
	r.slotsMu.Lock()
	defer r.slotsMu.Unlock()
	if r.slots == nil || time.Since(r.slotsAt) > 5*time.Second {
		tags, err := r.rdb.SMembers(ctx, r.keys.DueSlots()).Result()
		if err != nil {
			return nil, fmt.Errorf("buffer: due slots: %w", err)
		}
		r.slots, r.slotsAt = tags, time.Now()
	}
	keys := make([]string, len(r.slots))
	for i, t := range r.slots {
		keys[i] = slotKey(t)
	}
	return keys, nil
}

// waitReplicas waits until cfg.WaitReplicas replicas of each master that
// holds one of items' buffers have every write so far: per master, a write
// (PEXPIRE of a touched key) and WAIT on one connection, since WAIT counts
// the writes of its own connection, which follow all earlier ones.
func (r *Redis) waitReplicas(ctx context.Context, items []Item) error {
	type target struct {
		node redis.Cmdable
		key  string
	}
	var targets []target
	if r.cluster == nil {
		targets = []target{{r.rdb, r.keys.Buffer(items[0].Conv)}}
	} else {
		seen := map[string]bool{}
		for _, it := range items {
			key := r.keys.Buffer(it.Conv)
			node, err := r.cluster.MasterForKey(ctx, key)
			if err != nil {
				return fmt.Errorf("buffer: wait for replicas: %w", err)
			}
			if addr := node.Options().Addr; !seen[addr] {
				seen[addr] = true
				targets = append(targets, target{node, key})
			}
		}
	}
	for _, t := range targets {
		var wait *redis.Cmd
		_, err := t.node.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.PExpire(ctx, t.key, r.cfg.TTL)
			wait = p.Do(ctx, "WAIT", r.cfg.WaitReplicas, r.cfg.WaitTimeout.Milliseconds())
			return nil
		})
		if err != nil {
			return fmt.Errorf("buffer: wait for replicas: %w", err)
		}
		if n, _ := wait.Int64(); n < int64(r.cfg.WaitReplicas) {
			return fmt.Errorf("buffer: %d of %d replicas acknowledged within %v: %w", n, r.cfg.WaitReplicas, r.cfg.WaitTimeout, ErrNotReplicated)
		}
	}
	return nil
}

// appendScript appends messages of one or more conversations, each at its
// place in its buffer: buffers are sorted by (epoch, seq), the record
// header's second and third fields. A record after the tail (the common
// case) is pushed at the tail; a late one (an earlier message appended by
// a slower worker) is inserted after the last record before it, found by
// walking back from the tail.
//
// KEYS[1] -> due index (ZSET: tag -> oldest receive time, ms)
// KEYS[2] -> idle index (ZSET: tag -> last append, ms)
// KEYS[2c+1], KEYS[2c+2] -> conversation c's buffer (LIST) and dedupe keys
// (ZSET: dedupe key -> first seen, ms), for c = 1..C
// ARGV[1] -> now, ms
// ARGV[2] -> dedupe window, ms
// ARGV[3] -> buffer TTL, ms
// ARGV[4] -> 1: keep the idle index, 0: not
// ARGV[5..] -> per conversation: its tag, its message count k, then k pairs
// (dedupe key, record)
//
// Output: per conversation {buffer length, then per message 1 (appended) or
// 0 (duplicate)}, concatenated.
// Time complexity: O(k log n) per conversation of k messages, n dedupe keys
// in the window, plus the walk back for a late record (O(d) for d records
// after it). Dedupe keys older than the window are trimmed on about one
// call in eight (and never counted as seen), which keeps the common path at
// three commands per message.
var appendScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local horizon = now - tonumber(ARGV[2])
local trim = now % 8 == 0
local idle = ARGV[4] == '1'
local function pos(rec)
  local e, s = string.match(rec, '^%d+ (%d+) (%d+) ')
  return tonumber(e), tonumber(s)
end
local function put(buf, rec)
  local tail = redis.pcall('LINDEX', buf, -1)
  if type(tail) == 'table' and tail.err then return tail end
  if tail then
    local e, s = pos(rec)
    local te, ts = pos(tail)
    if te > e or (te == e and ts > s) then
      local hi = redis.call('LLEN', buf) - 1
      while hi > 0 do
        local lo = math.max(0, hi - 32)
        local part = redis.call('LRANGE', buf, lo, hi - 1)
        for j = #part, 1, -1 do
          local pe, ps = pos(part[j])
          if pe < e or (pe == e and ps <= s) then
            return redis.call('LINSERT', buf, 'AFTER', part[j], rec)
          end
        end
        hi = lo
      end
      return redis.call('LPUSH', buf, rec)
    end
  end
  return redis.pcall('RPUSH', buf, rec)
end
local out = {}
local a = 5
for c = 1, (#KEYS - 2) / 2 do
  local buf, dd = KEYS[2 * c + 1], KEYS[2 * c + 2]
  local tag, k = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local at = #out + 1
  out[at] = 0
  local n, first, appended = nil, nil, 0
  local marked = {}
  for i = a, a + 2 * k - 1, 2 do
    local fresh = redis.call('ZADD', dd, 'NX', now, ARGV[i]) == 1
    local was = false
    if not fresh then
      was = redis.call('ZSCORE', dd, ARGV[i])
      if tonumber(was) < horizon then
        redis.call('ZADD', dd, 'XX', now, ARGV[i])
        fresh = true
      end
    end
    if fresh then
      marked[#marked + 1] = {ARGV[i], was}
      n = put(buf, ARGV[i + 1])
      if type(n) == 'table' and n.err then
        -- The buffer refuses (a key of the wrong type in its place): the
        -- messages of this call were not appended, so they are not seen.
        for _, m in ipairs(marked) do
          if m[2] then redis.call('ZADD', dd, 'XX', m[2], m[1]) else redis.call('ZREM', dd, m[1]) end
        end
        return redis.error_reply(n.err)
      end
      first = first or ARGV[i + 1]
      appended = appended + 1
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
  a = a + 2 * k
  -- After the ZADDs: a script's first write decides whether a full Redis
  -- (maxmemory) refuses it, and an append must be refused there.
  if trim then
    redis.call('ZREMRANGEBYSCORE', dd, '-inf', '(' .. horizon)
  end
  if first then
    redis.call('PEXPIRE', buf, ARGV[3])
    if n == appended then
      -- The buffer was empty: it enters the due index. A non-empty buffer
      -- (or one with a batch in flight) is in the index already.
      redis.call('ZADD', KEYS[1], 'NX', string.match(first, '^%d+'), tag)
    end
    if idle then
      redis.call('ZADD', KEYS[2], now, tag)
    end
  end
  redis.call('PEXPIRE', dd, ARGV[2])
  out[at] = n or redis.call('LLEN', buf)
end
return out
`)

// convsPerScript bounds how many conversations one appendScript call takes.
const convsPerScript = 64

// Append implements Store.
func (r *Redis) Append(ctx context.Context, it Item) (Appended, error) {
	res, err := r.AppendBatch(ctx, []Item{it})
	if err != nil {
		return Appended{}, err
	}
	return res[0], res[0].Err
}

// AppendBatch implements Store: the conversations' messages go to
// appendScript in chunks of convsPerScript conversations (items of one
// conversation keep their order), all chunks in one pipeline. On Redis
// Cluster each call takes one conversation, so that a script touches one
// slot.
func (r *Redis) AppendBatch(ctx context.Context, items []Item) ([]Appended, error) {
	if len(items) == 0 {
		return nil, nil
	}
	if err := r.register(ctx, items); err != nil {
		return nil, err
	}
	groups := groupByConversation(items)
	per := convsPerScript
	if r.cluster != nil {
		per = 1
	}
	var chunks [][][]int
	for i := 0; i < len(groups); i += per {
		chunks = append(chunks, groups[i:min(i+per, len(groups))])
	}
	now := strconv.FormatInt(r.cfg.Now().UnixMilli(), 10)
	window := strconv.FormatInt(r.cfg.DedupeWindow.Milliseconds(), 10)
	ttl := strconv.FormatInt(r.cfg.TTL.Milliseconds(), 10)
	idle := r.idleFlag()

	// Each call is EVALSHA sha numkeys keys... args..., built in one slice.
	calls := make([][]any, len(chunks))
	for ci, chunk := range chunks {
		n := 0
		for _, g := range chunk {
			n += len(g)
		}
		call := make([]any, 0, 5+2*len(chunk)+4+2*len(chunk)+2*n)
		call = append(call, "evalsha", appendScript.Hash(), 2+2*len(chunk), r.dueKey(items[chunk[0][0]].Conv), r.idleKey(items[chunk[0][0]].Conv))
		for _, g := range chunk {
			c := items[g[0]].Conv
			call = append(call, r.keys.Buffer(c), r.keys.Dedupe(c))
		}
		call = append(call, now, window, ttl, idle)
		for _, g := range chunk {
			call = append(call, items[g[0]].Conv.Tag(), len(g))
			for _, i := range g {
				call = append(call, items[i].Key, items[i].Record)
			}
		}
		calls[ci] = call
	}
	// What ran before a NOSCRIPT reload is deduplicated on the rerun.
	cmds, err := redisscript.Pipelined(ctx, r.rdb, appendScript, len(calls), func(p redis.Pipeliner, i int) *redis.Cmd {
		return p.Do(ctx, calls[i]...)
	})
	if err != nil {
		return nil, fmt.Errorf("buffer: append: %w", err)
	}
	if r.cfg.WaitReplicas > 0 {
		if err := r.waitReplicas(ctx, items); err != nil {
			return nil, err
		}
	}

	out := make([]Appended, len(items))
	for ci, chunk := range chunks {
		cmd := cmds[ci]
		if err := cmd.Err(); err != nil {
			if StoreWide(err) {
				return nil, fmt.Errorf("buffer: append: %w", err)
			}
			if len(chunk) > 1 {
				// Redis refused one of several conversations (a key of the
				// wrong type, say): the script stopped there, having
				// appended the ones before. Redo them one by one to find
				// it; what was appended is deduplicated.
				sub := make([]Item, 0)
				var idx []int
				for _, g := range chunk {
					for _, i := range g {
						sub = append(sub, items[i])
						idx = append(idx, i)
					}
				}
				res, err := r.appendEach(ctx, sub)
				if err != nil {
					return nil, err
				}
				for j, i := range idx {
					out[i] = res[j]
				}
				continue
			}
			err = fmt.Errorf("buffer: append to %s: %w", items[chunk[0][0]].Conv, err)
			for _, i := range chunk[0] {
				out[i].Err = err
			}
			continue
		}
		vals, err := cmd.Int64Slice()
		want := 0
		for _, g := range chunk {
			want += len(g) + 1
		}
		if err != nil || len(vals) != want {
			return nil, fmt.Errorf("buffer: append: unexpected reply %v (%v)", vals, err)
		}
		v := 0
		for _, g := range chunk {
			n := vals[v]
			for j, i := range g {
				out[i] = Appended{Dup: vals[v+1+j] == 0}
			}
			// Each item's length as it was after it.
			for j := len(g) - 1; j >= 0; j-- {
				out[g[j]].Len = n
				if !out[g[j]].Dup {
					n--
				}
			}
			v += len(g) + 1
		}
	}
	return out, nil
}

// appendEach appends items one conversation per script call.
func (r *Redis) appendEach(ctx context.Context, items []Item) ([]Appended, error) {
	out := make([]Appended, len(items))
	for _, g := range groupByConversation(items) {
		sub := make([]Item, len(g))
		for j, i := range g {
			sub[j] = items[i]
		}
		res, err := r.appendOne(ctx, sub)
		if err != nil {
			return nil, err
		}
		for j, i := range g {
			out[i] = res[j]
		}
	}
	return out, nil
}

// appendOne appends the items of one conversation in one script call.
func (r *Redis) appendOne(ctx context.Context, items []Item) ([]Appended, error) {
	c := items[0].Conv
	args := []any{r.cfg.Now().UnixMilli(), r.cfg.DedupeWindow.Milliseconds(), r.cfg.TTL.Milliseconds(), r.idleFlag(), c.Tag(), len(items)}
	for _, it := range items {
		args = append(args, it.Key, it.Record)
	}
	vals, err := appendScript.Run(ctx, r.rdb, []string{r.dueKey(c), r.idleKey(c), r.keys.Buffer(c), r.keys.Dedupe(c)}, args...).Int64Slice()
	out := make([]Appended, len(items))
	if err != nil {
		if StoreWide(err) {
			return nil, fmt.Errorf("buffer: append: %w", err)
		}
		for i := range out {
			out[i].Err = fmt.Errorf("buffer: append to %s: %w", c, err)
		}
		return out, nil
	}
	if len(vals) != len(items)+1 {
		return nil, fmt.Errorf("buffer: append: unexpected reply %v", vals)
	}
	n := vals[0]
	for j := len(items) - 1; j >= 0; j-- {
		out[j] = Appended{Dup: vals[j+1] == 0, Len: n}
		if !out[j].Dup {
			n--
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
	idx := groupMaps.Get().(map[chat.Conversation]int)
	defer func() {
		clear(idx)
		groupMaps.Put(idx)
	}()
	of := make([]int, len(items)) // item -> its group
	var sizes []int
	for i, it := range items {
		g, ok := idx[it.Conv]
		if !ok {
			g = len(sizes)
			idx[it.Conv] = g
			sizes = append(sizes, 0)
		}
		of[i] = g
		sizes[g]++
	}
	// The groups share one backing array.
	flat := make([]int, 0, len(items))
	groups := make([][]int, len(sizes))
	for g, n := range sizes {
		groups[g] = flat[len(flat) : len(flat) : len(flat)+n]
		flat = flat[:len(flat)+n]
	}
	for i, g := range of {
		groups[g] = append(groups[g], i)
	}
	return groups
}

// groupMaps are groupByConversation's maps, reused: an append batch of a
// few hundred conversations would otherwise build one each time.
var groupMaps = sync.Pool{New: func() any { return map[chat.Conversation]int{} }}

// claimScript returns the in-flight batch, or claims a new one (see Want).
//
// KEYS[1] -> buffer (LIST)
// KEYS[2] -> in-flight batch (LIST)
// KEYS[3] -> meta (HASH: fence, ctr, batch, reason, created, pos)
// KEYS[4] -> due index (ZSET)
// KEYS[5] -> idle index (ZSET)
// ARGV[1] -> fence
// ARGV[2] -> max messages
// ARGV[3] -> min messages
// ARGV[4] -> claim a partial batch when the oldest message was received before this, ms (0: never)
// ARGV[5] -> reason
// ARGV[6] -> now, ms
// ARGV[7] -> TTL, ms
// ARGV[8] -> the conversation's tag
// ARGV[9] -> now, µs: the floor of a new token
// ARGV[10] -> 1: claim only records at or before (ARGV[11], ARGV[12]); 2: the same, and
//
//	that limit is settled (Want.Settled); 0: any
//
// ARGV[11], ARGV[12] -> that epoch and seq
// ARGV[13] -> most bytes of the records' costs (0: no ceiling)
// ARGV[14] -> claim a partial batch when the last append was before this, ms (0: never)
//
// The first write (PERSIST of the in-flight list, which never has a TTL)
// needs no memory: Redis refuses a script for want of memory (maxmemory,
// noeviction) only at its first write, and a claim must run when Redis is
// full, since flushing is what frees memory.
//
// Output: {-1} fenced; {0} nothing to claim; {3, seqs...} nothing claimed
// because records after the limit would be needed (seqs: see Batch.Beyond);
// {1 new | 2 resumed, token, reason, created ms, pos, records...}
// Time complexity: O(k) for a batch of k messages.
//
// An in-flight batch holds acked messages: it has no TTL, and neither has
// the meta hash (its fence and token) while a batch is in flight; commit
// gives the meta hash its TTL back.
var claimScript = redis.NewScript(`
redis.call('PERSIST', KEYS[2])
local m = redis.call('HMGET', KEYS[3], 'fence', 'pos', 'ctr', 'batch', 'reason', 'created')
local fence = tonumber(ARGV[1])
local seen = tonumber(m[1] or '0')
if fence < seen then return {-1} end
if fence > seen then redis.call('HSET', KEYS[3], 'fence', ARGV[1]) end
redis.call('PEXPIRE', KEYS[3], ARGV[7])
local code, token, reason, created, recs
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PERSIST', KEYS[2])
  redis.call('PERSIST', KEYS[3])
  code, token, reason, created = 2, m[4], m[5], m[6]
  recs = redis.call('LRANGE', KEYS[2], 0, -1)
else
  local n = redis.call('LLEN', KEYS[1])
  if n == 0 then
    redis.call('ZREM', KEYS[4], ARGV[8])
    redis.call('ZREM', KEYS[5], ARGV[8])
    return {0}
  end
  local max, min = tonumber(ARGV[2]), tonumber(ARGV[3])
  local limited, settled = ARGV[10] ~= '0', ARGV[10] == '2'
  local le, ls = tonumber(ARGV[11]), tonumber(ARGV[12])
  local budget = tonumber(ARGV[13])
  local head = redis.call('LRANGE', KEYS[1], 0, math.min(n, max) - 1)
  local k, used, stop = 0, 0, nil
  for i = 1, #head do
    local e, s, fin, cost = string.match(head[i], '^%d+ (%d+) (%d+) ([01]) (%d+) ')
    e, s, cost = tonumber(e), tonumber(s), tonumber(cost)
    if budget > 0 and k > 0 and used + cost > budget then stop = 'bytes' break end
    if limited and (e > le or (e == le and s > ls)) then stop = 'limit' break end
    k, used = k + 1, used + cost
    if fin == '1' then stop = 'end' break end
  end
  reason = ARGV[5]
  local ok = false
  if stop == 'end' or stop == 'bytes' then
    reason, ok = stop, true
  elseif k >= min then
    ok = true
    if reason == 'end' then reason = 'size' end
  elseif k > 0 then
    local before, quiet = tonumber(ARGV[4]), tonumber(ARGV[14])
    if before > 0 then
      local oldest = tonumber(redis.call('ZSCORE', KEYS[4], ARGV[8]) or string.match(head[1], '^%d+'))
      ok = oldest < before
    end
    if not ok and quiet > 0 then
      local last = redis.call('ZSCORE', KEYS[5], ARGV[8])
      ok = last ~= false and tonumber(last) < quiet
    end
  end
  if not ok then
    if stop ~= 'limit' or n < min then return {0} end
    -- Blocked. When the limit is settled, or the last record allowed is
    -- the one at the limit (the first message still stored in CHAT_IN is
    -- in the buffer: its ack is on its way), list the seqs of the records
    -- after it, for the flusher to look further.
    local out = {3}
    local at = settled
    if not at and k > 0 then
      local e, s = string.match(head[k], '^%d+ (%d+) (%d+) ')
      at = tonumber(e) == le and tonumber(s) == ls
    end
    if at then
      for i = k + 1, #head do
        local e2, s2 = string.match(head[i], '^%d+ (%d+) (%d+) ')
        if tonumber(e2) ~= le then break end
        out[#out + 1] = s2
      end
    end
    return out
  end
  recs = {}
  for i = 1, k do recs[i] = head[i] end
  redis.call('LTRIM', KEYS[1], k, -1)
  for i = 1, k, 1000 do
    redis.call('RPUSH', KEYS[2], unpack(recs, i, math.min(i + 999, k)))
  end
  token = string.format('%d', math.max(tonumber(m[3] or '0') + 1, tonumber(ARGV[9])))
  code, created = 1, ARGV[6]
  redis.call('HSET', KEYS[3], 'ctr', token, 'batch', token, 'reason', reason, 'created', created)
  redis.call('PERSIST', KEYS[3])
end
local out = {code, token, reason, created, m[2] or '0'}
for i = 1, #recs do out[i + 5] = recs[i] end
return out
`)

// Claim implements Store.
func (r *Redis) Claim(ctx context.Context, c chat.Conversation, fence int64, w Want) (Batch, error) {
	if w.Max <= 0 {
		return Batch{}, fmt.Errorf("buffer: claim: max %d, want > 0", w.Max)
	}
	keys, args := r.claimArgs(c, fence, w)
	v, err := claimScript.Run(ctx, r.rdb, keys, args...).Slice()
	return claimResult(c, v, err)
}

func (r *Redis) claimArgs(c chat.Conversation, fence int64, w Want) ([]string, []any) {
	now := r.cfg.Now()
	var before int64
	if !w.Before.IsZero() {
		before = w.Before.UnixMilli()
	}
	limited, le, ls := 0, "0", "0"
	if w.Through != nil {
		limited, le, ls = 1, strconv.FormatInt(w.Through.Epoch, 10), strconv.FormatUint(w.Through.Seq, 10)
		if w.Settled {
			limited = 2
		}
	}
	var quiet int64
	if !w.IdleBefore.IsZero() {
		quiet = w.IdleBefore.UnixMilli()
	}
	return []string{r.keys.Buffer(c), r.keys.Inflight(c), r.keys.Meta(c), r.dueKey(c), r.idleKey(c)},
		[]any{fence, w.Max, w.Min, before, string(w.Reason), now.UnixMilli(), r.cfg.TTL.Milliseconds(), c.Tag(), now.UnixMicro(),
			limited, le, ls, max(w.MaxBytes, 0), quiet}
}

func claimResult(c chat.Conversation, v []any, err error) (Batch, error) {
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
	case 3:
		b := Batch{Blocked: true}
		for _, x := range v[1:] {
			str, _ := x.(string)
			seq, err := strconv.ParseUint(str, 10, 64)
			if err != nil {
				return Batch{}, fmt.Errorf("buffer: claim %s: unexpected reply %v", c, v)
			}
			b.Beyond = append(b.Beyond, seq)
		}
		return b, nil
	case 1, 2:
		return parseClaim(code == 2, v[1:])
	default:
		return Batch{}, fmt.Errorf("buffer: claim %s: unexpected reply code %d", c, code)
	}
}

// ClaimMany implements ManyStore: one pipelined round trip.
func (r *Redis) ClaimMany(ctx context.Context, reqs []ClaimReq) ([]Batch, []error, error) {
	cmds, err := redisscript.Pipelined(ctx, r.rdb, claimScript, len(reqs), func(p redis.Pipeliner, i int) *redis.Cmd {
		keys, args := r.claimArgs(reqs[i].Conv, reqs[i].Fence, reqs[i].Want)
		return claimScript.EvalSha(ctx, p, keys, args...)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("buffer: claim many: %w", err)
	}
	batches, errs := make([]Batch, len(reqs)), make([]error, len(reqs))
	for i, cmd := range cmds {
		v, err := cmd.Slice()
		batches[i], errs[i] = claimResult(reqs[i].Conv, v, err)
	}
	return batches, errs, nil
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
// KEYS[5] -> idle index (ZSET)
// ARGV[1] -> fence
// ARGV[2] -> token
// ARGV[3] -> sink position of the batch
// ARGV[4] -> the conversation's tag
// ARGV[5] -> TTL of the meta hash once no batch is in flight, ms
//
// Output: -1 fenced; -2 no such batch in flight; else the buffer's length.
// Time complexity: O(k + log n) for a batch of k messages, n due conversations.
var commitScript = redis.NewScript(`
local m = redis.call('HMGET', KEYS[2], 'fence', 'batch')
if m[1] ~= ARGV[1] then return -1 end
if m[2] ~= ARGV[2] then return -2 end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], 'batch', 'reason', 'created', 'refused')
redis.call('HSET', KEYS[2], 'pos', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local n = redis.call('LLEN', KEYS[3])
if n == 0 then
  redis.call('ZREM', KEYS[4], ARGV[4])
  redis.call('ZREM', KEYS[5], ARGV[4])
else
  redis.call('ZADD', KEYS[4], string.match(redis.call('LINDEX', KEYS[3], 0), '^%d+'), ARGV[4])
end
return n
`)

// Commit implements Store.
func (r *Redis) Commit(ctx context.Context, c chat.Conversation, fence, token int64, pos uint64) (int64, error) {
	keys, args := r.commitArgs(CommitReq{Conv: c, Fence: fence, Token: token, Pos: pos})
	n, err := commitScript.Run(ctx, r.rdb, keys, args...).Int64()
	return commitResult(c, n, err)
}

func (r *Redis) commitArgs(q CommitReq) ([]string, []any) {
	return []string{r.keys.Inflight(q.Conv), r.keys.Meta(q.Conv), r.keys.Buffer(q.Conv), r.dueKey(q.Conv), r.idleKey(q.Conv)},
		[]any{q.Fence, q.Token, strconv.FormatUint(q.Pos, 10), q.Conv.Tag(), r.cfg.TTL.Milliseconds()}
}

func commitResult(c chat.Conversation, n int64, err error) (int64, error) {
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

// CommitMany implements ManyStore: one pipelined round trip.
func (r *Redis) CommitMany(ctx context.Context, reqs []CommitReq) ([]int64, []error, error) {
	cmds, err := redisscript.Pipelined(ctx, r.rdb, commitScript, len(reqs), func(p redis.Pipeliner, i int) *redis.Cmd {
		keys, args := r.commitArgs(reqs[i])
		return commitScript.EvalSha(ctx, p, keys, args...)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("buffer: commit many: %w", err)
	}
	left, errs := make([]int64, len(reqs)), make([]error, len(reqs))
	for i, cmd := range cmds {
		n, err := cmd.Int64()
		left[i], errs[i] = commitResult(reqs[i].Conv, n, err)
	}
	return left, errs, nil
}

// retokenScript gives the in-flight batch a new token.
//
// KEYS[1] -> meta (HASH)
// ARGV[1] -> fence
// ARGV[2] -> the batch's token
// ARGV[3] -> the new token must be above this
// ARGV[4] -> now, µs
//
// Output: -1 fenced; -2 no such batch in flight; else the new token.
// Time complexity: O(1).
var retokenScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[1], 'batch') ~= ARGV[2] then return -2 end
local last = tonumber(redis.call('HGET', KEYS[1], 'ctr') or '0')
local token = string.format('%d', math.max(last + 1, tonumber(ARGV[3]) + 1, tonumber(ARGV[4])))
redis.call('HSET', KEYS[1], 'ctr', token, 'batch', token)
return tonumber(token)
`)

// Retoken implements Store.
func (r *Redis) Retoken(ctx context.Context, c chat.Conversation, fence, token, above int64) (int64, error) {
	n, err := retokenScript.Run(ctx, r.rdb, []string{r.keys.Meta(c)}, fence, token, above, r.cfg.Now().UnixMicro()).Int64()
	return commitResult(c, n, err)
}

// refusedScript records the first refusal of the in-flight batch.
//
// KEYS[1] -> meta (HASH)
// ARGV[1] -> fence
// ARGV[2] -> the batch's token
// ARGV[3] -> now, ms
//
// Output: -1 fenced; -2 no such batch in flight; else the time of the
// batch's first recorded refusal, ms.
// Time complexity: O(1).
var refusedScript = redis.NewScript(`
local m = redis.call('HMGET', KEYS[1], 'fence', 'batch', 'refused')
if m[1] ~= ARGV[1] then return -1 end
if m[2] ~= ARGV[2] then return -2 end
if m[3] then return tonumber(m[3]) end
redis.call('HSET', KEYS[1], 'refused', ARGV[3])
return tonumber(ARGV[3])
`)

// Refused implements Store.
func (r *Redis) Refused(ctx context.Context, c chat.Conversation, fence, token int64, at time.Time) (time.Time, error) {
	n, err := refusedScript.Run(ctx, r.rdb, []string{r.keys.Meta(c)}, fence, token, at.UnixMilli()).Int64()
	if n, err = commitResult(c, n, err); err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(n), nil
}

// Due implements Store: one ZRANGE BYSCORE, O(log n + limit); on a cluster,
// one per slot in use, pipelined.
func (r *Redis) Due(ctx context.Context, before time.Time, limit int) ([]chat.Conversation, error) {
	keys, err := r.dueKeys(ctx)
	if err != nil {
		return nil, err
	}
	return r.byScore(ctx, "due", keys, before, limit)
}

// Idle implements Store, as Due on the idle index.
func (r *Redis) Idle(ctx context.Context, before time.Time, limit int) ([]chat.Conversation, error) {
	keys, err := r.indexKeys(ctx, r.keys.Idle(), r.keys.IdleSlot)
	if err != nil {
		return nil, err
	}
	return r.byScore(ctx, "idle", keys, before, limit)
}

// byScore returns up to limit members scored below before in the index
// keys, lowest first.
func (r *Redis) byScore(ctx context.Context, index string, keys []string, before time.Time, limit int) ([]chat.Conversation, error) {
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.ZSliceCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
			Key:     k,
			Start:   "-inf",
			Stop:    "(" + strconv.FormatInt(before.UnixMilli(), 10),
			ByScore: true,
			Count:   int64(limit),
		})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("buffer: %s: %w", index, err)
	}
	var zs []redis.Z
	for _, c := range cmds {
		zs = append(zs, c.Val()...)
	}
	if len(keys) > 1 {
		slices.SortFunc(zs, func(a, b redis.Z) int {
			if a.Score != b.Score {
				return cmp.Compare(a.Score, b.Score)
			}
			return cmp.Compare(a.Member.(string), b.Member.(string))
		})
		zs = zs[:min(len(zs), limit)]
	}
	out := make([]chat.Conversation, 0, len(zs))
	for _, z := range zs {
		tag, _ := z.Member.(string)
		c, err := chat.ParseTag(tag)
		if err != nil {
			return nil, fmt.Errorf("buffer: %s index holds %q: %w", index, tag, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Oldest implements Store.
func (r *Redis) Oldest(ctx context.Context) (time.Time, bool, error) {
	keys, err := r.dueKeys(ctx)
	if err != nil {
		return time.Time{}, false, err
	}
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.ZSliceCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.ZRangeWithScores(ctx, k, 0, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return time.Time{}, false, fmt.Errorf("buffer: oldest: %w", err)
	}
	var oldest float64
	found := false
	for _, c := range cmds {
		if zs := c.Val(); len(zs) > 0 && (!found || zs[0].Score < oldest) {
			oldest, found = zs[0].Score, true
		}
	}
	if !found {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(int64(oldest)), true, nil
}

// Len implements Store.
func (r *Redis) Len(ctx context.Context, c chat.Conversation) (int64, error) {
	n, err := r.rdb.LLen(ctx, r.keys.Buffer(c)).Result()
	if err != nil {
		return 0, fmt.Errorf("buffer: len %s: %w", c, err)
	}
	return n, nil
}
