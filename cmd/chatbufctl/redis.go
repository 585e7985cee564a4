package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
)

// inspector reads chatbuf's Redis keys through chat.Keys: the due index (one
// key on a single Redis, one per slot in use on a cluster) and each
// conversation's own keys. It never lists the keyspace.
type inspector struct {
	rdb    redis.UniversalClient
	keys   chat.Keys
	maxAge time.Duration
	now    time.Time
}

func (a *app) inspector() (*inspector, error) {
	rdb, err := a.redis()
	if err != nil {
		return nil, err
	}
	return &inspector{rdb: rdb, keys: a.cfg.keys(), maxAge: a.cfg.maxAge(), now: a.now()}, nil
}

// pageSize is how many due index entries one round trip reads.
const pageSize = 500

// dueKeys lists the due index keys.
func (in *inspector) dueKeys(ctx context.Context) ([]string, error) {
	if _, ok := in.rdb.(*redis.ClusterClient); !ok {
		return []string{in.keys.Due()}, nil
	}
	tags, err := in.rdb.SMembers(ctx, in.keys.DueSlots()).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: SMEMBERS %s: %w", in.keys.DueSlots(), err)
	}
	slices.Sort(tags)
	out := make([]string, len(tags))
	for i, t := range tags {
		out[i] = in.keys.DueSlot(t)
	}
	return out, nil
}

// entry is one member of the due index: a conversation and the receive
// time of its oldest buffered or in-flight message.
type entry struct {
	tag    string
	oldest int64 // ms
}

// cursor is a place in the due index order (oldest, tag): "<ms>:<tag>".
func (e entry) cursor() string { return strconv.FormatInt(e.oldest, 10) + ":" + e.tag }

func parseCursor(s string) (entry, error) {
	ms, tag, ok := strings.Cut(s, ":")
	n, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil || tag == "" {
		return entry{}, fmt.Errorf("--cursor %q: not a cursor printed by ls (want <ms>:<conversation tag>)", s)
	}
	return entry{tag: tag, oldest: n}, nil
}

func less(a, b entry) int {
	if c := cmp.Compare(a.oldest, b.oldest); c != 0 {
		return c
	}
	return cmp.Compare(a.tag, b.tag)
}

// page returns up to limit due index entries after the cursor (from the
// start when after is nil), oldest first, merged over every due index key:
// per key one ZRANGE BYSCORE of the entries with a later time and one of the
// entries sharing the cursor's time, pipelined.
func (in *inspector) page(ctx context.Context, keys []string, after *entry, limit int) ([]entry, error) {
	pipe := in.rdb.Pipeline()
	var cmds []*redis.ZSliceCmd
	for _, k := range keys {
		start := "-inf"
		if after != nil {
			start = "(" + strconv.FormatInt(after.oldest, 10)
			at := strconv.FormatInt(after.oldest, 10)
			cmds = append(cmds, pipe.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: k, Start: at, Stop: at, ByScore: true}))
		}
		cmds = append(cmds, pipe.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: k, Start: start, Stop: "+inf", ByScore: true, Count: int64(limit)}))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redis: due index: %w", err)
	}
	var out []entry
	for _, c := range cmds {
		for _, z := range c.Val() {
			e := entry{tag: z.Member.(string), oldest: int64(z.Score)}
			if after != nil && less(e, *after) <= 0 {
				continue
			}
			out = append(out, e)
		}
	}
	slices.SortFunc(out, less)
	return out[:min(len(out), limit)], nil
}

// conv is what chatbufctl shows of one conversation.
type conv struct {
	User        string     `json:"user"`
	Device      string     `json:"device"`
	Agent       string     `json:"agent"`
	Tag         string     `json:"tag"`
	State       string     `json:"state"`
	Buffered    int64      `json:"buffered"`
	Inflight    int64      `json:"inflight"`
	Oldest      *time.Time `json:"oldest,omitempty"`
	OldestAge   float64    `json:"oldest_age_seconds"`
	InflightAge float64    `json:"inflight_age_seconds,omitempty"`
	Cursor      string     `json:"cursor"`

	meta map[string]string
}

// State values.
const (
	stateBuffering = "buffering" // messages buffered, not yet due
	stateDue       = "due"       // the oldest message is older than CHAT_FLUSH_MAX_AGE
	stateInflight  = "inflight"  // a batch is claimed and not yet published
	stateStuck     = "stuck"     // a batch in flight for longer than CHAT_FLUSH_MAX_AGE, or one CHAT_FLUSHED refused
)

// describe reads the conversations' own keys (LLEN of buffer and in-flight
// batch, the meta hash), one pipelined round trip per call.
func (in *inspector) describe(ctx context.Context, es []entry) ([]conv, error) {
	pipe := in.rdb.Pipeline()
	type q struct {
		buf, inf *redis.IntCmd
		meta     *redis.MapStringStringCmd
	}
	qs := make([]q, len(es))
	convs := make([]chat.Conversation, len(es))
	for i, e := range es {
		c, err := chat.ParseTag(e.tag)
		if err != nil {
			return nil, fmt.Errorf("due index holds %q: %w", e.tag, err)
		}
		convs[i] = c
		qs[i] = q{pipe.LLen(ctx, in.keys.Buffer(c)), pipe.LLen(ctx, in.keys.Inflight(c)), pipe.HGetAll(ctx, in.keys.Meta(c))}
	}
	if len(es) > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("redis: read conversations: %w", err)
		}
	}
	out := make([]conv, len(es))
	for i, e := range es {
		c := convs[i]
		oldest := time.UnixMilli(e.oldest).UTC()
		v := conv{User: c.User, Device: c.Device, Agent: c.Agent, Tag: e.tag, Buffered: qs[i].buf.Val(), Inflight: qs[i].inf.Val(),
			Oldest: &oldest, OldestAge: age(in.now, oldest), Cursor: e.cursor(), meta: qs[i].meta.Val()}
		v.State = stateBuffering
		if in.now.Sub(oldest) >= in.maxAge {
			v.State = stateDue
		}
		if v.Inflight > 0 {
			v.State = stateInflight
			if created, ok := msField(v.meta, "created"); ok {
				v.InflightAge = age(in.now, created)
				if in.now.Sub(created) >= in.maxAge {
					v.State = stateStuck
				}
			}
			if _, refused := msField(v.meta, "refused"); refused {
				v.State = stateStuck
			}
		}
		out[i] = v
	}
	return out, nil
}

// msField reads a meta field holding a time in ms.
func msField(m map[string]string, name string) (time.Time, bool) {
	n, err := strconv.ParseInt(m[name], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(n).UTC(), true
}

func age(now, t time.Time) float64 { return math.Round(now.Sub(t).Seconds()*1000) / 1000 }

// matches reports whether a conversation is in the state asked for ("":
// any). Each conversation is in exactly one state.
func matches(state, want string) bool { return want == "" || state == want }
