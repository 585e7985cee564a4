package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/stream"
)

// CHAT_FLUSHED is full (max_msgs with discard new) while a load runs, for a
// few seconds (CHATBUF_CHAOS=long: a minute), then given room: the worker
// shows the refusals in its metrics meanwhile (failures by kind, the age of
// the oldest unpublished batch), and every message arrives once, in order,
// with nothing dead-lettered.
func TestFlushedFullThenRoom(t *testing.T) {
	s := newSystem(t, natstest.Embedded)
	w := s.startWorker()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	js, err := jetstream.New(s.nats.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.Config{}.WithDefaults()
	limit := func(maxMsgs int64) {
		t.Helper()
		sc := cfg.Streams()[1]
		sc.MaxMsgs, sc.Discard = maxMsgs, jetstream.DiscardNew
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			t.Fatalf("update %s: %v", sc.Name, err)
		}
	}
	limit(1)
	const messages = 2000
	l := s.startLoad(ctx, "--conversations", "50", "--messages", itoa(messages), "--verify-timeout", "5m")

	deadline := time.Now().Add(2 * time.Minute)
	for w.metric(`chatbuf_batch_publish_failures_total{kind="full"}`) < 5 || w.metric("chatbuf_oldest_unpublished_batch_age_seconds") <= 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no refusals in the metrics within 2m: failures %v, oldest unpublished %v",
				w.metric("chatbuf_batch_publish_failures_total"), w.metric("chatbuf_oldest_unpublished_batch_age_seconds"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	full := time.Now()
	hold := pick(2*time.Second, time.Minute)
	for time.Since(full) < hold {
		time.Sleep(100 * time.Millisecond)
	}
	age := w.metric("chatbuf_oldest_unpublished_batch_age_seconds")
	t.Logf("stream full: %v refused publishes, oldest unpublished batch %.1fs old", w.metric("chatbuf_batch_publish_failures_total"), age)
	if age < hold.Seconds() {
		t.Errorf("chatbuf_oldest_unpublished_batch_age_seconds = %v after %v of refusals", age, hold)
	}
	limit(-1)

	res := l.wait(t)
	requireExactlyOnce(t, res.Report, messages)
	if res.Report.OutOfOrder != 0 || res.Report.UnorderedInBatch != 0 {
		t.Errorf("order: %d out of order across batches, %d within", res.Report.OutOfOrder, res.Report.UnorderedInBatch)
	}
	logRow(t, "CHAT_FLUSHED full "+hold.String(), res.Report)
	deadline = time.Now().Add(time.Minute)
	for w.metric("chatbuf_oldest_unpublished_batch_age_seconds") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("chatbuf_oldest_unpublished_batch_age_seconds = %v after every batch was published", w.metric("chatbuf_oldest_unpublished_batch_age_seconds"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := w.metric("chatbuf_batches_rejected_total"); n != 0 {
		t.Errorf("chatbuf_batches_rejected_total = %v, want 0", n)
	}
}
