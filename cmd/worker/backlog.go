package main

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
)

// backlogEvery is how often the backlog gauges read Redis at most; scrapes
// in between reuse the last reading.
const backlogEvery = 5 * time.Second

// cached holds one reading for backlogEvery.
type cached[T any] struct {
	mu sync.Mutex
	at time.Time
	v  T
	ok bool
}

// get returns the last reading if it is recent, else reads again. A failed
// reading (ok false) is kept too, so a slow Redis is not asked on every
// scrape.
func (c *cached[T]) get(now time.Time, read func() (T, bool)) (T, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || now.Sub(c.at) >= backlogEvery || now.Before(c.at) {
		c.v, c.ok = read()
		c.at = now
	}
	return c.v, c.ok
}

// backlog is the work held in Redis, for autoscalers and alerts: how many
// conversations have buffered or in-flight messages, and how many of them
// are due (oldest message older than CHAT_FLUSH_MAX_AGE). It reads the due
// index only: ZCARD and ZCOUNT, O(log n), once per index (per slot in use on
// a cluster, pipelined per node), at most once per backlogEvery.
type backlog struct {
	rdb    redis.UniversalClient
	keys   chat.Keys
	maxAge time.Duration
	now    func() time.Time

	slotsMu sync.Mutex
	slots   []string
	slotsAt time.Time

	c cached[backlogReading]
}

type backlogReading struct{ conversations, due float64 }

func (b *backlog) register(reg prometheus.Registerer) {
	read := func() backlogReading {
		r, _ := b.c.get(b.now(), func() (backlogReading, bool) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			r, err := b.read(ctx)
			return r, err == nil
		})
		return r
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "chatbuf", Name: "backlog_conversations",
			Help: "Conversations with buffered or in-flight messages in Redis (ZCARD of the due index); read at most every 5s."},
			func() float64 { return read().conversations }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "chatbuf", Name: "due_conversations",
			Help: "Conversations whose oldest message is older than CHAT_FLUSH_MAX_AGE (due for an age flush); read at most every 5s."},
			func() float64 { return read().due }),
	)
}

// dueKeys lists the due index keys: one on a single Redis, one per slot in
// use on a cluster (the DueSlots set, read at most once a minute).
func (b *backlog) dueKeys(ctx context.Context) ([]string, error) {
	if _, ok := b.rdb.(*redis.ClusterClient); !ok {
		return []string{b.keys.Due()}, nil
	}
	b.slotsMu.Lock()
	defer b.slotsMu.Unlock()
	if b.slots == nil || b.now().Sub(b.slotsAt) > time.Minute {
		tags, err := b.rdb.SMembers(ctx, b.keys.DueSlots()).Result()
		if err != nil {
			return nil, err
		}
		b.slots, b.slotsAt = tags, b.now()
	}
	keys := make([]string, len(b.slots))
	for i, t := range b.slots {
		keys[i] = b.keys.DueSlot(t)
	}
	return keys, nil
}

func (b *backlog) read(ctx context.Context) (backlogReading, error) {
	keys, err := b.dueKeys(ctx)
	if err != nil {
		return backlogReading{}, err
	}
	before := "(" + strconv.FormatInt(b.now().Add(-b.maxAge).UnixMilli(), 10)
	pipe := b.rdb.Pipeline()
	cards := make([]*redis.IntCmd, len(keys))
	dues := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cards[i] = pipe.ZCard(ctx, k)
		dues[i] = pipe.ZCount(ctx, k, "-inf", before)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return backlogReading{}, err
	}
	var r backlogReading
	for i := range keys {
		r.conversations += float64(cards[i].Val())
		r.due += float64(dues[i].Val())
	}
	return r, nil
}
