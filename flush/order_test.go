package flush_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/flush"
	"github.com/opencontext/chatbuf/internal/clocktest"
	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/internal/redistest"
	"github.com/opencontext/chatbuf/locking"
	"github.com/opencontext/chatbuf/stream"
)

// record is the buffer item of the CHAT_IN message msg.
func record(t *testing.T, c chat.Conversation, msg jetstream.Msg, epoch int64) buffer.Item {
	t.Helper()
	meta, err := msg.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	m := chat.Message{Role: "user", Content: json.RawMessage(msg.Data())}
	seq := meta.Sequence.Stream
	return buffer.Item{Conv: c, Key: m.DedupeKey(seq, meta.Timestamp.UnixNano()), Record: chat.NewRecord(&m, epoch, seq, stream.EndsBatch(msg.Headers()), time.Now())}
}

// TestClaimWaitsForAnEarlierMessageStillInCHAT_IN: a message held by one
// worker (delivered, not yet appended, not acked) keeps the later messages
// of its conversation, appended by another worker, out of any batch until
// it is appended; then all go out in CHAT_IN order.
func TestClaimWaitsForAnEarlierMessageStillInCHAT_IN(t *testing.T) {
	for name, start := range map[string]func(testing.TB) *natstest.Server{"embedded": natstest.Embedded, "binary": natstest.Binary} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			srv := start(t)
			t.Logf("nats-server %s", srv.Version)
			js, err := jetstream.New(srv.Conn(t))
			if err != nil {
				t.Fatal(err)
			}
			cfg := stream.Config{}.WithDefaults()
			cons, err := stream.Ensure(ctx, js, cfg)
			if err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			for i := 1; i <= 4; i++ {
				if _, err := js.Publish(ctx, cfg.In(alice), []byte(fmt.Sprintf(`"m%d"`, i))); err != nil {
					t.Fatalf("publish: %v", err)
				}
			}
			batch, err := cons.Fetch(4, jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			var msgs []jetstream.Msg
			for m := range batch.Messages() {
				msgs = append(msgs, m)
			}
			if len(msgs) != 4 {
				t.Fatalf("fetched %d messages, want 4", len(msgs))
			}

			pending := stream.NewPending(js, cfg)
			epoch, err := pending.Epoch(ctx)
			if err != nil || epoch == 0 {
				t.Fatalf("CHAT_IN's epoch: %d, %v", epoch, err)
			}
			store, rsrv := redisStore(t, nil)
			sink := newSink()
			f := flush.New(store, locking.NewRedis(rsrv.Client(t), locking.Config{}), sink, flush.Config{BatchSize: 3, Pending: pending})

			// The "other worker" appends and acks messages 2 to 4; message
			// 1 stays held.
			for _, m := range msgs[1:] {
				if _, err := store.Append(ctx, record(t, alice, m, epoch)); err != nil {
					t.Fatal(err)
				}
				if err := m.DoubleAck(ctx); err != nil {
					t.Fatal(err)
				}
			}
			for _, reason := range []chat.Trigger{chat.TriggerSize, chat.TriggerManual} {
				if res, err := f.Flush(ctx, alice, reason); err != nil || len(res.BatchIDs) != 0 {
					t.Fatalf("Flush(%s) with message 1 still held = %v, %v; want no batch", reason, res, err)
				}
			}
			res, busy, err := f.FlushMany(ctx, []chat.Conversation{alice}, chat.TriggerSize)
			if err != nil || len(res.BatchIDs) != 0 || len(busy) != 1 {
				t.Fatalf("FlushMany(size) with message 1 still held = %v, busy %v, %v; want no batch, alice to try again", res, busy, err)
			}

			if _, err := store.Append(ctx, record(t, alice, msgs[0], epoch)); err != nil {
				t.Fatal(err)
			}
			// Appended, its ack not yet sent: CHAT_IN still stores it, but
			// it is in the buffer, and no message between it and the next
			// records is stored: a size batch goes.
			if res, err := f.Flush(ctx, alice, chat.TriggerSize); err != nil || len(res.BatchIDs) != 1 {
				t.Fatalf("Flush(size) with message 1 appended, not acked = %v, %v; want 1 batch", res, err)
			}
			if err := msgs[0].DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			if res, err := f.Flush(ctx, alice, chat.TriggerManual); err != nil || len(res.BatchIDs) != 1 {
				t.Fatalf("Flush(manual) = %v, %v; want 1 batch", res, err)
			}
			var got [][]uint64
			var reasons []chat.Trigger
			for _, b := range sink.decoded(t) {
				var seqs []uint64
				for _, m := range b.Messages {
					seqs = append(seqs, m.Seq)
				}
				got = append(got, seqs)
				reasons = append(reasons, b.Reason)
			}
			if fmt.Sprint(got) != "[[1 2 3] [4]]" || fmt.Sprint(reasons) != "[size manual]" {
				t.Errorf("batches %v, reasons %v; want [[1 2 3] [4]], [size manual]", got, reasons)
			}
		})
	}
}

