package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/flush"
	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/internal/redistest"
	"github.com/opencontext/chatbuf/locking"
	"github.com/opencontext/chatbuf/stream"
	"github.com/opencontext/chatbuf/worker"
)

const size = 10

// env is one NATS and one Redis shared by the workers of a test.
type env struct {
	nats  *natstest.Server
	redis *redistest.Server
	cfg   stream.Config
	js    jetstream.JetStream
	// wrap, if set, stands between the next worker started and JetStream.
	wrap func(jetstream.JetStream) jetstream.JetStream
}

func newEnv(t *testing.T, start func(testing.TB) *natstest.Server) *env {
	e := &env{nats: start(t), redis: redistest.Start(t), cfg: stream.Config{}.WithDefaults()}
	js, err := jetstream.New(e.nats.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	e.js = js
	return e
}

// redisClient starts the test's Redis if needed and returns a client.
func (e *env) redisClient(t *testing.T) *redis.Client {
	t.Helper()
	if e.redis == nil {
		e.redis = redistest.Start(t)
	}
	return e.redis.Client(t)
}

// startWorker runs a worker until the test ends (or stop is called).
func (e *env) startWorker(t *testing.T, maxAge time.Duration) (stop func()) {
	t.Helper()
	_, stop = e.startWorkerWith(t, workerOpts{maxAge: maxAge})
	return stop
}

// workerOpts are what startWorkerWith varies.
type workerOpts struct {
	maxAge    time.Duration
	batchSize int // size when zero
	hooks     worker.Hooks
	tracer    trace.Tracer
}

// startWorkerWith runs a worker until the test ends (or stop is called).
func (e *env) startWorkerWith(t *testing.T, o workerOpts) (_ *worker.Worker, stop func()) {
	t.Helper()
	if o.batchSize == 0 {
		o.batchSize = size
	}
	nc := e.nats.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	rdb := e.redis.Client(t)
	store := buffer.NewRedis(rdb, buffer.Config{})
	pending := stream.NewPending(js, e.cfg)
	fl := flush.New(store, locking.NewRedis(rdb, locking.Config{}), stream.NewSink(js, e.cfg),
		flush.Config{BatchSize: o.batchSize, MaxAge: o.maxAge, Pending: pending, Tracer: o.tracer})
	bufs := worker.StoreBuffers{Store: store, Flusher: fl, Sweeper: flush.NewSweeper(fl, 0)}
	wjs := js
	if e.wrap != nil {
		wjs = e.wrap(js)
	}
	w := worker.New(nc, wjs, bufs, worker.Config{Stream: e.cfg, BatchSize: o.batchSize, Concurrency: 2,
		SweepInterval: 100 * time.Millisecond, Hooks: o.hooks, Pending: pending, Tracer: o.tracer})
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	go func() {
		// Run sets up the streams first; wait for the consumer to exist.
		for ctx.Err() == nil {
			if _, err := js.Consumer(ctx, e.cfg.InStream, e.cfg.Consumer); err == nil {
				close(ready)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("worker stopped at start: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("worker not consuming after 15s")
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("worker Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("worker did not stop within 15s")
			}
		})
	}
	t.Cleanup(stop)
	return w, stop
}

func (e *env) publish(t *testing.T, c chat.Conversation, body string, msgID string) uint64 {
	t.Helper()
	opts := []jetstream.PublishOpt{}
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := e.js.Publish(context.Background(), e.cfg.In(c), []byte(body), opts...)
	if err != nil {
		t.Fatalf("publish to %s: %v", e.cfg.In(c), err)
	}
	return ack.Sequence
}

// readAll reads a stream from the start until it holds want messages.
func (e *env) readAll(t *testing.T, name string, want int) []jetstream.Msg {
	t.Helper()
	ctx := context.Background()
	cons, err := e.js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	deadline := time.Now().Add(30 * time.Second)
	for len(out) < want && time.Now().Before(deadline) {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			t.Fatal(err)
		}
		n := len(out)
		for m := range batch.Messages() {
			out = append(out, m)
		}
		if len(out) == n {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return out
}

// batchesNow reads the batches CHAT_FLUSHED holds now.
func (e *env) batchesNow(t *testing.T) []chat.Batch {
	t.Helper()
	var batches []chat.Batch
	cons, err := e.js.OrderedConsumer(context.Background(), e.cfg.FlushedStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		b, err := cons.FetchNoWait(1000)
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range b.Messages() {
			got++
			var batch chat.Batch
			if err := json.Unmarshal(m.Data(), &batch); err != nil {
				t.Fatalf("batch is not JSON: %v", err)
			}
			batches = append(batches, batch)
		}
		if got == 0 {
			return batches
		}
	}
}

// batchesHolding reads CHAT_FLUSHED until its batches hold n messages.
func (e *env) batchesHolding(t *testing.T, n int) []chat.Batch {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var batches []chat.Batch
		total := 0
		cons, err := e.js.OrderedConsumer(context.Background(), e.cfg.FlushedStream, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		for {
			b, err := cons.FetchNoWait(1000)
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for m := range b.Messages() {
				got++
				var batch chat.Batch
				if err := json.Unmarshal(m.Data(), &batch); err != nil {
					t.Fatalf("batch is not JSON: %v", err)
				}
				if id := m.Headers().Get(jetstream.MsgIDHeader); id != batch.BatchID {
					t.Errorf("Nats-Msg-Id %q, batch_id %q", id, batch.BatchID)
				}
				batches = append(batches, batch)
				total += batch.MessageCount
			}
			if got == 0 {
				break
			}
		}
		if total >= n || time.Now().After(deadline) {
			return batches
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// allAcked waits until the worker's consumer has nothing pending or
// unacked: every published message was stored (or dead-lettered).
func (e *env) allAcked(t *testing.T) {
	t.Helper()
	cons, err := e.js.Consumer(context.Background(), e.cfg.InStream, e.cfg.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		info, err := cons.Info(context.Background())
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("messages still pending after 60s: %+v, %v", info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) flushAll(t *testing.T, convs []chat.Conversation) {
	t.Helper()
	nc := e.nats.Conn(t)
	for _, c := range convs {
		for attempt := 0; ; attempt++ {
			msg, err := nc.Request(e.cfg.Flush(c), nil, 10*time.Second)
			if err != nil {
				t.Fatalf("flush request %s: %v", c, err)
			}
			var r worker.FlushReply
			if err := json.Unmarshal(msg.Data, &r); err != nil {
				t.Fatalf("flush reply %q: %v", msg.Data, err)
			}
			if r.OK {
				break
			}
			if r.Error != "busy" || attempt > 20 {
				t.Fatalf("flush %s: %+v", c, r)
			}
		}
	}
}

// sent is what a test published: marker -> conversation.
type sent map[string]chat.Conversation

// check asserts every published message is in exactly one batch of its
// conversation, and that the batches are well formed.
func check(t *testing.T, batches []chat.Batch, want sent) {
	t.Helper()
	checkSize(t, batches, want, size)
}

// checkSize is check for batches of up to size messages.
func checkSize(t *testing.T, batches []chat.Batch, want sent, size int) {
	t.Helper()
	seen := map[string]string{}
	ids := map[string]bool{}
	last := map[chat.Conversation]int64{}
	for _, b := range batches {
		c := chat.Conversation{User: b.UserID, Device: b.DeviceID, Agent: b.AgentID}
		if ids[b.BatchID] {
			t.Errorf("batch %s published twice", b.BatchID)
			continue
		}
		ids[b.BatchID] = true
		if b.Source != "chat_log" || b.MessageCount != len(b.Messages) || b.MessageCount < 1 || b.MessageCount > size ||
			(b.Reason == chat.TriggerSize && b.MessageCount != size) || b.BatchID != chat.BatchID(c, b.FencingToken) {
			t.Errorf("malformed batch %s: source %q, reason %s, count %d, messages %d", b.BatchID, b.Source, b.Reason, b.MessageCount, len(b.Messages))
		}
		if b.FencingToken <= last[c] {
			t.Errorf("batch %s: token %d after %d", b.BatchID, b.FencingToken, last[c])
		}
		last[c] = b.FencingToken
		for i, m := range b.Messages {
			if i > 0 && m.Seq <= b.Messages[i-1].Seq {
				t.Errorf("batch %s not in stream order", b.BatchID)
			}
			var content string
			if err := json.Unmarshal(m.Content, &content); err != nil {
				t.Errorf("batch %s: content %s: %v", b.BatchID, m.Content, err)
				continue
			}
			if prev, dup := seen[content]; dup {
				t.Errorf("message %q in %s and %s", content, prev, b.BatchID)
			}
			seen[content] = b.BatchID
			if wc, ok := want[content]; !ok {
				t.Errorf("unexpected message %q", content)
			} else if wc != c {
				t.Errorf("message %q of %v in %v's batch", content, wc, c)
			}
		}
	}
	lost := 0
	for m := range want {
		if _, ok := seen[m]; !ok {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d messages lost", lost, len(want))
	}
}

func hostileConversations() []chat.Conversation {
	long := strings.Repeat("x", 127) + "y"
	return []chat.Conversation{
		{User: "user:1", Device: "phone", Agent: "bot"},
		{User: "a{b}", Device: "d", Agent: "a"},
		{User: "ü-ser", Device: "_", Agent: "_"},
		{User: "_", Device: "_", Agent: "_"},
		{User: long, Device: long, Agent: long},
		{User: "a:b", Device: "c", Agent: "d"},
		{User: "a", Device: "b:c", Agent: "d"},
		{User: "100%", Device: "%3A", Agent: "}{"},
	}
}

func TestThreeWorkersExactlyOnce(t *testing.T) {
	for name, start := range map[string]func(testing.TB) *natstest.Server{"embedded": natstest.Embedded, "binary": natstest.Binary} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, start)
			t.Logf("nats-server %s", e.nats.Version)
			for range 3 {
				e.startWorker(t, time.Hour)
			}
			convs := hostileConversations()
			for i := range 42 {
				convs = append(convs, chat.Conversation{User: fmt.Sprintf("u%d", i), Device: "d", Agent: "a"})
			}
			want := sent{}
			for i := range 1500 {
				c := convs[i%len(convs)]
				marker := fmt.Sprintf("m-%d", i)
				want[marker] = c
				body := fmt.Sprintf(`{"role":"user","content":%q,"message_id":"id-%d"}`, marker, i)
				e.publish(t, c, body, fmt.Sprintf("id-%d", i))
				if i%7 == 0 { // a producer retry beyond NATS's own dedupe: same message_id
					e.publish(t, c, body, "")
				}
			}
			// A manual flush takes what is stored: wait until every
			// message is (acked once appended).
			e.allAcked(t)
			e.flushAll(t, convs)
			check(t, e.batchesHolding(t, len(want)), want)
		})
	}
}

// TestEncodedSubjectsCarryDecodedIDs: a message on a subject with encoded
// tokens belongs to the decoded ids. Its body ids compare with them, its
// batch carries them, and the flush and flushed subjects of its
// conversation are the encoded ones.
func TestEncodedSubjectsCarryDecodedIDs(t *testing.T) {
	e := newEnv(t, natstest.Embedded)
	e.startWorker(t, time.Hour)
	alice := chat.Conversation{User: "alice.b", Device: "phone", Agent: "bot"}
	convs := []chat.Conversation{
		alice,
		{User: "bob@example.com", Device: "Bob's phone", Agent: "*>"},
		{User: "名前 ü", Device: ".", Agent: "100%"},
		{User: "%2E", Device: "a:b", Agent: " "},
	}
	want := sent{}
	publishRaw := func(subject, body string) {
		t.Helper()
		if _, err := e.js.Publish(context.Background(), subject, []byte(body)); err != nil {
			t.Fatalf("publish to %s: %v", subject, err)
		}
	}
	// Written by hand, as a producer that knows only the contract would.
	publishRaw(e.cfg.Prefix+".in.alice%2Eb.phone.bot", `{"role":"user","content":"m-hand","user_id":"alice.b","device_id":"phone"}`)
	want["m-hand"] = alice
	// The body's ids compare with the decoded ids, not the tokens.
	mismatch := `{"role":"user","content":"m-mismatch","user_id":"alice%2Eb"}`
	publishRaw(e.cfg.Prefix+".in.alice%2Eb.phone.bot", mismatch)
	for i, c := range convs {
		body, err := json.Marshal(map[string]string{"role": "user", "content": fmt.Sprintf("m-%d", i), "user_id": c.User, "device_id": c.Device, "agent_id": c.Agent})
		if err != nil {
			t.Fatal(err)
		}
		e.publish(t, c, string(body), "")
		want[fmt.Sprintf("m-%d", i)] = c
	}

	dead := e.readAll(t, e.cfg.DeadStream, 1)
	if len(dead) != 1 || string(dead[0].Data()) != mismatch || dead[0].Headers().Get(stream.HeaderReason) != string(chat.ReasonIDMismatch) {
		var got []string
		for _, d := range dead {
			got = append(got, fmt.Sprintf("%s (%s) %s", d.Headers().Get(stream.HeaderReason), d.Headers().Get(stream.HeaderError), d.Data()))
		}
		t.Fatalf("dead letters:\n%s\nwant one id_mismatch for %s", strings.Join(got, "\n"), mismatch)
	}
	in, err := e.js.Stream(context.Background(), e.cfg.InStream)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "empty CHAT_IN (every message stored and acked)", func() bool {
		info, err := in.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	})
	e.flushAll(t, convs)

	msgs := e.readAll(t, e.cfg.FlushedStream, len(convs))
	if len(msgs) != len(convs) {
		t.Fatalf("%d batches, want %d (one per conversation)", len(msgs), len(convs))
	}
	var batches []chat.Batch
	for _, m := range msgs {
		var b chat.Batch
		if err := json.Unmarshal(m.Data(), &b); err != nil {
			t.Fatalf("batch is not JSON: %v", err)
		}
		c := chat.Conversation{User: b.UserID, Device: b.DeviceID, Agent: b.AgentID}
		if m.Subject() != e.cfg.Flushed(c) {
			t.Errorf("batch of %#v on %s, want %s", c, m.Subject(), e.cfg.Flushed(c))
		}
		batches = append(batches, b)
	}
	check(t, batches, want)
}

func TestBadInputIsDeadLettered(t *testing.T) {
	e := newEnv(t, natstest.Embedded)
	e.startWorker(t, time.Hour)
	good := chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	cases := []struct {
		name, subject, body string
		reason              chat.Reason
	}{
		{"too large", e.cfg.In(good), `{"role":"user","content":"` + strings.Repeat("x", 70000) + `"}`, chat.ReasonTooLarge},
		{"bad id: two tokens", e.cfg.Prefix + ".in.alice.phone", `{"role":"user","content":"hi"}`, chat.ReasonBadID},
		{"bad id: too long", e.cfg.Prefix + ".in." + strings.Repeat("u", 129) + ".d.a", `{"role":"user","content":"hi"}`, chat.ReasonBadID},
		{"bad id: decoded too long", e.cfg.Prefix + ".in." + strings.Repeat("%2E", 129) + ".d.a", `{"role":"user","content":"hi"}`, chat.ReasonBadID},
		{"bad id: lowercase escape", e.cfg.Prefix + ".in.alice%2eb.phone.bot", `{"role":"user","content":"hi"}`, chat.ReasonBadID},
		{"bad id: needless escape", e.cfg.Prefix + ".in.alice.phone%3A1.bot", `{"role":"user","content":"hi"}`, chat.ReasonBadID},
		{"bad id: lone percent", e.cfg.Prefix + ".in.alice.phone.100%", `{"role":"user","content":"hi"}`, chat.ReasonBadID},
		{"bad json", e.cfg.In(good), `{"role":"user",`, chat.ReasonBadJSON},
		{"bad utf-8", e.cfg.In(good), "{\"role\":\"user\",\"content\":\"\xff\"}", chat.ReasonBadJSON},
		{"not an object", e.cfg.In(good), `["user","hi"]`, chat.ReasonInvalid},
		{"unknown role", e.cfg.In(good), `{"role":"robot","content":"hi"}`, chat.ReasonInvalid},
		{"id mismatch", e.cfg.In(good), `{"role":"user","content":"hi","user_id":"mallory"}`, chat.ReasonIDMismatch},
	}
	js := e.js
	for _, tc := range cases {
		if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: tc.subject, Data: []byte(tc.body)}); err != nil {
			t.Fatalf("%s: publish: %v", tc.name, err)
		}
	}
	// A good message after the bad ones still gets through.
	e.publish(t, good, `{"role":"user","content":"fine"}`, "")
	dead := e.readAll(t, e.cfg.DeadStream, len(cases))
	if len(dead) != len(cases) {
		t.Fatalf("%d dead letters, want %d", len(dead), len(cases))
	}
	bySubjectBody := map[string]jetstream.Msg{}
	for _, m := range dead {
		bySubjectBody[m.Headers().Get(stream.HeaderSubject)+"\x00"+string(m.Data())] = m
	}
	for _, tc := range cases {
		m, ok := bySubjectBody[tc.subject+"\x00"+tc.body]
		if !ok {
			t.Errorf("%s: no dead letter with its subject and payload", tc.name)
			continue
		}
		h := m.Headers()
		if got := chat.Reason(h.Get(stream.HeaderReason)); got != tc.reason {
			t.Errorf("%s: reason %q, want %q (error %q)", tc.name, got, tc.reason, h.Get(stream.HeaderError))
		}
		if m.Subject() != e.cfg.Dead(tc.reason) {
			t.Errorf("%s: dead letter on %s, want %s", tc.name, m.Subject(), e.cfg.Dead(tc.reason))
		}
		if h.Get(stream.HeaderError) == "" || len(h.Get(stream.HeaderError)) > 256 {
			t.Errorf("%s: Chatbuf-Error %q", tc.name, h.Get(stream.HeaderError))
		}
		if !strings.HasPrefix(h.Get(jetstream.MsgIDHeader), "dead-") {
			t.Errorf("%s: Nats-Msg-Id %q", tc.name, h.Get(jetstream.MsgIDHeader))
		}
	}
	// Everything was acked: the work queue is empty.
	st, err := e.js.Stream(context.Background(), e.cfg.InStream)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := st.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CHAT_IN still holds %d messages", info.State.Msgs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.flushAll(t, []chat.Conversation{good})
	batches := e.batchesHolding(t, 1)
	check(t, batches, sent{"fine": good})
}

func TestAgeTriggerFlushesPartialBuffers(t *testing.T) {
	e := newEnv(t, natstest.Embedded)
	e.startWorker(t, 300*time.Millisecond)
	c := chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	want := sent{}
	for i := range 3 {
		m := fmt.Sprintf("age-%d", i)
		want[m] = c
		e.publish(t, c, fmt.Sprintf(`{"role":"user","content":%q}`, m), "")
	}
	batches := e.batchesHolding(t, 3)
	check(t, batches, want)
	// However the publishes fall against the sweeps, every batch is a
	// partial one flushed for its age.
	for _, b := range batches {
		if b.Reason != chat.TriggerAge || b.MessageCount >= size {
			t.Errorf("batch %s: reason %s, %d messages; want an age batch of fewer than %d", b.BatchID, b.Reason, b.MessageCount, size)
		}
	}
}

// A message published with Chatbuf-End-Batch: true closes its
// conversation's batch right after it: one end batch with it and the
// messages before it, without waiting for a full buffer or its age.
func TestEndHeaderClosesTheBatch(t *testing.T) {
	e := newEnv(t, natstest.Embedded)
	e.startWorker(t, time.Hour)
	c := chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	want := sent{}
	for i := range 3 {
		m := fmt.Sprintf("end-%d", i)
		want[m] = c
		msg := nats.NewMsg(e.cfg.In(c))
		msg.Data = []byte(fmt.Sprintf(`{"role":"user","content":%q}`, m))
		if i == 2 {
			msg.Header.Set(stream.HeaderEndBatch, "true")
		}
		if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
	batches := e.batchesHolding(t, 3)
	check(t, batches, want)
	if len(batches) != 1 || batches[0].Reason != chat.TriggerEnd {
		t.Errorf("got %d batches (%v), want one end batch", len(batches), batches)
	}
}

// The consumer disappears under a running worker (deleted by an operator):
// the worker sets it up again and keeps consuming instead of stopping. The
// server tells a pull request waiting on the consumer that it was deleted;
// a pull that arrives after the deletion gets no answer at all.
func TestWorkerSurvivesConsumerDeletion(t *testing.T) {
	for name, start := range map[string]func(testing.TB) *natstest.Server{"embedded": natstest.Embedded, "binary": natstest.Binary} {
		t.Run(name+"/while a pull waits", func(t *testing.T) {
			e := newEnv(t, start)
			e.startWorker(t, time.Hour)
			ctx := context.Background()
			cons, err := e.js.Consumer(ctx, e.cfg.InStream, e.cfg.Consumer)
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "pull request waiting on the consumer", func() bool {
				info, err := cons.Info(ctx)
				return err == nil && info.NumWaiting > 0
			})
			if err := e.js.DeleteConsumer(ctx, e.cfg.InStream, e.cfg.Consumer); err != nil {
				t.Fatalf("DeleteConsumer: %v", err)
			}
			publishAfterDeletion(t, e)
		})
		t.Run(name+"/before the first pull", func(t *testing.T) {
			e := newEnv(t, start)
			e.wrap = func(js jetstream.JetStream) jetstream.JetStream { return &deletingJS{JetStream: js} }
			e.startWorker(t, time.Hour)
			publishAfterDeletion(t, e)
		})
	}
}

func publishAfterDeletion(t *testing.T, e *env) {
	t.Helper()
	c := chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	want := sent{}
	for i := range size {
		m := fmt.Sprintf("after-%d", i)
		want[m] = c
		e.publish(t, c, fmt.Sprintf(`{"role":"user","content":%q}`, m), "")
	}
	check(t, e.batchesHolding(t, size), want)
}

// deletingJS deletes the consumer right after the worker first sets it up,
// before the worker pulls from it.
type deletingJS struct {
	jetstream.JetStream
	once sync.Once
}

func (d *deletingJS) CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	cons, err := d.JetStream.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, err
	}
	d.once.Do(func() { err = d.DeleteConsumer(ctx, stream, cfg.Durable) })
	return cons, err
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 15s", what)
		}
	}
}

