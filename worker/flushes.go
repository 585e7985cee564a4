package worker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/flush"
	"github.com/opencontext/chatbuf/locking"
	"github.com/opencontext/chatbuf/stream"
)

// busyRetry is how soon a size flush that found the conversation locked, or
// an earlier message still on its way, is tried again: the lock holder may
// have finished before our append landed. Each further retry of the same
// conversation waits twice as long, up to maxBusyRetry, so that a message
// held for CHAT_ACK_WAIT does not make its conversation's flush spin.
const (
	busyRetry    = 20 * time.Millisecond
	maxBusyRetry = time.Second
)

// flushQueue runs size flushes on a bounded set of goroutines, in groups
// (FlushMany), at most one queued entry per conversation.
type flushQueue struct {
	w  *Worker
	ch chan chat.Conversation

	mu      sync.Mutex
	pending map[chat.Conversation]chat.Trigger // size or end
	retries map[chat.Conversation]int          // retries in a row, while busy
	done    chan struct{}
	closed  bool
}

func newFlushQueue(w *Worker, capacity int) *flushQueue {
	return &flushQueue{
		w:       w,
		ch:      make(chan chat.Conversation, capacity),
		pending: map[chat.Conversation]chat.Trigger{},
		retries: map[chat.Conversation]int{},
		done:    make(chan struct{}),
	}
}

// add queues a flush of c (reason size or end) unless one is queued
// already; a queued size flush becomes an end flush. It blocks while the
// queue is full (backpressure on the appending lanes).
func (q *flushQueue) add(c chat.Conversation, reason chat.Trigger) {
	q.mu.Lock()
	if had, ok := q.pending[c]; ok || q.closed {
		if ok && had != chat.TriggerEnd {
			q.pending[c] = reason
		}
		q.mu.Unlock()
		return
	}
	q.pending[c] = reason
	q.mu.Unlock()
	select {
	case q.ch <- c:
	case <-q.done:
	}
}

// close stops accepting flushes; queued ones are dropped (their buffers stay
// in the store, where the sweepers and size triggers find them).
func (q *flushQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.done)
	}
}

// maxFlushGroup bounds how many conversations one FlushMany takes.
const maxFlushGroup = 64

func (q *flushQueue) run(ctx context.Context) {
	group := make([]chat.Conversation, 0, maxFlushGroup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.done:
			return
		case c := <-q.ch:
			group = append(group[:0], c)
		}
	fill:
		for len(group) < maxFlushGroup {
			select {
			case c := <-q.ch:
				group = append(group, c)
			default:
				break fill
			}
		}
		var size, end []chat.Conversation
		q.mu.Lock()
		for _, c := range group {
			if q.pending[c] == chat.TriggerEnd {
				end = append(end, c)
			} else {
				size = append(size, c)
			}
			delete(q.pending, c)
		}
		q.mu.Unlock()
		q.flush(ctx, size, chat.TriggerSize)
		q.flush(ctx, end, chat.TriggerEnd)
	}
}

func (q *flushQueue) flush(ctx context.Context, group []chat.Conversation, reason chat.Trigger) {
	if len(group) == 0 {
		return
	}
	_, again, err := q.w.bufs.FlushMany(ctx, group, reason)
	// Refused batches are logged by the flusher, rate-limited.
	if err = flush.DropRefused(err); err != nil && ctx.Err() == nil {
		q.w.log.Warn("worker: flush failed; claimed batches stay for a retry", slog.Int("conversations", len(group)), slog.Any("error", err))
	}
	later := map[time.Duration][]chat.Conversation{}
	q.mu.Lock()
	for _, c := range group {
		if !slices.Contains(again, c) {
			delete(q.retries, c)
		}
	}
	for _, c := range again {
		n := q.retries[c]
		q.retries[c] = n + 1
		d := min(busyRetry<<min(n, 16), maxBusyRetry)
		later[d] = append(later[d], c)
	}
	q.mu.Unlock()
	for d, convs := range later {
		time.AfterFunc(d, func() {
			for _, c := range convs {
				q.add(c, reason)
			}
		})
	}
}

// FlushReply answers a manual flush request.
type FlushReply struct {
	OK       bool     `json:"ok"`
	Batches  int      `json:"batches"`
	BatchIDs []string `json:"batch_ids"`
	Error    string   `json:"error,omitempty"`
}

// manualFlushWait bounds how long a manual flush waits for a busy lock.
const manualFlushWait = 5 * time.Second

// handleFlushRequest answers <prefix>.flush.<user>.<device>.<agent>: it
// flushes everything buffered for the conversation and replies with the
// batch ids.
//
// Requests run with ctx, the worker's work context (not cancelled when
// shutdown begins), and are counted in running, which shutdown waits for.
func (w *Worker) handleFlushRequest(ctx context.Context, running *sync.WaitGroup) nats.MsgHandler {
	sem := make(chan struct{}, w.cfg.Concurrency)
	return func(m *nats.Msg) {
		c, err := chat.ParseSubject(w.cfg.Stream.Prefix, stream.KindFlush, m.Subject)
		if err != nil {
			w.reply(m, FlushReply{Error: err.Error()})
			return
		}
		sem <- struct{}{}
		running.Go(func() {
			defer func() { <-sem }()
			w.reply(m, w.flushManual(ctx, c))
		})
	}
}

func (w *Worker) flushManual(ctx context.Context, c chat.Conversation) FlushReply {
	ctx, cancel := context.WithTimeout(ctx, manualFlushWait)
	defer cancel()
	for {
		res, err := w.bufs.Flush(ctx, c, chat.TriggerManual)
		if err == nil {
			return FlushReply{OK: true, Batches: len(res.BatchIDs), BatchIDs: res.BatchIDs}
		}
		if !errors.Is(err, locking.ErrBusy) {
			return FlushReply{Batches: len(res.BatchIDs), BatchIDs: res.BatchIDs, Error: err.Error()}
		}
		select {
		case <-ctx.Done():
			return FlushReply{Error: "busy"}
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func (w *Worker) reply(m *nats.Msg, r FlushReply) {
	if r.BatchIDs == nil {
		r.BatchIDs = []string{}
	}
	data, _ := json.Marshal(r) // plain struct: cannot fail
	if err := m.Respond(data); err != nil && !errors.Is(err, nats.ErrMsgNoReply) {
		w.hookNATSError(err)
	}
}
