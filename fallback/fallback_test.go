package fallback_test

import (
	"context"
	"encoding/json"
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
		return fallback.Side{Store: store, Locker: locker, Flusher: f, Sweeper: flush.NewSweeper(f, 0, 0)}
	}
	var w *worker.Worker
	mem := buffer.NewMemory(buffer.Config{}, buffer.MemoryConfig{Hold: true, OnRelease: func(keys []string) { w.Release(keys) }})
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