// slowBuffers stalls the first append: Redis failing over, say.
type slowBuffers struct {
	worker.StoreBuffers
	stall time.Duration
	once  sync.Once
}

func (s *slowBuffers) AppendBatch(ctx context.Context, items []buffer.Item) ([]buffer.Appended, error) {
	s.once.Do(func() { time.Sleep(s.stall) })
	return s.StoreBuffers.AppendBatch(ctx, items)
}

// Messages waiting behind a stalled append, longer than CHAT_ACK_WAIT, stay
// with this worker: they are kept in progress, not redelivered (to another
// worker, which would then hold a second copy).
func TestQueuedMessagesOutliveAckWait(t *testing.T) {
	e := newEnv(t, natstest.Embedded)
	e.cfg.AckWait = 2 * time.Second
	ctx := context.Background()
	nc := e.nats.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	rdb := e.redis.Client(t)
	store := buffer.NewRedis(rdb, buffer.Config{})
	fl := flush.New(store, locking.NewRedis(rdb, locking.Config{}), stream.NewSink(js, e.cfg), flush.Config{BatchSize: size, MaxAge: time.Hour})
	bufs := &slowBuffers{StoreBuffers: worker.StoreBuffers{Store: store, Flusher: fl, Sweeper: flush.NewSweeper(fl, 0)}, stall: 5 * time.Second}
	ready := make(chan struct{})
	w := worker.New(nc, js, bufs, worker.Config{Stream: e.cfg, BatchSize: size, Concurrency: 1, AppendBatch: 2,
		OnReady: func() { close(ready) }})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	defer func() { stop(); <-done }()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not set up its streams within 30s")
	}

	c := chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	want := sent{}
	for i := range 2 * size {
		m := fmt.Sprintf("m%d", i)
		want[m] = c
		e.publish(t, c, fmt.Sprintf(`{"role":"user","content":%q}`, m), "")
	}
	check(t, e.batchesHolding(t, 2*size), want)
	cons, err := js.Consumer(ctx, e.cfg.InStream, e.cfg.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The consumer sequence counts deliveries, redeliveries included.
	if got := info.Delivered.Consumer; got != 2*size {
		t.Errorf("%d deliveries of %d messages: some were redelivered while they waited behind a stalled append", got, 2*size)
	}
}

