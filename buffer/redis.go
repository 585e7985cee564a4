package buffer

import (
	"context"
	"fmt"
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

// Len implements Store.
func (r *Redis) Len(ctx context.Context, c chat.Conversation) (int64, error) {
	n, err := r.rdb.LLen(ctx, r.keys.Buffer(c)).Result()
	if err != nil {
		return 0, fmt.Errorf("buffer: len %s: %w", c, err)
	}
	return n, nil
}

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
