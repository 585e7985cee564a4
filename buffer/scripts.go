package buffer

import (
	"github.com/redis/go-redis/v9"
)

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
// call in eight (and never counted as seen). The buffer and its dedupe keys
// live at least the buffer TTL and the dedupe window after the last append
// (at most an eighth longer): a TTL is renewed only once it fell below
// that, which keeps the common path at two writes per message (ZADD,
// RPUSH) under persistence.
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
-- keep gives key at least ttl ms to live. Under persistence every write is
-- appended to the AOF, so it renews (to ttl and an eighth) only a TTL that
-- fell below ttl, not on every call.
local function keep(key, ttl)
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl + math.floor(ttl / 8))
  end
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
    keep(buf, tonumber(ARGV[3]))
    if n == appended then
      -- The buffer was empty: it enters the due index. A non-empty buffer
      -- (or one with a batch in flight) is in the index already.
      redis.call('ZADD', KEYS[1], 'NX', string.match(first, '^%d+'), tag)
    end
    if idle then
      redis.call('ZADD', KEYS[2], now, tag)
    end
  end
  keep(dd, tonumber(ARGV[2]))
  out[at] = n or redis.call('LLEN', buf)
end
return out
`)

// convsPerScript bounds how many conversations one appendScript call takes.
const convsPerScript = 64

// claimScript returns the in-flight batch, or claims a new one (see ClaimOptions).
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
// ARGV[10] -> 0: any; 1: claim only records at or before (ARGV[11], ARGV[12]); 2: that, settled (ClaimOptions.Settled)
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
