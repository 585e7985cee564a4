package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/stream"
)

// ReasonStoreRejected dead-letters a message whose conversation the store
// keeps refusing (a key of the wrong type, say) after maxStoreAttempts
// deliveries, so that it is reported instead of retried forever.
const ReasonStoreRejected chat.Reason = "store_rejected"

const maxStoreAttempts = 5

// runLane appends the messages of its lane in batches of up to AppendBatch,
// taking whatever has arrived, until the lane is closed and empty.
func (w *Worker) runLane(ctx context.Context, stop <-chan struct{}, in *intake, lane *laneQueue) {
	var batch []jetstream.Msg
	for {
		if batch = lane.take(w.cfg.AppendBatch, batch); batch == nil {
			return
		}
		in.took(len(batch))
		w.process(ctx, stop, batch)
	}
}

// pending is a message on its way into the store.
type pending struct {
	msg      jetstream.Msg
	seq      uint64
	storedNS int64 // when CHAT_IN stored it, unix ns
	tries    uint64
}

// process validates a batch of messages, dead-letters the bad ones, appends
// the rest in one AppendBatch and acks each once it is stored.
func (w *Worker) process(ctx context.Context, stop <-chan struct{}, msgs []jetstream.Msg) {
	w.unacked.dequeue(msgs)
	if w.cfg.Hooks.Consumed != nil {
		w.cfg.Hooks.Consumed(len(msgs))
	}
	now := w.cfg.Now()
	var epoch int64
	if w.cfg.Pending != nil {
		var err error
		if epoch, err = w.cfg.Pending.Epoch(ctx); err != nil {
			// A record must carry its epoch to take its place in order:
			// give the messages back for a later try.
			w.hookNATSError(err)
			w.log.Warn("worker: CHAT_IN's epoch unknown; messages given back", "messages", len(msgs), "error", err)
			for _, msg := range msgs {
				_ = msg.NakWithDelay(time.Second)
			}
			return
		}
	}
	items := make([]buffer.Item, 0, len(msgs))
	var ends []bool
	var spans []trace.Span // with a Tracer: items' spans
	owners := make([]pending, 0, len(msgs))
	for _, msg := range msgs {
		meta, err := msg.Metadata()
		if err != nil {
			// Not a JetStream message: nothing to ack or dead-letter.
			w.log.Error("worker: message without JetStream metadata", "subject", msg.Subject(), "error", err)
			continue
		}
		p := pending{msg: msg, seq: meta.Sequence.Stream, storedNS: meta.Timestamp.UnixNano(), tries: meta.NumDelivered}
		c, m, err := w.decode(msg)
		if err != nil {
			reason, _ := chat.ReasonOf(err)
			w.deadLetter(ctx, p, reason, err)
			continue
		}
		end := stream.EndsBatch(msg.Headers())
		origin := chat.Origin{Stored: meta.Timestamp}
		if w.cfg.Tracer != nil {
			var span trace.Span
			span, origin.TraceParent = w.startSpan(ctx, msg, c, p.seq, now)
			spans = append(spans, span)
		}
		items = append(items, buffer.Item{Conv: c, Key: m.DedupeKey(p.seq, p.storedNS), Record: chat.NewRecordFrom(&m, epoch, p.seq, end, now, origin),
			Redelivered: meta.NumDelivered > 1})
		ends = append(ends, end)
		owners = append(owners, p)
	}
	if len(items) == 0 {
		return
	}
	if w.cfg.Pending != nil {
		var last uint64
		for _, p := range owners {
			last = max(last, p.seq)
		}
		w.cfg.Pending.Saw(epoch, last)
	}
	var res []buffer.Appended
	defer func() { endSpans(spans, res) }()

	for i, it := range items {
		w.unacked.add(it.Conv, it.Key, owners[i].msg)
	}
	res, ok := w.appendWithRetry(ctx, stop, items, owners)
	if !ok {
		res = nil
		for i, it := range items {
			w.unacked.drop(it.Conv, it.Key, owners[i].msg)
		}
		return
	}
	var appended, dups int
	var full, ended []chat.Conversation // may repeat one: flushes.add takes each once
	for i, r := range res {
		p, conv, key := owners[i], items[i].Conv, items[i].Key
		if r.Err != nil {
			w.unacked.drop(conv, key, p.msg)
			w.rejected(ctx, p, items[i], r.Err)
			continue
		}
		if r.Dup {
			dups++
		} else {
			appended++
		}
		switch {
		case ends[i] && !r.Dup:
			ended = append(ended, items[i].Conv)
		case r.Len >= int64(w.cfg.BatchSize):
			full = append(full, items[i].Conv)
		}
		// A held message (or a copy of one still held) waits for Release.
		if r.Held || (r.Dup && w.unacked.others(conv, key, p.msg)) {
			continue
		}
		if w.unacked.drop(conv, key, p.msg) {
			if err := p.msg.Ack(); err != nil {
				w.hookNATSError(err)
			}
		}
	}
	if w.cfg.Hooks.Appended != nil {
		w.cfg.Hooks.Appended(appended)
	}
	if w.cfg.Hooks.Duplicates != nil && dups > 0 {
		w.cfg.Hooks.Duplicates(dups)
	}
	for _, c := range full {
		w.flushes.add(c, chat.TriggerSize)
	}
	for _, c := range ended {
		w.flushes.add(c, chat.TriggerEnd)
	}
}