// recreateInStream deletes CHAT_IN under the running workers and waits until
// they have set it and its consumer up again.
func recreateInStream(t *testing.T, e *env) {
	t.Helper()
	ctx := context.Background()
	if err := e.js.DeleteStream(ctx, e.cfg.InStream); err != nil {
		t.Fatalf("DeleteStream %s: %v", e.cfg.InStream, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := e.js.Consumer(ctx, e.cfg.InStream, e.cfg.Consumer); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s and its consumer not set up again after 60s", e.cfg.InStream)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Messages without message_id in a CHAT_IN created again start over at
// sequence 1: they are new messages, not duplicates of the old stream's.
func TestIDLessMessagesSurviveStreamRecreation(t *testing.T) {
	e := newEnv(t, natstest.Embedded)
	e.startWorker(t, time.Hour)
	c := chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	want := sent{}
	publish := func(round string) {
		for i := range 2 * size {
			m := fmt.Sprintf("%s-%d", round, i)
			want[m] = c
			e.publish(t, c, fmt.Sprintf(`{"role":"user","content":%q}`, m), "")
		}
	}
	publish("first")
	check(t, e.batchesHolding(t, 2*size), want)
	recreateInStream(t, e)
	publish("second")
	check(t, e.batchesHolding(t, 4*size), want)
}

// Dead letters of two messages that had the same sequence in two lives of
// CHAT_IN are two dead letters: CHAT_DEAD's duplicate window keeps both.
func TestDeadLettersSurviveStreamRecreation(t *testing.T) {
	e := newEnv(t, natstest.Embedded)
	e.startWorker(t, time.Hour)
	c := chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	bodies := []string{`{"role":"user",`, `{"role":"robot","content":"hi"}`}
	var seqs []uint64
	seqs = append(seqs, e.publish(t, c, bodies[0], ""))
	if got := e.readAll(t, e.cfg.DeadStream, 1); len(got) != 1 {
		t.Fatalf("%d dead letters before the recreation, want 1", len(got))
	}
	recreateInStream(t, e)
	seqs = append(seqs, e.publish(t, c, bodies[1], ""))
	if seqs[0] != seqs[1] {
		t.Fatalf("sequences %d and %d: the test needs the same sequence in both streams", seqs[0], seqs[1])
	}
	dead := e.readAll(t, e.cfg.DeadStream, 2)
	if len(dead) != 2 {
		t.Fatalf("%d dead letters, want 2 (one per life of %s)", len(dead), e.cfg.InStream)
	}
	for i, m := range dead {
		if string(m.Data()) != bodies[i] {
			t.Errorf("dead letter %d holds %q, want %q", i, m.Data(), bodies[i])
		}
	}
	if a, b := dead[0].Headers().Get(jetstream.MsgIDHeader), dead[1].Headers().Get(jetstream.MsgIDHeader); a == b {
		t.Errorf("both dead letters have Nats-Msg-Id %q", a)
	}
}