// TestTriggers: a batch closed by a record marked End (reason end), by the
// byte ceiling (reason bytes), and by an idle conversation (reason idle);
// a size batch holds exactly BatchSize messages.
func TestTriggers(t *testing.T) {
	ctx := context.Background()
	clock := clocktest.New(time.Now())
	srv := redistest.Start(t)
	store := buffer.NewRedis(srv.Client(t), buffer.Config{Now: clock.Now, TrackIdle: true})
	sink := newSink()
	big := chat.Conversation{User: "bytes", Device: "d", Agent: "a"}
	// Room for two and a half of big's messages.
	sample, err := chat.ParseRecord(chat.NewRecord(&chat.Message{Role: "user", Content: json.RawMessage(fmt.Sprintf("%q", fmt.Sprintf("%0*d", 700, 1)))}, 1, 1, false, clock.Now()))
	if err != nil {
		t.Fatal(err)
	}
	maxBytes := chat.BatchOverhead(big) + 2*sample.Cost + sample.Cost/2
	f := flush.New(store, locking.NewRedis(srv.Client(t), locking.Config{}), sink,
		flush.Config{BatchSize: 4, MaxAge: time.Hour, Idle: time.Minute, MaxBatchBytes: maxBytes, Now: clock.Now})
	seq := uint64(0)
	add := func(c chat.Conversation, n, size int, endLast bool) {
		t.Helper()
		for i := range n {
			seq++
			m := chat.Message{Role: "user", Content: json.RawMessage(fmt.Sprintf("%q", fmt.Sprintf("%0*d", size, seq)))}
			if _, err := store.Append(ctx, buffer.Item{Conv: c, Key: m.DedupeKey(seq, 1), Record: chat.NewRecord(&m, 1, seq, endLast && i == n-1, clock.Now())}); err != nil {
				t.Fatal(err)
			}
		}
	}
	end := chat.Conversation{User: "end", Device: "d", Agent: "a"}
	quiet := chat.Conversation{User: "idle", Device: "d", Agent: "a"}
	add(end, 6, 10, true)   // 6 messages, the last one ends the batch: size 4, then end 2
	add(big, 4, 700, false) // two fit a batch
	add(quiet, 2, 10, false)
	if _, err := f.Flush(ctx, end, chat.TriggerEnd); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Flush(ctx, big, chat.TriggerSize); err != nil {
		t.Fatal(err)
	}
	sweeper := flush.NewSweeper(f, 0)
	clock.Advance(30 * time.Second)
	if n, err := sweeper.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("Sweep before idle = %d, %v; want 0 batches", n, err)
	}
	clock.Advance(31 * time.Second)
	if n, err := sweeper.Sweep(ctx); err != nil || n != 2 {
		t.Fatalf("Sweep after idle = %d, %v; want 2 batches", n, err)
	}
	got := map[string][]string{}
	for i, b := range sink.decoded(t) {
		got[b.UserID] = append(got[b.UserID], fmt.Sprintf("%s:%d", b.Reason, b.MessageCount))
		if n := len(sink.batches[i].Data); n > maxBytes {
			t.Errorf("batch %s is %d bytes, over the ceiling %d", b.BatchID, n, maxBytes)
		}
	}
	want := map[string][]string{"end": {"size:4", "end:2"}, "bytes": {"bytes:2", "idle:2"}, "idle": {"idle:2"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("batches by conversation: %v; want %v", got, want)
	}
}

var bob = chat.Conversation{User: "bob", Device: "laptop", Agent: "bot"}

// orderSetup is CHAT_IN with its worker consumer on srv, a Pending on it,
// and a flusher on a private Redis (batch size 3) publishing to a
// recording sink.
type orderSetup struct {
	js      jetstream.JetStream
	cfg     stream.Config
	cons    jetstream.Consumer
	pending *stream.Pending
	epoch   int64
	store   buffer.Store
	redis   *redistest.Server
	sink    *recordingSink
}

