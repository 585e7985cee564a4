package fallback_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/fallback"
	"github.com/opencontext/chatbuf/flush"
	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/internal/redistest"
	"github.com/opencontext/chatbuf/locking"
	"github.com/opencontext/chatbuf/stream"
	"github.com/opencontext/chatbuf/worker"
)

const size = 5

// A worker loses Redis mid-stream: it keeps consuming into local memory,
// holds those acks, publishes full local batches, and when Redis returns
// moves the rest back; every message ends in exactly one batch.
func TestOutageAndRecovery(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t)
	ns := natstest.Embedded(t)
	nc := ns.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.Config{AckWait: 2 * time.Second}.WithDefaults()
	rdb := rs.Client(t)
	sink := stream.NewSink(js, cfg)
	side := func(store buffer.Store, locker locking.Locker) fallback.Side {
		f := flush.New(store, locker, sink, flush.Config{BatchSize: size, MaxAge: time.Hour})
		return fallback.Side{Store: store, Locker: locker, Flusher: f, Sweeper: flush.NewSweeper(f, 0)}
	}
	var w *worker.Worker
	mem := buffer.NewMemory(buffer.Config{}, buffer.MemoryConfig{Hold: true, OnRelease: func(c chat.Conversation, keys []string) { w.Release(c, keys) }})
	var modes atomic.Int32
	fb := fallback.New(side(buffer.NewRedis(rdb, buffer.Config{}), locking.NewRedis(rdb, locking.Config{})),
		side(mem, locking.NewMemory(locking.Config{})), mem,
		func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		fallback.Config{OnMode: func(fallback.Mode) { modes.Add(1) }})
	w = worker.New(nc, js, fb, worker.Config{Stream: cfg, BatchSize: size, Concurrency: 2})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = fb.Run(runCtx) }()
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	defer func() { stop(); <-done }()

	conv := func(i int) chat.Conversation {
		return chat.Conversation{User: fmt.Sprintf("u%d", i%4), Device: "d", Agent: "a"}
	}
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			body := fmt.Sprintf(`{"role":"user","content":"m%d","message_id":"id%d"}`, i, i)
			if _, err := js.Publish(ctx, cfg.In(conv(i)), []byte(body)); err != nil {
				t.Fatalf("publish: %v", err)
			}
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	consumer := func() *jetstream.ConsumerInfo {
		c, err := js.Consumer(ctx, cfg.InStream, cfg.Consumer)
		if err != nil {
			return nil
		}
		info, err := c.Info(ctx)
		if err != nil {
			return nil
		}
		return info
	}
	waitFor("the worker's consumer", func() bool { return consumer() != nil })

	publish(0, 22) // in Redis: 4 full batches, 2 left over
	waitFor("the first messages acked", func() bool {
		i := consumer()
		return i.NumPending == 0 && i.NumAckPending == 0
	})
	rs.Shutdown()
	publish(22, 63) // local: 41 messages over 4 conversations
	waitFor("local mode", func() bool { return fb.Mode() == fallback.Local })
	waitFor("all delivered to the worker", func() bool { return consumer().NumPending == 0 })
	// Local messages are held, not acked; they outlive AckWait (2s) without
	// redelivery thanks to in-progress acks.
	time.Sleep(3 * time.Second)
	info := consumer()
	if info.NumAckPending == 0 {
		t.Fatalf("no messages held unacked in local mode")
	}
	if info.NumRedelivered > 0 {
		t.Errorf("%d messages redelivered while held", info.NumRedelivered)
	}
	t.Logf("local mode: %d messages held unacked", info.NumAckPending)

	rs.Restart()
	waitFor("shared mode", func() bool { return fb.Mode() == fallback.Shared })
	waitFor("every message acked", func() bool {
		i := consumer()
		return i.NumPending == 0 && i.NumAckPending == 0
	})
	for i := range 4 {
		var err error
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if _, err = fb.Flush(ctx, conv(i), chat.TriggerManual); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("manual flush of %v: %v", conv(i), err)
		}
	}
	if got := modes.Load(); got != 2 {
		t.Errorf("%d mode switches, want 2 (to local and back)", got)
	}

	// Every message in exactly one batch of its conversation.
	oc, err := js.OrderedConsumer(ctx, cfg.FlushedStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for {
		b, err := oc.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			var batch chat.Batch
			if err := json.Unmarshal(m.Data(), &batch); err != nil {
				t.Fatal(err)
			}
			if batch.MessageCount > size || batch.MessageCount < 1 {
				t.Errorf("batch %s holds %d messages", batch.BatchID, batch.MessageCount)
			}
			for _, msg := range batch.Messages {
				seen[msg.MessageID]++
				var idx int
				fmt.Sscanf(msg.MessageID, "id%d", &idx)
				if c := conv(idx); c.User != batch.UserID {
					t.Errorf("%s in %s's batch", msg.MessageID, batch.UserID)
				}
			}
		}
		if n == 0 {
			break
		}
	}
	for i := range 63 {
		if n := seen[fmt.Sprintf("id%d", i)]; n != 1 {
			t.Errorf("id%d in %d batches, want 1", i, n)
		}
	}
}

