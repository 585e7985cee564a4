// Package worker consumes chat messages from CHAT_IN, appends them to their
// conversations' buffers, acks them once the append is durable, dead-letters
// bad input, and triggers flushes: by size after an append, by age from a
// sweeper, and on request.
package worker

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/flush"
	"github.com/opencontext/chatbuf/stream"
)

// Hooks observe the worker (metrics). Nil fields are skipped.
type Hooks struct {
	Consumed   func(n int)
	Appended   func(n int)
	Duplicates func(n int)
	Dead       func(reason chat.Reason)
	StoreError func(err error)
	NATSError  func(err error)
	// StoreRefused is called for each append the store refused as a whole,
	// with buffer.RefusalKind of the error.
	StoreRefused func(kind string)
	// StoreRefusing is called when a store-wide refusal begins (true) and
	// when it ends (false).
	StoreRefusing func(refusing bool)
}

// Config tunes a Worker. Zero values mean the defaults.
type Config struct {
	Stream          stream.Config
	BatchSize       int // CHAT_BUFFER_SIZE
	MaxMessageBytes int // CHAT_MAX_MESSAGE_BYTES
	Concurrency     int // WORKER_CONCURRENCY: append lanes and flush goroutines
	AppendBatch     int // most messages per AppendBatch (256 when zero)
	SweepInterval   time.Duration
	Now             func() time.Time
	Logger          *slog.Logger
	Hooks           Hooks
	OnReady         func() // called once the streams and the consumer are set up
	// ShutdownTimeout bounds how long Run, once its context is done,
	// lets the appends and flushes under way finish before it cancels
	// them (10s when zero).
	ShutdownTimeout time.Duration
	// Pending gives records CHAT_IN's epoch; it reads the stream's info
	// again whenever the worker sets the streams up again. Nil: epoch 0.
	Pending *stream.Pending
	// Tracer, when set, traces each message's append (a child of the
	// trace context it was published with) and keeps that context in its
	// record for the span of its batch's flush to link to. Nil: no spans,
	// and no tracing work per message.
	Tracer trace.Tracer
}

func (c Config) withDefaults() Config {
	c.Stream = c.Stream.WithDefaults()
	if c.BatchSize <= 0 {
		c.BatchSize = flush.DefaultBatchSize
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = chat.DefaultMaxMessageBytes
	}
	if c.Concurrency <= 0 {
		c.Concurrency = runtime.NumCPU()
	}
	if c.AppendBatch <= 0 {
		c.AppendBatch = 256
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = flush.DefaultSweepInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if _, ok := c.Tracer.(noop.Tracer); ok {
		c.Tracer = nil
	}
	return c
}

// Buffers is where a worker appends and what it flushes: one store with its
// flusher (StoreBuffers), or the Redis-with-local-fallback pair (package
// fallback).
type Buffers interface {
	// AppendBatch appends; a result marked Held must not be acked before
	// the worker's Release names its key.
	AppendBatch(ctx context.Context, items []buffer.Item) ([]buffer.Appended, error)
	Flush(ctx context.Context, c chat.Conversation, reason chat.Trigger) (flush.Result, error)
	// FlushMany flushes many conversations at once; it returns those whose
	// lock was busy (or that still hold a full batch), to try again later.
	FlushMany(ctx context.Context, cs []chat.Conversation, reason chat.Trigger) (flush.Result, []chat.Conversation, error)
	// Sweep flushes buffers older than the flush age, once.
	Sweep(ctx context.Context) (int, error)
}

// StoreBuffers is Buffers on one store with its flusher and sweeper, and no
// fallback.
type StoreBuffers struct {
	Store   buffer.Store
	Flusher *flush.Flusher
	Sweeper *flush.Sweeper
}

func (d StoreBuffers) AppendBatch(ctx context.Context, items []buffer.Item) ([]buffer.Appended, error) {
	return d.Store.AppendBatch(ctx, items)
}

func (d StoreBuffers) Flush(ctx context.Context, c chat.Conversation, reason chat.Trigger) (flush.Result, error) {
	return d.Flusher.Flush(ctx, c, reason)
}

func (d StoreBuffers) FlushMany(ctx context.Context, cs []chat.Conversation, reason chat.Trigger) (flush.Result, []chat.Conversation, error) {
	return d.Flusher.FlushMany(ctx, cs, reason)
}

func (d StoreBuffers) Sweep(ctx context.Context) (int, error) { return d.Sweeper.Sweep(ctx) }

// Worker is one chatbuf worker process's consuming side.
type Worker struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	bufs    Buffers
	unacked *unacked
	dead    *stream.DeadLetters
	cfg     Config
	log     *slog.Logger
	seed    maphash.Seed
	flushes *flushQueue
	refusal *refusal
}

