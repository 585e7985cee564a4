package buffer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
)

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
