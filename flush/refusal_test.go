package flush_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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

// chaosLong: the long forms of the refusal tests run with CHATBUF_CHAOS=long.
func chaosLong() bool { return os.Getenv("CHATBUF_CHAOS") == "long" }

// refusalRig is a flusher on a real Redis and a real CHAT_FLUSHED.
type refusalRig struct {
	store   *buffer.Redis
	rdb     *redistest.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	scfg    stream.Config
	keys    chat.Keys
	refused atomic.Int64 // refusals seen by Hooks.Refused
	kinds   sync.Map     // kind -> true
}

func newRefusalRig(t *testing.T, now func() time.Time) *refusalRig {
	t.Helper()
	srv := redistest.Start(t)
	ns := natstest.Embedded(t)
	nc := ns.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	scfg := stream.Config{}.WithDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := stream.Ensure(ctx, js, scfg); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	return &refusalRig{
		store: buffer.NewRedis(srv.Client(t), buffer.Config{Now: now}),
		rdb:   srv, nc: nc, js: js, scfg: scfg, keys: chat.NewKeys(""),
	}
}

func (r *refusalRig) flusher(t *testing.T, cfg flush.Config) *flush.Flusher {
	cfg.BatchSize = 10
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg.Hooks.Refused = func(kind string) {
		r.refused.Add(1)
		r.kinds.Store(kind, true)
	}
	cfg.Rejecter = stream.NewDeadLetters(r.js, r.scfg, r.nc.MaxPayload)
	return flush.New(r.store, locking.NewRedis(r.rdb.Client(t), locking.Config{}), stream.NewSink(r.js, r.scfg), cfg)
}

// limitFlushed sets CHAT_FLUSHED's max_msgs (with discard new); -1 lifts it.
func (r *refusalRig) limitFlushed(t *testing.T, maxMsgs int64) {
	t.Helper()
	sc := r.scfg.Streams()[1]
	sc.MaxMsgs, sc.Discard = maxMsgs, jetstream.DiscardNew
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.js.UpdateStream(ctx, sc); err != nil {
		t.Fatalf("update %s: %v", sc.Name, err)
	}
}