// New returns a Worker. The streams and the consumer are created by Run.
func New(nc *nats.Conn, js jetstream.JetStream, bufs Buffers, cfg Config) *Worker {
	cfg = cfg.withDefaults()
	w := &Worker{
		nc:      nc,
		js:      js,
		bufs:    bufs,
		unacked: newUnacked(),
		dead:    stream.NewDeadLetters(js, cfg.Stream, nc.MaxPayload),
		cfg:     cfg,
		log:     cfg.Logger,
		seed:    maphash.MakeSeed(),
	}
	w.refusal = newRefusal(cfg.Logger, cfg.Hooks)
	w.flushes = newFlushQueue(w, 4*cfg.Concurrency*cfg.AppendBatch)
	return w
}

// Run creates the streams and the consumer (retrying while NATS is not
// there), then consumes, flushes and answers flush requests until ctx is
// done. Then, as net/http's Server.Shutdown does, it stops taking new work
// (no more pulls, flush requests or sweeps), lets the appends and flushes
// under way finish, for up to ShutdownTimeout, after which it cancels them
// (what they held is redelivered or stays in flight for the next flusher),
// and returns nil; buffers stay in the store for the other workers.
func (w *Worker) Run(ctx context.Context) error {
	cons, err := w.ensure(ctx)
	if err != nil {
		return err
	}
	if w.cfg.OnReady != nil {
		w.cfg.OnReady()
	}
	// Appends and flushes outlive ctx so that shutdown finishes them; work
	// ends ShutdownTimeout after ctx.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopTimer := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(w.cfg.ShutdownTimeout, func() {
			w.log.Warn("worker: shutdown timeout; cancelling the appends and flushes still running", "timeout", w.cfg.ShutdownTimeout)
			cancelWork()
		})
		context.AfterFunc(work, func() { t.Stop() })
	})
	defer stopTimer()

	var manual sync.WaitGroup
	sub, err := w.nc.QueueSubscribe(w.cfg.Stream.All(stream.KindFlush), "chatbuf-flush", w.handleFlushRequest(work, &manual))
	if err != nil {
		return fmt.Errorf("worker: subscribe to flush requests: %w", err)
	}

	// Room for the next append of each lane while one runs.
	in := newIntake(w.cfg.Concurrency, w.cfg.Concurrency*w.cfg.AppendBatch, w.cfg.Stream.AckWait/4)
	var g errgroup.Group
	for _, lane := range in.lanes {
		g.Go(func() error { w.runLane(work, ctx.Done(), in, lane); return nil })
	}
	var fg sync.WaitGroup
	for range w.cfg.Concurrency {
		fg.Go(func() { w.flushes.run(work) })
	}
	fg.Go(func() { w.sweep(ctx, work) })
	keepCtx, stopKeep := context.WithCancel(work)
	defer stopKeep()
	var kg sync.WaitGroup
	kg.Go(func() { w.unacked.keepAlive(keepCtx, w.cfg.Stream.AckWait/3) })

	w.log.Info("worker: consuming", "stream", w.cfg.Stream.InStream, "consumer", w.cfg.Stream.Consumer,
		"concurrency", w.cfg.Concurrency, "batch_size", w.cfg.BatchSize)
	err = w.consume(ctx, cons, in)
	w.log.Info("worker: stopping: no more pulls or flush requests; finishing the appends and flushes under way",
		"timeout", w.cfg.ShutdownTimeout)
	if uerr := sub.Unsubscribe(); uerr != nil {
		w.log.Warn("worker: unsubscribe from flush requests", "error", uerr)
	}
	in.close()
	_ = g.Wait()
	w.flushes.close() // queued flushes stay in the store; running ones finish
	fg.Wait()
	manual.Wait()
	stopKeep()
	kg.Wait()
	if n := w.unacked.giveBack(); n > 0 {
		w.log.Warn("worker: stopped with messages buffered only in local memory; given back for redelivery", "messages", n)
	}
	w.log.Info("worker: stopped")
	return err
}

// sweep runs the age sweep on work every SweepInterval until ctx is done; a
// sweep under way when ctx ends finishes.
func (w *Worker) sweep(ctx, work context.Context) {
	t := time.NewTicker(w.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Refused batches are logged by the flusher, rate-limited.
			if _, err := w.bufs.Sweep(work); flush.DropRefused(err) != nil && work.Err() == nil {
				w.log.Warn("worker: age sweep failed", "error", flush.DropRefused(err))
			}
		}
	}
}

// StoreRefusal returns why the store refuses appends as a whole (full,
// read-only, missing permissions, unreachable without fallback), or nil
// while it takes them. While it refuses, the worker pulls no new messages.
func (w *Worker) StoreRefusal() error { return w.refusal.reason() }