// A move into Redis that Redis applies but cannot replicate in time
// (REDIS_WAIT_REPLICAS with the replica gone) leaves the messages both in
// Redis and in local memory. They must then only move, never be flushed
// locally as well: that would publish them twice.
func TestUnreplicatedMoveIsNotFlushedLocally(t *testing.T) {
	ctx := context.Background()
	// No replica: every WAIT falls short.
	f := newFixture(t, buffer.Config{WaitReplicas: 1, WaitTimeout: 20 * time.Millisecond})
	rs, js, cfg, shared, fb := f.redis, f.js, f.cfg, f.shared, f.fb

	item := func(c chat.Conversation, i int, at time.Time) buffer.Item {
		m := chat.Message{Role: "user", Content: json.RawMessage(fmt.Sprintf(`"m%d"`, i)), MessageID: fmt.Sprintf("id%d", i)}
		return buffer.Item{Conv: c, Key: m.DedupeKey(uint64(i), 1), Record: chat.NewRecord(&m, 0, uint64(i), false, at)}
	}
	// later's messages are older, so later is moved first.
	now, earlier := time.Now(), time.Now().Add(-time.Minute)
	gone := chat.Conversation{User: "in-doubt", Device: "d", Agent: "a"}
	later := chat.Conversation{User: "later", Device: "d", Agent: "a"}

	rs.Shutdown()
	if _, err := fb.AppendBatch(ctx, []buffer.Item{item(gone, 1, now)}); err != nil {
		t.Fatalf("append while Redis is down: %v", err)
	}
	if fb.Mode() != fallback.Local {
		t.Fatalf("mode %s after a failed append, want local", fb.Mode())
	}
	if _, err := fb.AppendBatch(ctx, []buffer.Item{item(later, 2, earlier), item(later, 3, earlier)}); err != nil {
		t.Fatalf("local append: %v", err)
	}
	rs.Restart()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	ran := make(chan struct{})
	go func() { _ = fb.Run(runCtx); close(ran) }()

	// The probe succeeds, the move writes into Redis, WAIT falls short.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		n, err := shared.Len(ctx, later)
		if err == nil && n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the move of %v never reached Redis (len %d, %v)", later, n, err)
		}
	}
	if fb.Mode() != fallback.Local {
		t.Fatalf("mode %s although no move was replicated, want local", fb.Mode())
	}
	stop() // no mover holding local locks from here on
	<-ran
	for _, c := range []chat.Conversation{gone, later} {
		res, err := fb.Flush(ctx, c, chat.TriggerManual)
		if err != nil {
			t.Fatalf("flush %v: %v", c, err)
		}
		if len(res.BatchIDs) > 0 {
			t.Errorf("%v flushed locally (%v) while Redis holds its messages", c, res.BatchIDs)
		}
	}
	if _, err := fb.Sweep(ctx); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	s, err := js.Stream(ctx, cfg.FlushedStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("%d batches published from local memory, want 0 (Redis holds the messages)", info.State.Msgs)
	}
}

