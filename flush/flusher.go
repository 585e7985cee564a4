// Package flush drains conversation buffers into batches: it takes the
// conversation's flush lock, claims a batch, builds the batch JSON, hands it
// to a Sink, and commits it, so that each message reaches the sink in exactly
// one batch even when flushers crash, stall or race.
package flush

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/locking"
)

// Defaults of Config.
const (
	DefaultBatchSize = 10
	DefaultMaxAge    = 5 * time.Minute
)

// ErrStale: the sink already holds a later batch of the conversation.
var ErrStale = errors.New("flush: a later batch was already published")

// StaleError is ErrStale with the token of the sink's last batch.
type StaleError struct{ Last int64 }

func (e *StaleError) Error() string {
	return fmt.Sprintf("flush: a later batch (token %d) was already published", e.Last)
}

func (e *StaleError) Is(target error) bool { return target == ErrStale }

// Envelope is a claimed batch encoded for the sink: its ID, its JSON and
// what the sink's publish headers need.
type Envelope struct {
	Conv   chat.Conversation
	ID     string // batch_id, unique and stable across retries
	Token  int64  // fencing_token
	Reason chat.Trigger
	Data   []byte // the batch JSON
	// Created and Records rebuild Data under a new token.
	Created time.Time
	Records []chat.Record
	// Trace is the span context of the batch's flush (invalid: not
	// traced); the sink passes it on with the batch.
	Trace trace.SpanContext
	// PrevPos is the sink position of the conversation's previous batch as the
	// store knows it (0: none known). A sink that can compare-and-set
	// publishes only while it still is the conversation's last batch.
	PrevPos uint64

	messages int
}

// Sink delivers batches downstream.
//
// Publish returns the batch's position in the sink. Publishing a batch whose
// ID the sink already holds must not add a second copy; it returns the
// position of the first. It returns a *StaleError when the sink holds a
// later batch (higher Token) of the conversation and not this one.
type Sink interface {
	Publish(ctx context.Context, b Envelope) (pos uint64, err error)
}

// Pending tells which messages of a conversation may still be on their way
// into its buffer. CHAT_IN is a work queue and workers ack a message only
// once it is appended, so every message of the conversation before the
// first one still stored in CHAT_IN is in the buffer or flushed already.
type Pending interface {
	// FirstPending returns the lowest CHAT_IN sequence from from on that
	// may still be stored on c's subject (0: none is, as of the call) and
	// CHAT_IN's epoch (its creation time, unix ms).
	FirstPending(ctx context.Context, c chat.Conversation, from uint64) (seq uint64, epoch int64, err error)
	// Seen returns a sequence that CHAT_IN of epoch stored before the call
	// (0: none known): when FirstPending then finds nothing, every message
	// of c up to it is in the buffer or flushed. A message published after
	// the lookup, with a higher sequence, may still be on its way while a
	// later one is appended.
	Seen() (epoch int64, seq uint64)
}

// Hooks observe the flusher (metrics). Nil fields are skipped.
type Hooks struct {
	Batch func(reason chat.Trigger, messages int, d time.Duration)
	Error func(stage string, err error)
	// Refused: the sink refused a batch (not a stale one), with the kind of
	// refusal (RefusedError.Kind).
	Refused func(kind string)
	// Rejected: a batch of this many messages went to the Rejecter.
	Rejected func(messages int)
	// Delivered is called for each message of a published batch whose
	// record keeps the time CHAT_IN stored it, with the time from then to
	// the batch's PubAck.
	Delivered func(reason chat.Trigger, d time.Duration)
}