// decode checks a message in the contract's order: too_large, bad_id,
// bad_json, invalid, id_mismatch.
func (w *Worker) decode(msg jetstream.Msg) (chat.Conversation, chat.Message, error) {
	body := msg.Data()
	if len(body) > w.cfg.MaxMessageBytes {
		return chat.Conversation{}, chat.Message{}, &chat.Error{Reason: chat.ReasonTooLarge,
			Msg: fmt.Sprintf("body is %d bytes, limit %d", len(body), w.cfg.MaxMessageBytes)}
	}
	c, err := chat.ParseSubject(w.cfg.Stream.Prefix, "in", msg.Subject())
	if err != nil {
		return c, chat.Message{}, err
	}
	m, err := chat.Decode(body, c, w.cfg.MaxMessageBytes)
	return c, m, err
}

// appendWithRetry appends until the store takes the batch. While it cannot,
// it keeps the messages' ack deadlines alive and backs off, and the worker
// pulls nothing new (refusal); when the worker stops meanwhile it gives the
// messages back (nak) and reports false.
func (w *Worker) appendWithRetry(ctx context.Context, stop <-chan struct{}, items []buffer.Item, owners []pending) ([]buffer.Appended, bool) {
	backoff := 50 * time.Millisecond
	for {
		res, err := w.bufs.AppendBatch(ctx, items)
		if err == nil {
			w.refusal.ok()
			return res, true
		}
		if w.cfg.Hooks.StoreError != nil {
			w.cfg.Hooks.StoreError(err)
		}
		// An error of the call as a whole concerns the store, not a
		// conversation (those come per item): nothing is acked or
		// dead-lettered, the same messages are retried, and the worker
		// stops pulling until the store takes them (logged there, at most
		// every refusalLogEvery).
		w.refusal.fail(err, len(items))
		w.log.Debug("worker: append failed; retrying", "messages", len(items), "error", err, "retry_in", backoff)
		for _, p := range owners {
			_ = p.msg.InProgress()
		}
		select {
		case <-stop:
			for _, p := range owners {
				_ = p.msg.Nak()
			}
			return nil, false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// rejected handles a message whose conversation the store refused: retried
// later with a delay, and dead-lettered after maxStoreAttempts deliveries.
func (w *Worker) rejected(ctx context.Context, p pending, it buffer.Item, err error) {
	if w.cfg.Hooks.StoreError != nil {
		w.cfg.Hooks.StoreError(err)
	}
	if p.tries >= maxStoreAttempts {
		w.deadLetter(ctx, p, ReasonStoreRejected, err)
		return
	}
	w.log.Warn("worker: store refused a message; it will be redelivered",
		slog.String("user", it.Conv.User), slog.String("device", it.Conv.Device), slog.String("agent", it.Conv.Agent),
		slog.Uint64("seq", p.seq), slog.Uint64("delivery", p.tries), slog.Any("error", err))
	_ = p.msg.NakWithDelay(time.Duration(p.tries) * time.Second)
}

// deadLetter sends msg to <prefix>.dead.<reason>, then acks it. If the dead
// letter cannot be published the message is given back for redelivery.
func (w *Worker) deadLetter(ctx context.Context, p pending, reason chat.Reason, cause error) {
	msg := p.msg
	if reason == "" {
		reason = chat.ReasonInvalid
	}
	w.log.Info("worker: dead letter", "reason", reason, "subject", msg.Subject(), "seq", p.seq, "error", cause)
	if err := w.dead.Send(ctx, p.seq, p.storedNS, msg.Subject(), msg.Data(), reason, cause); err != nil {
		w.hookNATSError(err)
		w.log.Warn("worker: dead letter not published; message given back", "seq", p.seq, "error", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if w.cfg.Hooks.Dead != nil {
		w.cfg.Hooks.Dead(reason)
	}
	if err := msg.Ack(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		w.hookNATSError(err)
	}
}
