package stream_test

import (
	"bytes"
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

// The sink says what kind of refusal it met: a full stream, a batch over the
// server's max_payload.
func TestSinkClassifiesRefusals(t *testing.T) {
	servers(t, func(t *testing.T, srv *natstest.Server) {
		ctx := context.Background()
		js, cfg := setup(t, srv)
		sink := stream.NewSink(js, cfg)
		c := chat.Conversation{User: "u", Device: "d", Agent: "a"}
		out := func(token int64, data []byte) flush.Envelope {
			return flush.Envelope{Conv: c, ID: chat.BatchID(c, token), Token: token, Reason: chat.TriggerSize, Data: data, Created: time.Now()}
		}
		nc := srv.Conn(t)
		_, err := sink.Publish(ctx, out(1, bytes.Repeat([]byte("x"), int(nc.MaxPayload())+1)))
		if got := flush.RefusalKind(err); got != flush.KindTooLarge {
			t.Errorf("batch over max_payload: kind %q (%v), want %q", got, err, flush.KindTooLarge)
		}
		sc := cfg.Streams()[1]
		sc.MaxMsgs, sc.Discard = 1, jetstream.DiscardNew
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
		if _, err := sink.Publish(ctx, out(2, []byte(`{}`))); err != nil {
			t.Fatalf("first batch: %v", err)
		}
		_, err = sink.Publish(ctx, out(3, []byte(`{}`)))
		if got := flush.RefusalKind(err); got != flush.KindFull {
			t.Errorf("batch into a full stream: kind %q (%v), want %q", got, err, flush.KindFull)
		}
		pos, errs := sink.PublishMany(ctx, []flush.Envelope{out(4, []byte(`{}`))})
		if got := flush.RefusalKind(errs[0]); got != flush.KindFull {
			t.Errorf("PublishMany into a full stream: %d, kind %q (%v), want %q", pos[0], got, errs[0], flush.KindFull)
		}
	})
}

// A batch that cannot fit CHAT_DEAD whole is not cut: Reject refuses it, and
// nothing reaches CHAT_DEAD.
func TestRejectNeverTruncates(t *testing.T) {
	srv := natstest.Embedded(t)
	ctx := context.Background()
	js, cfg := setup(t, srv)
	c := chat.Conversation{User: "u", Device: "d", Agent: "a"}
	b := flush.Envelope{Conv: c, ID: chat.BatchID(c, 7), Token: 7, Data: bytes.Repeat([]byte("x"), 2000)}
	dl := stream.NewDeadLetters(js, cfg, func() int64 { return 2048 })
	err := dl.Reject(ctx, b, errors.New("maximum messages exceeded"))
	if !errors.Is(err, stream.ErrDeadLetterTooLarge) {
		t.Errorf("Reject of a batch that does not fit = %v, want ErrDeadLetterTooLarge", err)
	}
	st, err := js.Stream(ctx, cfg.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("CHAT_DEAD holds %d messages, want none", info.State.Msgs)
	}
	// With room, the same batch goes whole, with its headers.
	dl = stream.NewDeadLetters(js, cfg, srv.Conn(t).MaxPayload)
	if err := dl.Reject(ctx, b, errors.New("maximum messages exceeded")); err != nil {
		t.Fatalf("Reject: %v", err)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Data, b.Data) || m.Header.Get(stream.HeaderReason) != "batch_rejected" ||
		m.Header.Get(stream.HeaderSubject) != cfg.Flushed(c) || m.Header.Get(jetstream.MsgIDHeader) != "dead-"+b.ID {
		t.Errorf("dead letter: %d bytes, headers %v", len(m.Data), m.Header)
	}
}