// Config tunes a Flusher. Zero values mean the defaults.
type Config struct {
	BatchSize  int           // CHAT_BUFFER_SIZE: messages per batch
	MaxAge     time.Duration // CHAT_FLUSH_MAX_AGE: a buffer older than this is flushed
	LockExpiry time.Duration // the Locker's expiry; the lock is extended every third of it
	// MaxBatchBytes (CHAT_BATCH_MAX_BYTES) is the ceiling of a batch's JSON;
	// 0: none. A batch closed by it has reason bytes.
	MaxBatchBytes int
	// Idle (CHAT_FLUSH_IDLE), when > 0: a conversation without an append
	// for this long is flushed (reason idle); the store must track idle
	// conversations (buffer.Config.TrackIdle).
	Idle time.Duration
	// Pending, when set, keeps each conversation's batches in CHAT_IN
	// order across workers: a new batch takes only messages no earlier
	// one of which may still be on its way into the buffer.
	Pending Pending
	// RejectAfter is how long the sink may refuse a batch before it goes to
	// Rejecter whole (DefaultRejectAfter when zero). It counts from the
	// batch's first refusal, recorded in the store.
	RejectAfter time.Duration
	// Rejecter takes batches refused past RejectAfter; nil: they are retried
	// forever.
	Rejecter Rejecter
	// RetryMin and RetryMax bound the backoff between tries of a refused
	// batch (DefaultRetryMin, DefaultRetryMax when zero).
	RetryMin time.Duration
	RetryMax time.Duration
	Now      func() time.Time
	Logger   *slog.Logger
	Hooks    Hooks
	// Tracer, when set, traces each batch: a span per flush linked to the
	// trace contexts its messages were published with. Nil: no spans.
	Tracer trace.Tracer
}

