package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/flush"
	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/locking"
	"github.com/opencontext/chatbuf/stream"
	"github.com/opencontext/chatbuf/worker"
)

// In local memory, messages are acked only when their batch is published.
// Two conversations may use the same message_id: publishing A's batch acks
// A's messages, never B's held message with the same id.
func TestReleaseIsScopedToItsConversation(t *testing.T) {
	ctx := context.Background()
	ns := natstest.Embedded(t)
	nc := ns.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.Config{}.WithDefaults()
	const batch = 2
	var w *worker.Worker
	mem := buffer.NewMemory(buffer.Config{}, buffer.MemoryConfig{Hold: true,
		OnRelease: func(c chat.Conversation, keys []string) { w.Release(c, keys) }})
	fl := flush.New(mem, locking.NewMemory(locking.Config{}), stream.NewSink(js, cfg), flush.Config{BatchSize: batch, MaxAge: time.Hour})
	w = worker.New(nc, js, worker.StoreBuffers{Store: mem, Flusher: fl, Sweeper: flush.NewSweeper(fl, 0)},
		worker.Config{Stream: cfg, BatchSize: batch, Concurrency: 2})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	defer func() { stop(); <-done }()
	e := &env{nats: ns, cfg: cfg, js: js}
	waitFor(t, "the worker's consumer", func() bool {
		_, err := js.Consumer(ctx, cfg.InStream, cfg.Consumer)
		return err == nil
	})

	a := chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	b := chat.Conversation{User: "bob", Device: "phone", Agent: "bot"}
	seqB := e.publish(t, b, `{"role":"user","content":"b","message_id":"same"}`, "b-same")
	cons, err := js.Consumer(ctx, cfg.InStream, cfg.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's message delivered and held", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 1
	})
	seqA1 := e.publish(t, a, `{"role":"user","content":"a1","message_id":"same"}`, "a-same")
	seqA2 := e.publish(t, a, `{"role":"user","content":"a2","message_id":"other"}`, "a-other")
	checkSize(t, e.batchesHolding(t, batch), sent{"a1": a, "a2": a}, batch)

	st, err := js.Stream(ctx, cfg.InStream)
	if err != nil {
		t.Fatal(err)
	}
	gone := func(seq uint64) bool {
		_, err := st.GetMsg(ctx, seq)
		return errors.Is(err, jetstream.ErrMsgNotFound)
	}
	// Acks are sent in order on one connection: once alice's are through,
	// any ack of bob's message sent with them is too.
	waitFor(t, "alice's messages acked", func() bool { return gone(seqA1) && gone(seqA2) })
	if gone(seqB) {
		t.Fatalf("bob's held message (seq %d, message_id shared with alice's) was acked by alice's batch", seqB)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 1 {
		t.Errorf("%d messages pending ack, want 1 (bob's)", info.NumAckPending)
	}
}