// messages returns the payloads and headers of a stream, in order.
func (r *refusalRig) messages(t *testing.T, name string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := r.js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func (r *refusalRig) batches(t *testing.T) []chat.Batch {
	t.Helper()
	var out []chat.Batch
	for _, m := range r.messages(t, r.scfg.FlushedStream) {
		var b chat.Batch
		if err := json.Unmarshal(m.Data, &b); err != nil {
			t.Fatalf("CHAT_FLUSHED seq %d: %v", m.Sequence, err)
		}
		out = append(out, b)
	}
	return out
}

// pttl returns a key's PTTL (-1: no TTL, -2: no key).
func (r *refusalRig) pttl(t *testing.T, key string) time.Duration {
	t.Helper()
	d, err := r.rdb.Client(t).PTTL(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// waitFor polls cond until it holds, failing the test at the deadline.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkOrder asserts that batches hold sequences 1..n of their
// conversations exactly once, in order within and across batches, with
// increasing tokens per conversation.
func checkOrder(t *testing.T, batches []chat.Batch, want map[uint64]chat.Conversation) {
	t.Helper()
	seen := map[uint64]string{}
	lastSeq := map[chat.Conversation]uint64{}
	lastToken := map[chat.Conversation]int64{}
	for _, b := range batches {
		c := chat.Conversation{User: b.UserID, Device: b.DeviceID, Agent: b.AgentID}
		if b.FencingToken <= lastToken[c] {
			t.Errorf("batch %s: token %d after %d", b.BatchID, b.FencingToken, lastToken[c])
		}
		lastToken[c] = b.FencingToken
		for _, m := range b.Messages {
			if prev, dup := seen[m.Seq]; dup {
				t.Errorf("seq %d in %s and %s", m.Seq, prev, b.BatchID)
			}
			seen[m.Seq] = b.BatchID
			if m.Seq <= lastSeq[c] {
				t.Errorf("batch %s: seq %d after %d", b.BatchID, m.Seq, lastSeq[c])
			}
			lastSeq[c] = m.Seq
			if want[m.Seq] != c {
				t.Errorf("seq %d in %s, appended to %s", m.Seq, b.BatchID, want[m.Seq])
			}
		}
	}
	for seq := range want {
		if _, ok := seen[seq]; !ok {
			t.Errorf("seq %d lost", seq)
		}
	}
}

// A CHAT_FLUSHED full for a while (max_msgs, discard new) refuses batches:
// they stay in flight without a TTL, later batches of their conversation
// wait behind them, the flusher reports the oldest one's age, and once the
// stream has room everything arrives once, in order.
func TestStreamFullForAWhileLosesNothing(t *testing.T) {
	ctx := context.Background()
	rig := newRefusalRig(t, nil)
	// RetryMin leaves the check right after the refusal room on a busy
	// machine; the retries after it still come within a second or two.
	f := rig.flusher(t, flush.Config{RetryMin: 100 * time.Millisecond, RetryMax: 400 * time.Millisecond})
	bob := chat.Conversation{User: "bob", Device: "d", Agent: "a"}
	app := newAppender()
	app.append(t, rig.store, alice, 10, time.Now())
	if res, err := f.Flush(ctx, alice, chat.TriggerSize); err != nil || len(res.BatchIDs) != 1 {
		t.Fatalf("first flush = %v, %v", res, err)
	}
	rig.limitFlushed(t, 1) // full from now on
	app.append(t, rig.store, alice, 30, time.Now())
	app.append(t, rig.store, bob, 10, time.Now())

	_, err := f.Flush(ctx, alice, chat.TriggerSize)
	if !errors.Is(err, flush.ErrRefused) {
		t.Fatalf("flush into a full stream = %v, want ErrRefused", err)
	}
	if _, err := f.Flush(ctx, alice, chat.TriggerSize); !errors.Is(err, flush.ErrBackoff) {
		t.Errorf("flush right after a refusal = %v, want ErrBackoff", err)
	}
	if _, ok := rig.kinds.Load(flush.KindFull); !ok {
		t.Errorf("refusal kinds %v, want %q", kinds(&rig.kinds), flush.KindFull)
	}
	// The refused batch is in flight for good: no TTL on it or its meta.
	if d := rig.pttl(t, rig.keys.Inflight(alice)); d != -1 {
		t.Errorf("PTTL of the in-flight batch after a refused publish = %v, want -1 (no TTL)", d)
	}
	if d := rig.pttl(t, rig.keys.Meta(alice)); d != -1 {
		t.Errorf("PTTL of the meta hash while a batch is in flight = %v, want -1 (no TTL)", d)
	}
	if _, ok := f.OldestRefused(); !ok {
		t.Errorf("OldestRefused reports none while a batch is refused")
	}

	sweepCtx, stop := context.WithCancel(ctx)
	defer stop()
	sw := flush.NewSweeper(f, 0)
	done := make(chan struct{})
	go func() { // a sweep every 20ms, as the worker's loop runs them
		defer close(done)
		for sweepCtx.Err() == nil {
			_, _ = sw.Sweep(sweepCtx)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	go func() { // size flushes keep coming, as appends would trigger them
		for sweepCtx.Err() == nil {
			_, _, _ = f.FlushMany(sweepCtx, []chat.Conversation{alice, bob}, chat.TriggerSize)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	full := 5 * time.Second
	if chaosLong() {
		full = 60 * time.Second
	}
	start := rig.refused.Load()
	waitFor(t, time.Minute, "several refused retries", func() bool { return rig.refused.Load() >= start+5 })
	time.Sleep(full - min(full, 5*time.Second)) // the long form keeps the stream full longer
	// Later batches wait behind the refused one: alice's buffer still
	// holds its last 20 messages.
	if n, _ := rig.store.Len(ctx, alice); n != 20 {
		t.Errorf("alice's buffer holds %d while her batch is refused, want 20 (later batches wait)", n)
	}
	if got := len(rig.batches(t)); got != 1 {
		t.Errorf("%d batches in the full stream, want 1", got)
	}
	oldest, ok := f.OldestRefused()
	if !ok || time.Since(oldest) <= 0 {
		t.Errorf("OldestRefused = %v, %v while refused", oldest, ok)
	}
	rig.limitFlushed(t, -1)
	waitFor(t, 2*time.Minute, "every message in CHAT_FLUSHED", func() bool { return len(rig.batches(t)) == 5 })
	stop()
	<-done
	checkOrder(t, rig.batches(t), app.sent)
	if _, ok := f.OldestRefused(); ok {
		t.Errorf("OldestRefused still reports a batch after all were published")
	}
	if d := rig.pttl(t, rig.keys.Meta(alice)); d <= 0 {
		t.Errorf("PTTL of the meta hash after the commits = %v, want a TTL", d)
	}
	if n := len(rig.messages(t, rig.scfg.DeadStream)); n != 0 {
		t.Errorf("%d dead letters, want none (the refusal was shorter than RejectAfter)", n)
	}
}

func kinds(m *sync.Map) []string {
	var out []string
	m.Range(func(k, _ any) bool { out = append(out, k.(string)); return true })
	slices.Sort(out)
	return out
}

// A batch refused for RejectAfter goes to CHAT_DEAD whole (batch_rejected)
// and is committed, so that its conversation moves on; replayed by an
// operator, it lands in CHAT_FLUSHED once.
func TestRefusedPastTheLimitIsDeadLetteredAndReplays(t *testing.T) {
	ctx := context.Background()
	clock := clocktest.New(time.Now())
	rig := newRefusalRig(t, clock.Now)
	limit := time.Minute
	f := rig.flusher(t, flush.Config{RejectAfter: limit, RetryMin: time.Second, RetryMax: 5 * time.Second, Now: clock.Now})
	bob := chat.Conversation{User: "bob", Device: "d", Agent: "a"}
	app := newAppender()
	app.append(t, rig.store, bob, 10, clock.Now())
	if _, err := f.Flush(ctx, bob, chat.TriggerSize); err != nil {
		t.Fatal(err)
	}
	rig.limitFlushed(t, 1)
	app.append(t, rig.store, alice, 20, clock.Now())

	sw := flush.NewSweeper(f, 0)
	steps := 0
	for steps = 0; steps < 200; steps++ {
		if _, err := sw.Sweep(ctx); err != nil && flush.DropRefused(err) != nil {
			t.Fatalf("sweep: %v", err)
		}
		if _, err := f.Flush(ctx, alice, chat.TriggerSize); err != nil && !errors.Is(err, flush.ErrRefused) && !errors.Is(err, flush.ErrBackoff) {
			t.Fatalf("flush: %v", err)
		}
		if len(rig.messages(t, rig.scfg.DeadStream)) > 0 {
			break
		}
		// Before the limit, the second batch waits behind the first.
		if n, _ := rig.store.Len(ctx, alice); n != 10 {
			t.Fatalf("alice's buffer holds %d while her first batch is refused, want 10", n)
		}
		clock.Advance(time.Second)
	}
	if elapsed := time.Duration(steps) * time.Second; elapsed < limit {
		t.Errorf("dead-lettered after %v of refusal, before the limit %v", elapsed, limit)
	}
	dead := rig.messages(t, rig.scfg.DeadStream)
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	d := dead[0]
	var b chat.Batch
	if err := json.Unmarshal(d.Data, &b); err != nil {
		t.Fatalf("dead letter payload is not the batch JSON: %v", err)
	}
	h := d.Header
	if h.Get(stream.HeaderReason) != "batch_rejected" || d.Subject != rig.scfg.Dead(stream.ReasonBatchRejected) {
		t.Errorf("dead letter on %s, reason %q", d.Subject, h.Get(stream.HeaderReason))
	}
	if e := h.Get(stream.HeaderError); e == "" || len(e) > 256 {
		t.Errorf("Chatbuf-Error %q: want 1-256 bytes", e)
	}
	if got, want := h.Get(stream.HeaderSubject), rig.scfg.Flushed(alice); got != want {
		t.Errorf("Chatbuf-Subject %q, want %q", got, want)
	}
	if got := h.Get(jetstream.MsgIDHeader); got != "dead-"+b.BatchID {
		t.Errorf("Nats-Msg-Id %q, want dead-%s", got, b.BatchID)
	}
	if h.Get(stream.HeaderTruncated) != "" {
		t.Errorf("dead letter marked truncated")
	}
	if b.MessageCount != 10 || len(b.Messages) != 10 || b.Messages[0].Seq != 11 || b.Messages[9].Seq != 20 {
		t.Errorf("dead-lettered batch: %d messages, want seqs 11-20: %+v", b.MessageCount, b.Messages)
	}
	// Committed: what is in flight now (if anything) is alice's next batch.
	if tok, _ := rig.rdb.Client(t).HGet(ctx, rig.keys.Meta(alice), "batch").Result(); tok == fmt.Sprint(b.FencingToken) {
		t.Errorf("batch %s still in flight after its dead letter", b.BatchID)
	}

	// The conversation moves on once the stream has room.
	rig.limitFlushed(t, -1)
	clock.Advance(time.Minute)
	if _, err := f.Flush(ctx, alice, chat.TriggerManual); err != nil {
		t.Fatalf("manual flush once the stream has room: %v", err)
	}
	// Replay, as an operator would: the payload to its Chatbuf-Subject
	// under Nats-Msg-Id = batch_id, twice.
	for range 2 {
		msg := &nats.Msg{Subject: h.Get(stream.HeaderSubject), Data: d.Data, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, b.BatchID)
		if _, err := rig.js.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("replay: %v", err)
		}
	}
	var ids []string
	got := map[uint64]chat.Conversation{}
	for _, x := range rig.batches(t) {
		ids = append(ids, x.BatchID)
		for _, m := range x.Messages {
			got[m.Seq] = chat.Conversation{User: x.UserID, Device: x.DeviceID, Agent: x.AgentID}
		}
	}
	if n := countOf(ids, b.BatchID); n != 1 {
		t.Errorf("replayed batch %s is %d times in CHAT_FLUSHED (%v), want once", b.BatchID, n, ids)
	}
	if len(ids) != 3 {
		t.Errorf("CHAT_FLUSHED holds %v, want bob's batch, alice's second and the replayed first", ids)
	}
	for seq, c := range app.sent {
		if got[seq] != c {
			t.Errorf("seq %d of %s: in CHAT_FLUSHED as %v", seq, c, got[seq])
		}
	}
}

func countOf(ids []string, id string) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

// recordingRejecter keeps the batches handed to it.
type recordingRejecter struct {
	mu  sync.Mutex
	got []flush.Envelope
}

func (r *recordingRejecter) Reject(_ context.Context, b flush.Envelope, _ error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, b)
	return nil
}

// The in-memory store keeps a refused batch's first refusal as Redis does:
// the batch is rejected once RejectAfter has passed since then, not before,
// and a later batch waits behind it.
func TestMemoryStoreRejectsAfterTheLimit(t *testing.T) {
	ctx := context.Background()
	clock := clocktest.New(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
	store := buffer.NewMemory(buffer.Config{Now: clock.Now})
	sink := newSink()
	sink.fail = func(flush.Envelope) error { return errSinkDown }
	rej := &recordingRejecter{}
	f := flush.New(store, locking.NewMemory(locking.Config{}), sink,
		flush.Config{BatchSize: 10, RejectAfter: time.Minute, Rejecter: rej, Now: clock.Now})
	app := newAppender()
	app.append(t, store, alice, 20, clock.Now())
	for elapsed := time.Duration(0); elapsed < time.Minute; elapsed += 10 * time.Second {
		if _, err := f.Flush(ctx, alice, chat.TriggerManual); !errors.Is(err, flush.ErrRefused) {
			t.Fatalf("flush at +%v = %v, want ErrRefused", elapsed, err)
		}
		if n, _ := store.Len(ctx, alice); n != 10 {
			t.Fatalf("buffer holds %d at +%v, want 10 (the later batch waits)", n, elapsed)
		}
		clock.Advance(10 * time.Second)
	}
	if len(rej.got) != 0 {
		t.Fatalf("rejected before the limit")
	}
	sink.fail = nil
	res, err := f.Flush(ctx, alice, chat.TriggerManual)
	if err != nil || len(res.BatchIDs) != 2 || len(res.Rejected) != 0 {
		t.Fatalf("flush once the sink takes batches = %+v, %v; want 2 published", res, err)
	}
	// A new refusal starts a new clock.
	app.append(t, store, alice, 10, clock.Now())
	sink.fail = func(flush.Envelope) error { return errSinkDown }
	if _, err := f.Flush(ctx, alice, chat.TriggerManual); !errors.Is(err, flush.ErrRefused) {
		t.Fatalf("flush = %v, want ErrRefused", err)
	}
	clock.Advance(time.Minute)
	res, err = f.Flush(ctx, alice, chat.TriggerManual)
	if err != nil || len(res.Rejected) != 1 || len(rej.got) != 1 {
		t.Fatalf("flush after the limit = %+v, %v; want 1 rejected", res, err)
	}
	if n, _ := store.Len(ctx, alice); n != 0 {
		t.Errorf("buffer holds %d after the rejection, want 0", n)
	}
	if res, err := f.Flush(ctx, alice, chat.TriggerManual); err != nil || len(res.BatchIDs)+len(res.Rejected) != 0 {
		t.Errorf("flush after the rejection = %+v, %v; want nothing left in flight", res, err)
	}
}

// No answer from the stream (NATS or the stream away) is an outage, not a
// refusal: however long it lasts, the batch is not dead-lettered.
func TestOutageNeverDeadLetters(t *testing.T) {
	ctx := context.Background()
	clock := clocktest.New(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
	store := buffer.NewMemory(buffer.Config{Now: clock.Now})
	sink := newSink()
	sink.fail = func(flush.Envelope) error {
		return &flush.RefusedError{Kind: flush.KindUnavailable, Err: errors.New("nats: no responders available for request")}
	}
	rej := &recordingRejecter{}
	f := flush.New(store, locking.NewMemory(locking.Config{}), sink,
		flush.Config{BatchSize: 10, RejectAfter: time.Minute, Rejecter: rej, Now: clock.Now})
	app := newAppender()
	app.append(t, store, alice, 10, clock.Now())
	for range 10 {
		if _, err := f.Flush(ctx, alice, chat.TriggerManual); !errors.Is(err, flush.ErrRefused) {
			t.Fatalf("flush during the outage = %v, want ErrRefused", err)
		}
		clock.Advance(time.Minute)
	}
	if len(rej.got) != 0 {
		t.Fatalf("%d batches dead-lettered during an outage", len(rej.got))
	}
	sink.fail = nil
	if res, err := f.Flush(ctx, alice, chat.TriggerManual); err != nil || len(res.BatchIDs) != 1 {
		t.Fatalf("flush after the outage = %+v, %v; want the batch published", res, err)
	}
	checkExactlyOnce(t, sink, 10, app.sent)
}
