package stream_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/stream"
)

// TestFirstPending: messages a1, b1, a2 published, a1 acked. Where lookups
// by subject are trusted, each conversation's first stored message is
// found; on a server whose lookups can hide a message (2.9), the answer is
// CHAT_IN's first stored message, whatever its conversation, and is never
// "nothing", even with CHAT_IN empty. A CHAT_IN created again is answered
// for with its new epoch.
func TestFirstPending(t *testing.T) {
	servers(t, func(t *testing.T, srv *natstest.Server) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		js, cfg := setup(t, srv)
		careful := stream.HidesMessages(srv.Version)
		a := chat.Conversation{User: "alice", Device: "d", Agent: "g"}
		b := chat.Conversation{User: "bob", Device: "d", Agent: "g"}
		for _, c := range []chat.Conversation{a, b, a} {
			if _, err := js.Publish(ctx, cfg.In(c), []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
		}
		cons, err := js.Consumer(ctx, cfg.InStream, cfg.Consumer)
		if err != nil {
			t.Fatal(err)
		}
		ack := func(n int) {
			t.Helper()
			batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for m := range batch.Messages() {
				if err := m.DoubleAck(ctx); err != nil {
					t.Fatal(err)
				}
				got++
			}
			if got != n {
				t.Fatalf("fetched %d messages; want %d (%v)", got, n, batch.Error())
			}
		}
		ack(1)

		p := stream.NewPending(js, cfg)
		epoch, err := p.Epoch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		check := func(c chat.Conversation, from, want, wantCareful uint64, wantEpoch int64) {
			t.Helper()
			if careful {
				want = wantCareful
			}
			seq, e, err := p.FirstPending(ctx, c, from)
			if err != nil || seq != want || e != wantEpoch {
				t.Errorf("FirstPending(%s, %d) = %d, %d, %v; want %d, %d", c.User, from, seq, e, err, want, wantEpoch)
			}
		}
		check(a, 1, 3, 2, epoch)
		check(b, 1, 2, 2, epoch)
		check(a, 4, 0, 4, epoch)
		ack(2)
		check(a, 1, 0, 4, epoch)
		check(b, 1, 0, 4, epoch)

		if err := js.DeleteStream(ctx, cfg.InStream); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // a new creation time, in ms
		if _, err := stream.Ensure(ctx, js, cfg); err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, cfg.In(b), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		s, err := js.Stream(ctx, cfg.InStream)
		if err != nil {
			t.Fatal(err)
		}
		created := s.CachedInfo().Created.UnixMilli()
		if !careful {
			// The lookup goes by CHAT_IN's info of up to a few seconds ago.
			p.Refresh()
		}
		check(b, 1, 1, 1, created)
	})
}

// TestFirstPendingPassesMessagesItsConsumerAcked: after a kill -9,
// nats-server 2.9 can keep a message stored in CHAT_IN that the worker
// consumer counts as acked and never delivers again. Pending reads only
// CHAT_IN's state and the consumer's, so that state is made here on
// purpose: CHAT_IN as a limits stream (a work queue refuses it), three
// messages, and a consumer starting at sequence 3 that acks it: its ack
// floor is 3 while 1, 2 and 3 stay stored. CHAT_IN's first stored sequence
// then stands at 1 for good; within moments FirstPending answers from the
// ack floor instead (4), so no conversation waits for messages that will
// never come.
func TestFirstPendingPassesMessagesItsConsumerAcked(t *testing.T) {
	srv := natstest.Binary(t)
	if !stream.HidesMessages(srv.Version) {
		t.Fatalf("this test needs a nats-server before 2.10.25 on PATH (Debian's 2.9); found %s", srv.Version)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.Config{}.WithDefaults()
	sc := cfg.Streams()[0]
	sc.Retention = jetstream.LimitsPolicy
	s, err := js.CreateStream(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	a := chat.Conversation{User: "alice", Device: "d", Agent: "g"}
	for range 3 {
		if _, err := js.Publish(ctx, cfg.In(a), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	cc := cfg.ConsumerConfig()
	cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, 3
	cons, err := js.CreateConsumer(ctx, cfg.InStream, cc)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if ci, err := cons.Info(ctx); err != nil || ci.AckFloor.Stream != 3 {
		t.Fatalf("consumer's info: %+v, %v; want ack floor 3 (1 and 2 skipped, 3 acked)", ci, err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.FirstSeq != 1 {
		t.Fatalf("CHAT_IN's first stored sequence: %v, %v; want 1 (kept though counted acked)", info, err)
	}

	p := stream.NewPending(js, cfg)
	var logged syncBuffer
	p.SetLogger(slog.New(slog.NewTextHandler(&logged, nil)))
	seq, _, err := p.FirstPending(ctx, a, 1)
	if err != nil {
		t.Fatal(err)
	}
	if seq != 1 {
		t.Errorf("first FirstPending = %d; want 1 (the first stored sequence, not yet seen standing still)", seq)
	}
	deadline := time.Now().Add(5 * time.Second)
	for seq != 4 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if seq, _, err = p.FirstPending(ctx, a, 1); err != nil {
			t.Fatal(err)
		}
	}
	if seq != 4 {
		t.Fatalf("FirstPending = %d after 5 s; want 4 (the ack floor plus one: 1 and 2 will never be delivered)", seq)
	}
	// The operator is told which message to remove, once.
	const warning = "CHAT_IN keeps a message its consumer counts as acked"
	for !strings.Contains(logged.String(), warning) && time.Now().Before(deadline.Add(5*time.Second)) {
		time.Sleep(50 * time.Millisecond)
		if _, _, err := p.FirstPending(ctx, a, 1); err != nil {
			t.Fatal(err)
		}
	}
	out := logged.String()
	if n := strings.Count(out, warning); n != 1 || !strings.Contains(out, "seq=1 ack_floor=3") {
		t.Errorf("log has the warning %d times, want once with seq=1 ack_floor=3:\n%s", n, out)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