func (c Config) withDefaults() Config {
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.LockExpiry <= 0 {
		c.LockExpiry = locking.DefaultExpiry
	}
	if c.RejectAfter <= 0 {
		c.RejectAfter = DefaultRejectAfter
	}
	if c.RetryMin <= 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax <= 0 {
		c.RetryMax = DefaultRetryMax
	}
	c.RetryMax = max(c.RetryMax, c.RetryMin)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Flusher flushes conversations.
type Flusher struct {
	store  buffer.Store
	locker locking.Locker
	sink   Sink
	cfg    Config

	refused refusals
}

// New returns a Flusher.
func New(store buffer.Store, locker locking.Locker, sink Sink, cfg Config) *Flusher {
	return &Flusher{store: store, locker: locker, sink: sink, cfg: cfg.withDefaults()}
}

// Config returns the flusher's configuration with defaults applied.
func (f *Flusher) Config() Config { return f.cfg }

// Result lists the batches one Flush published, and those it handed to the
// Rejecter.
type Result struct {
	BatchIDs []string
	Rejected []string
}

// Flush flushes conversation c for the given reason:
//   - size: full batches while the buffer holds one;
//   - age: while the buffer is full or its oldest message older than MaxAge;
//   - manual: everything buffered.
//
// An in-flight batch left by a flusher that died is published first, under
// its own id. It returns locking.ErrBusy when another flusher holds the
// conversation. On error, a claimed but unpublished batch stays in flight
// for the next Flush: nothing is lost, nothing published twice. A batch the
// sink refused is tried again with backoff: until its next try is due,
// Flush returns ErrBackoff (except for a manual flush); once it has been refused for RejectAfter it goes
// to the Rejecter and is committed.
func (f *Flusher) Flush(ctx context.Context, c chat.Conversation, reason chat.Trigger) (Result, error) {
	return f.flush(ctx, c, f.want(c, reason))
}

// PublishInFlight publishes c's in-flight batch, if a flusher left one,
// and claims nothing new.
func (f *Flusher) PublishInFlight(ctx context.Context, c chat.Conversation) (Result, error) {
	return f.flush(ctx, c, buffer.ClaimOptions{Max: f.cfg.BatchSize, Min: math.MaxInt, Reason: chat.TriggerManual, Through: &buffer.Pos{}})
}

func (f *Flusher) flush(ctx context.Context, c chat.Conversation, want buffer.ClaimOptions) (Result, error) {
	var res Result
	if want.Reason != chat.TriggerManual {
		// A manual flush is asked for explicitly: it tries at once.
		if err := f.backoffErr(c); err != nil {
			return res, err
		}
	}
	lock, err := f.locker.TryLock(ctx, c)
	if err != nil {
		return res, err
	}
	held, stop := locking.KeepAlive(ctx, lock, f.cfg.LockExpiry/3)
	defer func() {
		stop()
		if err := lock.Unlock(context.WithoutCancel(ctx)); err != nil && !errors.Is(err, locking.ErrLost) {
			f.cfg.Logger.Warn("flush: unlock failed", logConv(c, slog.Any("error", err))...)
		}
	}()

	for held.Err() == nil {
		if want.Through == nil || *want.Through != (buffer.Pos{}) {
			want.Through, want.Settled = f.through(held, c)
		}
		id, rejected, n, err := f.flushOne(held, c, lock.Fence(), want)
		if err != nil {
			if cause := context.Cause(held); errors.Is(cause, locking.ErrLost) {
				err = fmt.Errorf("%w (%w)", err, cause)
			}
			return res, err
		}
		if id == "" {
			break
		}
		if rejected {
			res.Rejected = append(res.Rejected, id)
		} else {
			res.BatchIDs = append(res.BatchIDs, id)
		}
		if n < int64(want.Min) && want.Reason != chat.TriggerEnd {
			// What is left would not be claimed: save the round trip. (An
			// end flush goes on: a record marked End may be further on.)
			break
		}
	}
	return res, nil
}

// flushOne claims, publishes and commits one batch. It returns the batch id
// ("" when there was nothing to claim), whether the batch went to the
// Rejecter instead of the sink, and the buffer's remaining length.
func (f *Flusher) flushOne(ctx context.Context, c chat.Conversation, fence int64, want buffer.ClaimOptions) (string, bool, int64, error) {
	start := time.Now()
	b, err := f.store.Claim(ctx, c, fence, want)
	if t := f.further(ctx, c, want.Through, b); err == nil && t != nil {
		want.Through = t
		b, err = f.store.Claim(ctx, c, fence, want)
	}
	if err != nil {
		f.hookError("claim", err)
		return "", false, 0, err
	}
	if b.Token == 0 {
		f.refused.forget(c)
		return "", false, 0, nil
	}
	out, err := f.out(c, b)
	if err != nil {
		f.hookError("claim", err)
		return "", false, 0, err
	}
	log := f.cfg.Logger.With(logConv(c, slog.String("batch_id", out.ID))...)
	if b.Resumed {
		log.Info("flush: resuming a batch claimed by a flusher that did not finish", "reason", b.Reason, "messages", out.messages)
	}
	span := f.startSpan(ctx, &out)
	id, rejected, remaining, err := f.finish(ctx, c, fence, &out, start, log)
	endSpan(span, &out, err, rejected)
	return id, rejected, remaining, err
}

// finish publishes and commits the claimed batch out (see flushOne).
func (f *Flusher) finish(ctx context.Context, c chat.Conversation, fence int64, out *Envelope, start time.Time, log *slog.Logger) (string, bool, int64, error) {
	pos, err := f.publish(ctx, f.sink.Publish, fence, out)
	acked := time.Now()
	rejected := false
	if err != nil {
		f.hookError("publish", err)
		if ctx.Err() != nil || errors.Is(err, ErrStale) {
			return "", false, 0, fmt.Errorf("flush: publish %s: %w", out.ID, err)
		}
		if !f.refuse(ctx, c, fence, out, err) {
			return "", false, 0, &refusedErr{out.ID, err}
		}
		// Dead-lettered whole: the conversation's last batch in the sink
		// is still the one before.
		rejected, pos = true, out.PrevPos
	}
	remaining, err := f.store.Commit(ctx, c, fence, out.Token, pos)
	if err != nil {
		f.hookError("commit", err)
		return "", false, 0, fmt.Errorf("flush: commit %s: %w", out.ID, err)
	}
	if rejected {
		f.refused.forget(c)
		return out.ID, true, remaining, nil
	}
	f.published(c, out.ID)
	d := time.Since(start)
	log.Debug("flush: batch published", "reason", out.Reason, "messages", out.messages, "position", pos, "duration", d)
	if f.cfg.Hooks.Batch != nil {
		f.cfg.Hooks.Batch(out.Reason, out.messages, d)
	}
	f.delivered(out, acked)
	return out.ID, false, remaining, nil
}

// publish publishes out; when the sink already holds a later batch, the
// batch was not published (the sink recognises a batch it holds by its
// id), so it takes a token above the sink's last one from the store, which
// checks the fence, and is published under that. This heals a token order
// turned around by the fallback (batches of one conversation from local
// memory and from Redis), and it cannot help a flusher that lost its lock:
// the store refuses it (ErrFenced).
func (f *Flusher) publish(ctx context.Context, pub func(context.Context, Envelope) (uint64, error), fence int64, out *Envelope) (uint64, error) {
	for range 3 {
		pos, err := pub(ctx, *out)
		var stale *StaleError
		if !errors.As(err, &stale) {
			return pos, err
		}
		token, terr := f.store.Retoken(ctx, out.Conv, fence, out.Token, stale.Last)
		if terr != nil {
			return 0, errors.Join(err, terr)
		}
		f.cfg.Logger.Warn("flush: batch token behind the stream's last batch; republishing under a new token",
			logConv(out.Conv, slog.String("batch_id", out.ID), slog.Int64("last_token", stale.Last), slog.Int64("new_token", token))...)
		out.retoken(token)
	}
	return 0, fmt.Errorf("flush: %s: %w", out.ID, ErrStale)
}

func (f *Flusher) want(c chat.Conversation, reason chat.Trigger) buffer.ClaimOptions {
	w := buffer.ClaimOptions{Max: f.cfg.BatchSize, Min: f.cfg.BatchSize, Reason: reason}
	switch reason {
	case chat.TriggerAge:
		w.Before = f.cfg.Now().Add(-f.cfg.MaxAge)
	case chat.TriggerIdle:
		w.IdleBefore = f.cfg.Now().Add(-f.cfg.Idle)
	case chat.TriggerManual:
		w.Min = 1
	}
	if f.cfg.MaxBatchBytes > 0 {
		w.MaxBytes = max(f.cfg.MaxBatchBytes-chat.BatchOverhead(c), 1)
	}
	return w
}

// through is the limit of a new batch of c (nil: none) and whether it is
// settled (see buffer.ClaimOptions): every message at or before it is in the
// buffer or flushed, but for the one at the limit when not settled.
// Without an answer from Pending, no new batch is claimed (an in-flight one
// is still published).
func (f *Flusher) through(ctx context.Context, c chat.Conversation) (*buffer.Pos, bool) {
	if f.cfg.Pending == nil {
		return nil, false
	}
	// What was seen before the lookup was stored before it.
	seenEpoch, seen := f.cfg.Pending.Seen()
	seq, epoch, err := f.cfg.Pending.FirstPending(ctx, c, 1)
	if err != nil {
		f.hookError("pending", err)
		if ctx.Err() == nil {
			f.cfg.Logger.Warn("flush: cannot tell which messages are still on their way; claiming no new batch", logConv(c, slog.Any("error", err))...)
		}
		return &buffer.Pos{}, false
	}
	if seq == 0 {
		// Nothing of c is stored: every message stored before the lookup
		// is settled. A later record of c may have been published after
		// it, behind one still on its way: the claim reports those for
		// further to look at.
		if seenEpoch != epoch {
			seen = 0
		}
		return &buffer.Pos{Epoch: epoch, Seq: seen}, true
	}
	return &buffer.Pos{Epoch: epoch, Seq: seq}, false
}

// further looks past a claim that b reports blocked at through: through
// is settled, or the record at it is in the buffer (its ack not yet
// processed), so each
// record after it may go too if no message between it and the one before
// is still stored in CHAT_IN. The lookups go out at once; it returns the
// new limit, or nil when nothing more may go.
func (f *Flusher) further(ctx context.Context, c chat.Conversation, through *buffer.Pos, b buffer.Batch) *buffer.Pos {
	if f.cfg.Pending == nil || !b.Blocked || len(b.Beyond) == 0 || through == nil {
		return nil
	}
	prev := append([]uint64{through.Seq}, b.Beyond[:len(b.Beyond)-1]...)
	next := make([]uint64, len(prev))
	bad := make([]bool, len(prev))
	var wg sync.WaitGroup
	for i, p := range prev {
		wg.Go(func() {
			seq, epoch, err := f.cfg.Pending.FirstPending(ctx, c, p+1)
			next[i], bad[i] = seq, err != nil || epoch != through.Epoch
		})
	}
	wg.Wait()
	var last *buffer.Pos
	for i, r := range b.Beyond {
		if bad[i] || (next[i] != 0 && next[i] < r) {
			break
		}
		last = &buffer.Pos{Epoch: through.Epoch, Seq: r}
	}
	return last
}

func (f *Flusher) hookError(stage string, err error) {
	if f.cfg.Hooks.Error != nil {
		f.cfg.Hooks.Error(stage, err)
	}
}

func logConv(c chat.Conversation, more ...any) []any {
	return append([]any{slog.String("user", c.User), slog.String("device", c.Device), slog.String("agent", c.Agent)}, more...)
}
