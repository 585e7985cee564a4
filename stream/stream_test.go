package stream_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/flush"
	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/stream"
)

// servers runs a test against the embedded (current) nats-server and the
// nats-server binary on the PATH (Debian's 2.9 on the development machines).
func servers(t *testing.T, test func(t *testing.T, srv *natstest.Server)) {
	for name, start := range map[string]func(testing.TB) *natstest.Server{
		"embedded": natstest.Embedded,
		"binary":   natstest.Binary,
	} {
		t.Run(name, func(t *testing.T) {
			srv := start(t)
			t.Logf("nats-server %s", srv.Version)
			test(t, srv)
		})
	}
}

func setup(t *testing.T, srv *natstest.Server) (jetstream.JetStream, stream.Config) {
	t.Helper()
	js, err := jetstream.New(srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.Config{}.WithDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := stream.Ensure(ctx, js, cfg); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	return js, cfg
}

func TestEnsureIsIdempotentAndConcurrent(t *testing.T) {
	servers(t, func(t *testing.T, srv *natstest.Server) {
		js, err := jetstream.New(srv.Conn(t))
		if err != nil {
			t.Fatal(err)
		}
		cfg := stream.Config{}.WithDefaults()
		errc := make(chan error, 4)
		for range 4 {
			go func() {
				_, err := stream.Ensure(context.Background(), js, cfg)
				errc <- err
			}()
		}
		for range 4 {
			if err := <-errc; err != nil {
				t.Errorf("concurrent Ensure: %v", err)
			}
		}
		info, err := js.Stream(context.Background(), cfg.InStream)
		if err != nil {
			t.Fatal(err)
		}
		sc := info.CachedInfo().Config
		if sc.Retention != jetstream.WorkQueuePolicy || sc.Storage != jetstream.FileStorage || sc.Duplicates < 2*time.Minute {
			t.Errorf("CHAT_IN config: retention %v, storage %v, duplicates %v", sc.Retention, sc.Storage, sc.Duplicates)
		}
		if _, err := stream.Ensure(context.Background(), js, cfg); err != nil {
			t.Errorf("Ensure again: %v", err)
		}
	})
}

func TestSinkFencesOnTheStream(t *testing.T) {
	servers(t, func(t *testing.T, srv *natstest.Server) {
		ctx := context.Background()
		js, cfg := setup(t, srv)
		sink := stream.NewSink(js, cfg)
		c := chat.Conversation{User: "a:b", Device: "c", Agent: "d"}
		out := func(token int64, after uint64) flush.Envelope {
			return flush.Envelope{Conv: c, ID: chat.BatchID(c, token), Token: token, Reason: chat.TriggerSize, Data: []byte(`{}`), PrevPos: after, Created: time.Now()}
		}

		p1, err := sink.Publish(ctx, out(100, 0))
		if err != nil {
			t.Fatalf("publish 100: %v", err)
		}
		// Published but not committed: the retry (same id, stale PrevPos)
		// finds the first copy.
		again, err := sink.Publish(ctx, out(100, 0))
		if err != nil || again != p1 {
			t.Errorf("republish 100 = %d, %v; want %d", again, err, p1)
		}
		p2, err := sink.Publish(ctx, out(200, p1))
		if err != nil {
			t.Fatalf("publish 200: %v", err)
		}
		// A stale flusher with an older batch cannot publish after 200.
		_, err = sink.Publish(ctx, out(150, p1))
		var stale *flush.StaleError
		if !errors.Is(err, flush.ErrStale) || !errors.As(err, &stale) || stale.Last != 200 {
			t.Errorf("publish of stale 150: %v, want ErrStale naming token 200", err)
		}
		// Batch 100 again, now that 200 followed it (its commit failed, and
		// another store published 200): found in the stream, not stale.
		if again, err := sink.Publish(ctx, out(100, 0)); err != nil || again != p1 {
			t.Errorf("republish 100 after 200 = %d, %v; want %d", again, err, p1)
		}
		// A store that lost its position (PrevPos 0) still follows the last batch.
		p3, err := sink.Publish(ctx, out(300, 0))
		if err != nil || p3 <= p2 {
			t.Errorf("publish 300 with unknown position = %d, %v", p3, err)
		}
		st, err := js.Stream(ctx, cfg.FlushedStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != 3 {
			t.Errorf("CHAT_FLUSHED holds %d batches, want 3 (100, 200, 300)", info.State.Msgs)
		}
	})
}

func TestHidesMessages(t *testing.T) {
	for v, want := range map[string]bool{
		"2.9.10": true, "v2.9.25": true, "2.10.24": true, "2.10.25": false, "2.11.0": false,
		"2.15.2": false, "2.10.25-RC.1": false, "1.4.1": true, "3.0.0": false, "": false, "dev": false,
	} {
		if got := stream.HidesMessages(v); got != want {
			t.Errorf("HidesMessages(%q) = %v, want %v", v, got, want)
		}
	}
}
