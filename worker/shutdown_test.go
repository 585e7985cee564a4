package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
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

// gatedSink holds the first publish until resume is closed or its context
// ends.
type gatedSink struct {
	flush.Sink
	once            sync.Once
	inPublish       chan struct{}
	resume          chan struct{}
	cancelledInside chan struct{}
}

func (g *gatedSink) Publish(ctx context.Context, b flush.Envelope) (uint64, error) {
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.inPublish)
		select {
		case <-g.resume:
		case <-ctx.Done():
			close(g.cancelledInside)
		}
	}
	return g.Sink.Publish(ctx, b)
}

// logSignal closes a channel when a log record's message contains text.
type logSignal struct {
	slog.Handler
	text string
	once *sync.Once
	ch   chan struct{}
}

func (h logSignal) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.text) {
		h.once.Do(func() { close(h.ch) })
	}
	return nil
}

func (h logSignal) Enabled(context.Context, slog.Level) bool { return true }
func (h logSignal) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h logSignal) WithGroup(string) slog.Handler            { return h }

// A flush under way when the worker is told to stop (SIGTERM) finishes: its
// batch is published, and Run returns only after it.
func TestShutdownFinishesInFlightFlush(t *testing.T) {
	ctx := context.Background()
	ns := natstest.Embedded(t)
	nc := ns.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.Config{}.WithDefaults()
	e := &env{nats: ns, cfg: cfg, js: js}
	rdb := e.redisClient(t)
	store := buffer.NewRedis(rdb, buffer.Config{})
	sink := &gatedSink{Sink: stream.NewSink(js, cfg), inPublish: make(chan struct{}), resume: make(chan struct{}), cancelledInside: make(chan struct{})}
	fl := flush.New(store, locking.NewRedis(rdb, locking.Config{}), sink, flush.Config{BatchSize: size, MaxAge: time.Hour})
	stopping := logSignal{Handler: slog.DiscardHandler, text: "worker: stopping", once: &sync.Once{}, ch: make(chan struct{})}
	w := worker.New(nc, js, worker.StoreBuffers{Store: store, Flusher: fl, Sweeper: flush.NewSweeper(fl, 0)},
		worker.Config{Stream: cfg, BatchSize: size, Concurrency: 2, Logger: slog.New(stopping), ShutdownTimeout: time.Minute})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	waitFor(t, "the worker's consumer", func() bool {
		_, err := js.Consumer(ctx, cfg.InStream, cfg.Consumer)
		return err == nil
	})

	c := chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	want := sent{}
	for i := range size {
		m := fmt.Sprintf("m%d", i)
		want[m] = c
		e.publish(t, c, fmt.Sprintf(`{"role":"user","content":%q}`, m), "")
	}
	select {
	case <-sink.inPublish:
	case <-time.After(30 * time.Second):
		t.Fatal("no size flush publishing after 30s")
	}
	stop() // SIGTERM
	select {
	case <-stopping.ch:
	case <-sink.cancelledInside:
		t.Fatal("the flush under way was cancelled when shutdown began")
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not begin to stop within 30s")
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while a flush was still publishing", err)
	default:
	}
	close(sink.resume)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s after the flush finished")
	}
	select {
	case <-sink.cancelledInside:
		t.Fatal("the flush under way was cancelled during shutdown")
	default:
	}
	check(t, e.batchesHolding(t, size), want)
}