func newOrderSetup(ctx context.Context, t *testing.T, srv *natstest.Server) *orderSetup {
	t.Helper()
	js, err := jetstream.New(srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	s := &orderSetup{js: js, cfg: stream.Config{}.WithDefaults()}
	if s.cons, err = stream.Ensure(ctx, js, s.cfg); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	s.pending = stream.NewPending(js, s.cfg)
	if s.epoch, err = s.pending.Epoch(ctx); err != nil || s.epoch == 0 {
		t.Fatalf("CHAT_IN's epoch: %d, %v", s.epoch, err)
	}
	s.store, s.redis = redisStore(t, nil)
	s.sink = newSink()
	return s
}

func (s *orderSetup) flusher(t *testing.T, p flush.Pending) *flush.Flusher {
	return flush.New(s.store, locking.NewRedis(s.redis.Client(t), locking.Config{}), s.sink, flush.Config{BatchSize: 3, Pending: p})
}

// publish publishes n messages on c's subject and fetches them (delivered,
// not acked).
func (s *orderSetup) publish(ctx context.Context, t *testing.T, c chat.Conversation, n int) []jetstream.Msg {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := s.js.Publish(ctx, s.cfg.In(c), []byte(`"m"`)); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	batch, err := s.cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != n {
		t.Fatalf("fetched %d messages, want %d", len(msgs), n)
	}
	return msgs
}

// appendAck appends m to the store and acks it, as a worker does.
func (s *orderSetup) appendAck(ctx context.Context, t *testing.T, c chat.Conversation, m jetstream.Msg) {
	t.Helper()
	if _, err := s.store.Append(ctx, record(t, c, m, s.epoch)); err != nil {
		t.Fatal(err)
	}
	if err := m.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
}

// batches are the CHAT_IN sequences of each batch the sink received.
func (s *orderSetup) batches(t *testing.T) string {
	var got [][]uint64
	for _, b := range s.sink.decoded(t) {
		var seqs []uint64
		for _, m := range b.Messages {
			seqs = append(seqs, m.Seq)
		}
		got = append(got, seqs)
	}
	return fmt.Sprint(got)
}

// duringLookup runs a function right after each lookup that found nothing
// pending, before the flusher claims: messages published then have
// sequences above anything the lookup could see.
type duringLookup struct {
	*stream.Pending
	then func()
}

func (d duringLookup) FirstPending(ctx context.Context, c chat.Conversation, from uint64) (uint64, int64, error) {
	seq, epoch, err := d.Pending.FirstPending(ctx, c, from)
	if err == nil && seq == 0 && d.then != nil {
		d.then()
	}
	return seq, epoch, err
}

// TestMessagesPublishedDuringTheLookupKeepTheirOrder: the lookup finds
// nothing of the conversation still stored; before the claim, two more
// of its messages are published, and another worker appends the later one
// while the earlier is still held. The claim takes what was settled before
// the lookup and leaves the later message for after the earlier one.
func TestMessagesPublishedDuringTheLookupKeepTheirOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := newOrderSetup(ctx, t, natstest.Embedded(t))
	first := s.publish(ctx, t, alice, 1)
	s.pending.Saw(s.epoch, 1) // this worker's delivery
	s.appendAck(ctx, t, alice, first[0])

	var held []jetstream.Msg
	d := duringLookup{Pending: s.pending}
	d.then = func() {
		d.then = nil
		held = s.publish(ctx, t, alice, 2)
		s.appendAck(ctx, t, alice, held[1]) // the other worker's
	}
	f := s.flusher(t, &d)
	if res, err := f.Flush(ctx, alice, chat.TriggerManual); err != nil || len(res.BatchIDs) != 1 {
		t.Fatalf("Flush(manual) = %v, %v; want 1 batch", res, err)
	}
	if held == nil {
		t.Fatal("the flusher made no lookup that found nothing pending")
	}
	s.appendAck(ctx, t, alice, held[0])
	if res, err := f.Flush(ctx, alice, chat.TriggerManual); err != nil || len(res.BatchIDs) != 1 {
		t.Fatalf("Flush(manual) = %v, %v; want 1 batch", res, err)
	}
	if got := s.batches(t); got != "[[1] [2 3]]" {
		t.Errorf("batches %v; want [[1] [2 3]]", got)
	}
}

// TestOrderOnAServerWhoseLookupHidesAMessage: messages 1 to 3 of one
// conversation and 4 of another; 3 is appended and acked, then 1, while 2
// is held. On nats-server 2.9.10 the file store's per-subject index now
// hides message 2 from "next message on this subject" (the lookup from 1
// finds nothing; a block holding more than one subject is searched through
// that index): Pending answers from CHAT_IN's first stored sequence there. On
// both servers the first batch is [1] alone, and 3 follows 2.
func TestOrderOnAServerWhoseLookupHidesAMessage(t *testing.T) {
	for name, start := range map[string]func(testing.TB) *natstest.Server{"embedded": natstest.Embedded, "binary": natstest.Binary} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			srv := start(t)
			t.Logf("nats-server %s (hides messages: %v)", srv.Version, stream.HidesMessages(srv.Version))
			s := newOrderSetup(ctx, t, srv)
			msgs := s.publish(ctx, t, alice, 3)
			s.publish(ctx, t, bob, 1)
			s.pending.Saw(s.epoch, 4)
			s.appendAck(ctx, t, alice, msgs[2])
			s.appendAck(ctx, t, alice, msgs[0])

			f := s.flusher(t, s.pending)
			if res, err := f.Flush(ctx, alice, chat.TriggerManual); err != nil || len(res.BatchIDs) != 1 {
				t.Fatalf("Flush(manual) with message 2 held = %v, %v; want 1 batch", res, err)
			}
			s.appendAck(ctx, t, alice, msgs[1])
			if res, err := f.Flush(ctx, alice, chat.TriggerManual); err != nil || len(res.BatchIDs) != 1 {
				t.Fatalf("Flush(manual) = %v, %v; want 1 batch", res, err)
			}
			if got := s.batches(t); got != "[[1] [2 3]]" {
				t.Errorf("batches %v; want [[1] [2 3]]", got)
			}
		})
	}
}