// Release acks the messages of conversation c held under keys: the fallback
// published them in a batch or moved them into Redis. A dedupe key names a
// message only within its conversation: another conversation's message
// with the same key stays held.
func (w *Worker) Release(c chat.Conversation, keys []string) {
	for _, m := range w.unacked.release(c, keys) {
		if err := m.Ack(); err != nil {
			w.hookNATSError(err)
		}
	}
}

// ensure creates the streams and the consumer, retrying with backoff until
// it works or ctx is done.
func (w *Worker) ensure(ctx context.Context) (jetstream.Consumer, error) {
	backoff := 100 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cons, err := stream.Ensure(cctx, w.js, w.cfg.Stream)
		cancel()
		if err == nil {
			if w.cfg.Pending != nil {
				w.cfg.Pending.Refresh()
			}
			return cons, nil
		}
		w.hookNATSError(err)
		w.log.Warn("worker: cannot set up streams yet; retrying", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("worker: set up streams: %w", errors.Join(ctx.Err(), err))
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// consume pulls messages and deals them to lanes by conversation, so that a
// conversation's messages keep their order inside this worker. It returns
// when ctx is done; an iterator that closes before that (the consumer
// deleted, the connection closed) is set up again.
func (w *Worker) consume(ctx context.Context, cons jetstream.Consumer, in *intake) error {
	for {
		err := w.consumeOnce(ctx, cons, in)
		if ctx.Err() != nil {
			return nil
		}
		if refusing, _, ended := w.refusal.state(); refusing || errors.Is(err, errStoreRefused) {
			// The store refuses writes (or did, and this iterator was
			// stopped for it): pull nothing until it takes them again
			// (the lanes keep retrying what they hold).
			if refusing {
				select {
				case <-ctx.Done():
					return nil
				case <-ended:
				}
			}
			continue
		}
		w.hookNATSError(err)
		w.log.Warn("worker: message iterator closed while running; setting it up again", "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		if cons, err = w.ensure(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// errStoreRefused: the message iterator was closed because the store began
// refusing writes.
var errStoreRefused = errors.New("worker: the store refuses writes")

// consumeOnce runs one message iterator until it closes.
func (w *Worker) consumeOnce(ctx context.Context, cons jetstream.Consumer, in *intake) error {
	it, err := cons.Messages(
		jetstream.PullMaxMessages(len(in.lanes)*w.cfg.AppendBatch),
		// Short pulls: after a consumer leader moves (clustered NATS) or the
		// server restarts, the next pull goes out within seconds, not after
		// the default 30 s.
		jetstream.PullExpiry(5*time.Second),
		// A pull sent after the consumer was deleted gets no answer, only
		// missing heartbeats: each one is a cue to check the consumer.
		jetstream.WithMessagesErrOnMissingHeartbeat(true),
	)
	if err != nil {
		return fmt.Errorf("worker: consume: %w", err)
	}
	done := make(chan struct{})
	defer close(done)
	_, refusing, _ := w.refusal.state()
	go func() {
		select {
		case <-ctx.Done():
			it.Drain() // deliver what was pulled, pull no more
		case <-done:
			it.Stop()
		case <-refusing:
			// The store refuses writes: stop pulling. What the client
			// pulled still comes out of the iterator, to be given back
			// below (dropped, it would wait CHAT_ACK_WAIT to be redelivered).
			it.Drain()
		}
	}()
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				select {
				case <-refusing:
					return errStoreRefused
				default:
				}
				return err
			}
			if errors.Is(err, jetstream.ErrNoHeartbeat) && consumerGone(ctx, cons) {
				return fmt.Errorf("worker: consumer %s: %w", w.cfg.Stream.Consumer, jetstream.ErrConsumerNotFound)
			}
			w.hookNATSError(err)
			w.log.Warn("worker: pull failed", "error", err)
			continue
		}
		select {
		case <-refusing:
			// Pulled before the store refused writes: given back at once,
			// for whichever worker pulls once the store takes writes.
			if err := msg.Nak(); err != nil {
				w.hookNATSError(err)
			}
			continue
		default:
		}
		w.unacked.queue(msg)
		in.put(w.lane(msg.Subject(), len(in.lanes)), msg, ctx.Done())
	}
}

// consumerGone reports whether the server says cons no longer exists; an
// unreachable server does not count.
func consumerGone(ctx context.Context, cons jetstream.Consumer) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := cons.Info(ctx)
	return errors.Is(err, jetstream.ErrConsumerNotFound)
}

func (w *Worker) lane(subject string, n int) int {
	return int(maphash.String(w.seed, subject) % uint64(n))
}

func (w *Worker) hookNATSError(err error) {
	if w.cfg.Hooks.NATSError != nil {
		w.cfg.Hooks.NATSError(err)
	}
}