// A local flusher claimed a batch and failed to publish it; then the
// conversation came into doubt (a redelivered message arrived). When Redis
// returns, the claimed batch is published under its id, the rest moves into
// Redis, and the worker gets back to shared mode instead of waiting forever
// on the claimed batch.
func TestDoubtAfterLocalClaimRecovers(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, buffer.Config{})
	rs, js, cfg, shared, mem, fb := f.redis, f.js, f.cfg, f.shared, f.mem, f.fb

	c := chat.Conversation{User: "u", Device: "d", Agent: "a"}
	item := func(i int, redelivered bool) buffer.Item {
		m := chat.Message{Role: "user", Content: json.RawMessage(fmt.Sprintf(`"m%d"`, i)), MessageID: fmt.Sprintf("id%d", i)}
		return buffer.Item{Conv: c, Key: m.DedupeKey(uint64(i), 1), Record: chat.NewRecord(&m, 0, uint64(i), false, time.Now()), Redelivered: redelivered}
	}
	rs.Shutdown()
	var first []buffer.Item
	for i := range size {
		first = append(first, item(i, false))
	}
	if _, err := fb.AppendBatch(ctx, first); err != nil {
		t.Fatalf("append while Redis is down: %v", err)
	}
	// A local flusher claims a full batch and dies before publishing it.
	if b, err := mem.Claim(ctx, c, 1, buffer.ClaimOptions{Max: size, Min: size, Reason: chat.TriggerSize}); err != nil || len(b.Records) != size {
		t.Fatalf("claim: %d records, %v", len(b.Records), err)
	}
	if _, err := fb.AppendBatch(ctx, []buffer.Item{item(size, true), item(size+1, false)}); err != nil {
		t.Fatalf("local append: %v", err)
	}
	if res, err := fb.Flush(ctx, c, chat.TriggerManual); err != nil || len(res.BatchIDs) > 0 {
		t.Fatalf("local flush of a conversation in doubt: %v, %v; want nothing", res.BatchIDs, err)
	}

	rs.Restart()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = fb.Run(runCtx) }()
	for deadline := time.Now().Add(20 * time.Second); fb.Mode() != fallback.Shared; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("still in local mode 20s after Redis came back")
		}
	}
	if n, err := shared.Len(ctx, c); err != nil || n != 2 {
		t.Errorf("Redis holds %d messages of %v (%v), want the 2 appended after the claim", n, c, err)
	}
	s, err := js.Stream(ctx, cfg.FlushedStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(ctx, cfg.Flushed(c))
	if err != nil {
		t.Fatalf("the claimed batch was not published: %v", err)
	}
	var batch chat.Batch
	if err := json.Unmarshal(msg.Data, &batch); err != nil {
		t.Fatal(err)
	}
	if batch.MessageCount != size || batch.Messages[0].MessageID != "id0" {
		t.Errorf("published batch %s holds %d messages from %s, want the %d claimed from id0", batch.BatchID, batch.MessageCount, batch.Messages[0].MessageID, size)
	}
}

// fixture is Buffers over a private Redis (shared side, with sharedCfg) and
// local memory, flushing to a private NATS.
type fixture struct {
	redis  *redistest.Server
	js     jetstream.JetStream
	cfg    stream.Config
	shared *buffer.Redis
	mem    *buffer.Memory
	fb     *fallback.Buffers
}

