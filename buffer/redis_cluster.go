package buffer

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
)

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
