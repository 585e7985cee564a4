package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/redistest"
)

// The backlog gauges count the due index (all of it, and the part older
// than the maximum age), and read Redis at most once per backlogEvery: a
// scrape in between sees the last reading.
func TestBacklogGaugesReadTheDueIndexCached(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	keys := chat.NewKeys("")
	now := time.UnixMilli(10_000_000)
	add := func(tag string, at time.Time) {
		t.Helper()
		if err := rdb.ZAdd(ctx, keys.Due(), redis.Z{Score: float64(at.UnixMilli()), Member: tag}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	add("a:b:c", now.Add(-10*time.Minute))
	add("d:e:f", now.Add(-6*time.Minute))
	add("g:h:i", now.Add(-time.Minute))

	clock := now
	reg := prometheus.NewRegistry()
	(&backlog{rdb: rdb, keys: keys, maxAge: 5 * time.Minute, now: func() time.Time { return clock }}).register(reg)
	gauge := func(name string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatalf("no metric %s", name)
		return 0
	}
	if got, due := gauge("chatbuf_backlog_conversations"), gauge("chatbuf_due_conversations"); got != 3 || due != 2 {
		t.Fatalf("backlog %v, due %v; want 3 and 2", got, due)
	}
	add("j:k:l", now.Add(-7*time.Minute))
	clock = now.Add(backlogEvery - time.Millisecond)
	if got := gauge("chatbuf_backlog_conversations"); got != 3 {
		t.Errorf("within %v of the last reading: backlog %v, want the cached 3", backlogEvery, got)
	}
	clock = now.Add(backlogEvery)
	if got, due := gauge("chatbuf_backlog_conversations"), gauge("chatbuf_due_conversations"); got != 4 || due != 3 {
		t.Errorf("after %v: backlog %v, due %v; want 4 and 3", backlogEvery, got, due)
	}
}

// Every label value the dashboard and alerts select exists before its
// first event, so that rate() over it starts at 0.
func TestMetricsLabelSetsInitialised(t *testing.T) {
	m := newMetrics()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string][]string{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				labels[mf.GetName()] = append(labels[mf.GetName()], lp.GetName()+"="+lp.GetValue())
			}
		}
	}
	want := map[string][]string{
		"chatbuf_batches_total": {"reason=size", "reason=age", "reason=idle", "reason=bytes", "reason=end", "reason=manual"},
		"chatbuf_messages_dead_total": {"reason=too_large", "reason=bad_id", "reason=bad_json", "reason=invalid",
			"reason=id_mismatch", "reason=store_rejected", "reason=batch_rejected"},
		"chatbuf_errors_total": {"component=redis", "component=nats"},
		"chatbuf_store_mode":   {"mode=shared", "mode=local"},
	}
	for name, ls := range want {
		for _, l := range ls {
			if !slices.Contains(labels[name], l) {
				t.Errorf("%s{%s} does not exist before its first event (have %v)", name, l, labels[name])
			}
		}
	}
}
