package verify

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/stream"
)

// env is a NATS server with chatbuf's streams.
type env struct {
	js  jetstream.JetStream
	cfg stream.Config
}

// newEnv starts an embedded NATS and creates the streams. dupWindow 0
// means the default duplicate window.
func newEnv(t *testing.T, dupWindow time.Duration) *env {
	t.Helper()
	srv := natstest.Embedded(t)
	js, err := jetstream.New(srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.Config{DuplicateWindow: dupWindow}.WithDefaults()
	if _, err := stream.Ensure(t.Context(), js, cfg); err != nil {
		t.Fatal(err)
	}
	return &env{js: js, cfg: cfg}
}

// fixture is one run: messages really published to CHAT_IN and recorded,
// and hand-made batches published to CHAT_FLUSHED.
type fixture struct {
	t     *testing.T
	e     *env
	rec   *Recorder
	from  Position
	convs []chat.Conversation

	// By message index: what was published to CHAT_IN.
	msgs   []chat.Message
	bodies [][]byte
	sent   []Sent

	batchSeqs []uint64 // CHAT_FLUSHED sequences of the batches published
}

func newFixture(t *testing.T, e *env, conversations int) *fixture {
	t.Helper()
	from, err := Tail(t.Context(), e.js, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, e: e, rec: NewRecorder(NewRunID()), from: from}
	// Odd conversations have ids whose subject tokens are encoded, so
	// that every check maps subjects back to decoded ids.
	for i := range conversations {
		c := chat.Conversation{User: "u-" + f.rec.Run() + "-" + strconv.Itoa(i), Device: "d", Agent: "a"}
		if i%2 == 1 {
			c.User, c.Device, c.Agent = "u."+f.rec.Run()+"@example.com-"+strconv.Itoa(i), "Bob's phone", "100% *>ü"
		}
		f.convs = append(f.convs, c)
	}
	return f
}

// send publishes the run's next message on conversation conv and returns
// its index.
func (f *fixture) send(conv int, withID bool) int {
	f.t.Helper()
	n := len(f.msgs)
	content, err := json.Marshal(f.rec.Content(n, 32))
	if err != nil {
		f.t.Fatal(err)
	}
	m := chat.Message{Role: [...]string{"user", "assistant"}[n%2], Content: content}
	if withID {
		m.MessageID = f.rec.Run() + "-" + strconv.Itoa(n)
	}
	body, err := json.Marshal(map[string]any{"role": m.Role, "content": json.RawMessage(m.Content), "message_id": m.MessageID})
	if err != nil {
		f.t.Fatal(err)
	}
	published := time.Now()
	ack, err := f.e.js.Publish(f.t.Context(), f.e.cfg.In(f.convs[conv]), body)
	if err != nil {
		f.t.Fatal(err)
	}
	s := Sent{Marker: f.rec.Marker(n), Conversation: f.convs[conv], MessageID: m.MessageID, Seq: ack.Sequence, Published: published}
	f.rec.Add(s)
	f.msgs = append(f.msgs, m)
	f.bodies = append(f.bodies, body)
	f.sent = append(f.sent, s)
	return n
}

// sendN publishes count messages round-robin over the conversations.
func (f *fixture) sendN(count int, withID bool) {
	for i := range count {
		f.send(i%len(f.convs), withID)
	}
}

// encode builds a batch of conversation conv the way workers do.
func (f *fixture) encode(conv int, token int64, reason chat.Trigger, ns ...int) []byte {
	f.t.Helper()
	records := make([]chat.Record, len(ns))
	for i, n := range ns {
		r, err := chat.ParseRecord(chat.NewRecord(&f.msgs[n], 0, f.sent[n].Seq, false, time.Now()))
		if err != nil {
			f.t.Fatal(err)
		}
		records[i] = r
	}
	return chat.EncodeBatch(f.convs[conv], token, reason, time.Now(), records)
}

// batch encodes and publishes a good batch; it returns the batch JSON.
func (f *fixture) batch(conv int, token int64, reason chat.Trigger, ns ...int) []byte {
	f.t.Helper()
	data := f.encode(conv, token, reason, ns...)
	f.publish(conv, chat.BatchID(f.convs[conv], token), data)
	return data
}

// publish puts data on conversation conv's flushed subject. A batch id
// still in the stream's duplicate window is published again until the
// window has passed, as a batch republished after a crash would be.
func (f *fixture) publish(conv int, msgID string, data []byte) {
	f.t.Helper()
	msg := &nats.Msg{Subject: f.e.cfg.Flushed(f.convs[conv]), Data: data, Header: nats.Header{}}
	if msgID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	deadline := time.Now().Add(10 * f.e.cfg.DuplicateWindow)
	for {
		ack, err := f.e.js.PublishMsg(f.t.Context(), msg)
		if err != nil {
			f.t.Fatal(err)
		}
		if !ack.Duplicate {
			f.batchSeqs = append(f.batchSeqs, ack.Sequence)
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("batch %s still a duplicate after %v", msgID, 10*f.e.cfg.DuplicateWindow)
		}
		time.Sleep(f.e.cfg.DuplicateWindow / 4)
	}
}

// edit changes a batch's JSON through its generic form.
func edit(t *testing.T, data []byte, change func(b map[string]any)) []byte {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	change(b)
	out, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// deadLetter dead-letters message n as a worker would.
func (f *fixture) deadLetter(n int, reason chat.Reason) {
	f.t.Helper()
	body, err := json.Marshal(map[string]any{"role": "nobody", "content": json.RawMessage(f.msgs[n].Content)})
	if err != nil {
		f.t.Fatal(err)
	}
	msg := &nats.Msg{Subject: f.e.cfg.Dead(reason), Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, "dead-"+strconv.FormatUint(f.sent[n].Seq, 10))
	msg.Header.Set(headerReason, string(reason))
	msg.Header.Set("Chatbuf-Error", "unknown role")
	msg.Header.Set(headerSubject, f.e.cfg.In(f.sent[n].Conversation))
	if _, err := f.e.js.PublishMsg(f.t.Context(), msg); err != nil {
		f.t.Fatal(err)
	}
}

// check runs Check for the fixture's run.
func (f *fixture) check(ctx context.Context, opts Options) *Report {
	f.t.Helper()
	opts.From = f.from
	if opts.Timeout == 0 {
		opts.Timeout = time.Second
	}
	rep, err := Check(ctx, f.e.js, f.e.cfg, f.rec, opts)
	if err != nil {
		f.t.Fatal(err)
	}
	return rep
}