func newFixture(t *testing.T, sharedCfg buffer.Config) fixture {
	t.Helper()
	f := fixture{redis: redistest.Start(t), cfg: stream.Config{}.WithDefaults()}
	var err error
	if f.js, err = jetstream.New(natstest.Embedded(t).Conn(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Ensure(context.Background(), f.js, f.cfg); err != nil {
		t.Fatal(err)
	}
	rdb := f.redis.Client(t)
	sink := stream.NewSink(f.js, f.cfg)
	side := func(store buffer.Store, locker locking.Locker) fallback.Side {
		fl := flush.New(store, locker, sink, flush.Config{BatchSize: size, MaxAge: time.Hour})
		return fallback.Side{Store: store, Locker: locker, Flusher: fl, Sweeper: flush.NewSweeper(fl, 0)}
	}
	f.shared = buffer.NewRedis(rdb, sharedCfg)
	f.mem = buffer.NewMemory(buffer.Config{}, buffer.MemoryConfig{Hold: true, OnRelease: func(chat.Conversation, []string) {}})
	f.fb = fallback.New(side(f.shared, locking.NewRedis(rdb, locking.Config{})),
		side(f.mem, locking.NewMemory(locking.Config{})), f.mem,
		func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		fallback.Config{ProbeMin: 10 * time.Millisecond, ProbeMax: 50 * time.Millisecond})
	return f
}

// An append that Redis applied but could not replicate in time is retried
// by the worker; if the worker has switched to local mode meanwhile, the
// retry lands in local memory. Those messages must then only move into
// Redis (which holds them already), never be flushed locally.
func TestUnreplicatedAppendRetriedLocallyIsNotFlushed(t *testing.T) {
	ctx := context.Background()
	// No replica: every WAIT falls short.
	f := newFixture(t, buffer.Config{WaitReplicas: 1, WaitTimeout: 20 * time.Millisecond})
	c := chat.Conversation{User: "u", Device: "d", Agent: "a"}
	other := chat.Conversation{User: "other", Device: "d", Agent: "a"}
	item := func(c chat.Conversation, i int) buffer.Item {
		m := chat.Message{Role: "user", Content: json.RawMessage(fmt.Sprintf(`"m%d"`, i)), MessageID: fmt.Sprintf("id%d", i)}
		return buffer.Item{Conv: c, Key: m.DedupeKey(uint64(i), 1), Record: chat.NewRecord(&m, 0, uint64(i), false, time.Now())}
	}
	var batch []buffer.Item
	for i := range size {
		batch = append(batch, item(c, i))
	}
	if _, err := f.fb.AppendBatch(ctx, batch); !errors.Is(err, buffer.ErrNotReplicated) {
		t.Fatalf("append without a replica: %v, want ErrNotReplicated", err)
	}
	if f.fb.Mode() != fallback.Shared {
		t.Fatalf("mode %s after a not-replicated append, want shared (Redis answered)", f.fb.Mode())
	}
	f.redis.Shutdown()
	if _, err := f.fb.AppendBatch(ctx, []buffer.Item{item(other, size)}); err != nil || f.fb.Mode() != fallback.Local {
		t.Fatalf("append with Redis down: %v, mode %s; want local mode", err, f.fb.Mode())
	}
	if _, err := f.fb.AppendBatch(ctx, batch); err != nil { // the worker's retry
		t.Fatalf("retry in local mode: %v", err)
	}
	if res, err := f.fb.Flush(ctx, c, chat.TriggerSize); err != nil || len(res.BatchIDs) > 0 {
		t.Errorf("local flush of messages Redis holds: %v, %v; want nothing published", res.BatchIDs, err)
	}
}

// A conversation leaves doubt once a retry of its failed append went through
// in Redis: in a later outage its local messages are flushed locally again,
// and the set of conversations in doubt does not grow for ever.
func TestDoubtClearedBySuccessfulRetry(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, buffer.Config{})
	c := chat.Conversation{User: "u", Device: "d", Agent: "a"}
	item := func(c chat.Conversation, i int) buffer.Item {
		m := chat.Message{Role: "user", Content: json.RawMessage(fmt.Sprintf(`"m%d"`, i)), MessageID: fmt.Sprintf("id%d", i)}
		return buffer.Item{Conv: c, Key: m.DedupeKey(uint64(i), 1), Record: chat.NewRecord(&m, 0, uint64(i), false, time.Now())}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.fb.AppendBatch(cancelled, []buffer.Item{item(c, 0)}); err == nil {
		t.Fatal("append with a cancelled context succeeded")
	}
	if _, err := f.fb.AppendBatch(ctx, []buffer.Item{item(c, 0)}); err != nil {
		t.Fatalf("retry: %v", err)
	}
	f.redis.Shutdown()
	other := chat.Conversation{User: "other", Device: "d", Agent: "a"}
	if _, err := f.fb.AppendBatch(ctx, []buffer.Item{item(other, 1)}); err != nil || f.fb.Mode() != fallback.Local {
		t.Fatalf("append with Redis down: %v, mode %s; want local mode", err, f.fb.Mode())
	}
	var local []buffer.Item
	for i := range size {
		local = append(local, item(c, 10+i))
	}
	if _, err := f.fb.AppendBatch(ctx, local); err != nil {
		t.Fatal(err)
	}
	if res, err := f.fb.Flush(ctx, c, chat.TriggerSize); err != nil || len(res.BatchIDs) != 1 {
		t.Errorf("local flush of %v, whose failed append was retried in Redis: %v, %v; want one batch", c, res.BatchIDs, err)
	}
}

// A Redis that answers and refuses writes (read-only here; full or missing
// permissions alike) is not an outage: appends fail for the caller to
// retry, nothing goes to local memory, and they go through once Redis takes
// writes again.
func TestRefusingRedisIsNotAnOutage(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	mem := buffer.NewMemory(buffer.Config{}, buffer.MemoryConfig{Hold: true, OnRelease: func(chat.Conversation, []string) {}})
	shared := fallback.Side{Store: buffer.NewRedis(rdb, buffer.Config{})}
	local := fallback.Side{Store: mem}
	fb := fallback.New(shared, local, mem, func(ctx context.Context) error { return rdb.Ping(ctx).Err() }, fallback.Config{})
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Do(ctx, "REPLICAOF", "127.0.0.1", fmt.Sprint(port)).Err(); err != nil {
		t.Fatal(err)
	}
	c := chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	m := chat.Message{Role: "user", Content: json.RawMessage(`"hi"`)}
	items := []buffer.Item{{Conv: c, Key: m.DedupeKey(1, 1), Record: chat.NewRecord(&m, 0, 1, false, time.Now())}}
	_, err = fb.AppendBatch(ctx, items)
	if err == nil || !buffer.StoreWide(err) || buffer.RefusalKind(err) != "readonly" {
		t.Fatalf("append to a read-only Redis: %v (kind %q), want a store-wide readonly error", err, buffer.RefusalKind(err))
	}
	if fb.Mode() != fallback.Shared {
		t.Fatalf("mode %s after a READONLY reply, want shared", fb.Mode())
	}
	if convs, _ := mem.Pending(ctx, 10); len(convs) > 0 {
		t.Fatalf("local memory holds %v", convs)
	}
	if err := rdb.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	res, err := fb.AppendBatch(ctx, items)
	if err != nil || res[0].Err != nil || res[0].Held || res[0].Dup {
		t.Fatalf("append once Redis takes writes: %+v, %v", res, err)
	}
}
