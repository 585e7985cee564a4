package flush

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/opencontext/chatbuf/chat"
)

// Defaults of the refusal settings of Config.
const (
	DefaultRejectAfter = 10 * time.Minute
	DefaultRetryMin    = time.Second
	DefaultRetryMax    = 30 * time.Second
)

// Kinds of refusal (RefusedError.Kind), the label of the publish-failure
// metric.
const (
	KindFull        = "full"        // the stream is full (max_msgs, max_bytes with discard new)
	KindTooLarge    = "too_large"   // the batch exceeds max_payload or the stream's max_msg_size
	KindLimits      = "limits"      // account or server resource limits
	KindPermission  = "permission"  // the worker may not publish there
	KindUnavailable = "unavailable" // no responders: the stream or JetStream is not there
	KindTimeout     = "timeout"     // no PubAck in time
	KindOther       = "other"
)

// RefusedError is a publish the sink did not take, with the kind of
// refusal. A sink wraps its errors in it; a plain error counts as KindOther.
type RefusedError struct {
	Kind string
	Err  error
}

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// RefusalKind returns the kind of a publish error.
func RefusalKind(err error) string {
	var r *RefusedError
	if errors.As(err, &r) && r.Kind != "" {
		return r.Kind
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return KindTimeout
	}
	return KindOther
}

// Rejecter takes a batch that the sink refused for longer than
// Config.RejectAfter, whole (a dead-letter stream). It returns once the batch
// is durably there; only then is the batch committed.
type Rejecter interface {
	Reject(ctx context.Context, b Envelope, cause error) error
}

// ErrRefused marks the error of a publish the sink refused, which the
// flusher has logged (rate-limited) and scheduled for a retry.
var ErrRefused = errors.New("refused by the sink; retried with backoff")

// refusedErr is the error of a refused publish: it is ErrRefused and wraps
// the sink's error.
type refusedErr struct {
	id  string
	err error
}

func (e *refusedErr) Error() string {
	return fmt.Sprintf("flush: publish %s: %v: %v", e.id, ErrRefused, e.err)
}
func (e *refusedErr) Unwrap() error        { return e.err }
func (e *refusedErr) Is(target error) bool { return target == ErrRefused }

// DropRefused returns err without its ErrRefused parts (errors.Join
// members), for callers that log errors: refusals are logged already.
func DropRefused(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*refusedErr); ok {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var keep []error
		for _, e := range j.Unwrap() {
			if e = DropRefused(e); e != nil {
				keep = append(keep, e)
			}
		}
		return errors.Join(keep...)
	}
	if errors.Is(err, ErrRefused) {
		return nil
	}
	return err
}

// ErrBackoff: a batch of the conversation was refused lately, and its next
// try is not due yet.
var ErrBackoff = errors.New("flush: batch refused; waiting to retry")

// refusal is what the flusher knows of one conversation's refused batch.
type refusal struct {
	token    int64
	created  time.Time // when the batch was claimed
	since    time.Time // its first recorded refusal (first failure seen here until one is recorded)
	clock    bool      // since is the store's record of a definite refusal
	attempts int
	next     time.Time // not retried before
	tried    time.Time // last attempt
	logged   time.Time // last warning
	err      error
}

// refusals tracks the refused batches of a flusher, per conversation.
type refusals struct {
	mu sync.Mutex
	m  map[chat.Conversation]*refusal

	logMu      sync.Mutex
	logWindow  time.Time
	logCount   int
	suppressed int
}

// Warnings: one per conversation at its first refusal and then every
// warnEvery, and at most warnBurst per warnWindow in all.
const (
	warnEvery  = time.Minute
	warnBurst  = 10
	warnWindow = 10 * time.Second
)

func (r *refusals) get(c chat.Conversation) (refusal, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[c]
	if !ok {
		return refusal{}, false
	}
	return *e, true
}

// forget drops c's entry: its batch was committed, or it has none in flight.
func (r *refusals) forget(c chat.Conversation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, c)
}

// waiting reports how long c must wait before its refused batch is tried
// again (0: now).
func (r *refusals) waiting(c chat.Conversation, now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.m[c]; ok && now.Before(e.next) {
		return e.next.Sub(now)
	}
	return 0
}

// due returns the conversations whose refused batch may be tried again.
func (r *refusals) due(now time.Time, limit int) []chat.Conversation {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []chat.Conversation
	for c, e := range r.m {
		if len(out) >= limit {
			break
		}
		if !now.Before(e.next) {
			out = append(out, c)
		}
	}
	return out
}

// oldest returns the claim time of the oldest refused batch.
func (r *refusals) oldest() (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var t time.Time
	for _, e := range r.m {
		if t.IsZero() || e.created.Before(t) {
			t = e.created
		}
	}
	return t, !t.IsZero()
}

// allowWarn applies the global warning budget; it returns how many
// warnings were suppressed since the last one let through.
func (r *refusals) allowWarn(now time.Time) (bool, int) {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	if now.Sub(r.logWindow) >= warnWindow {
		r.logWindow, r.logCount = now, 0
	}
	if r.logCount >= warnBurst {
		r.suppressed++
		return false, 0
	}
	r.logCount++
	n := r.suppressed
	r.suppressed = 0
	return true, n
}

// backoff is the wait after the n-th failed attempt: RetryMin doubling up
// to RetryMax, with a fifth of jitter.
func (f *Flusher) backoff(n int) time.Duration {
	d := f.cfg.RetryMin
	for i := 1; i < n && d < f.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, f.cfg.RetryMax)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// OldestRefused returns the claim time of the oldest in-flight batch whose
// publishing failed in this flusher and has not succeeded since (as far as
// this flusher knows); ok is false when there is none.
func (f *Flusher) OldestRefused() (t time.Time, ok bool) { return f.refused.oldest() }

// refuse handles a publish of out that failed with perr: it records the
// refusal (in the store, so that its start survives this process and is seen
// by the next worker), schedules a retry with backoff, warns (rate-limited),
// and once the refusal has lasted RejectAfter hands the batch to the
// Rejecter. It reports whether the batch was rejected: then the caller
// commits it, as if published, and the conversation moves on.
func (f *Flusher) refuse(ctx context.Context, c chat.Conversation, fence int64, out *Envelope, perr error) bool {
	now := f.cfg.Now()
	kind := RefusalKind(perr)
	if f.cfg.Hooks.Refused != nil {
		f.cfg.Hooks.Refused(kind)
	}
	// Only a definite refusal by the stream starts the clock: no answer
	// (NATS or the stream away, a timeout) is an outage, which never
	// dead-letters a batch.
	definite := kind != KindUnavailable && kind != KindTimeout
	var since time.Time
	var serr error
	if definite {
		since, serr = f.store.Refused(ctx, c, fence, out.Token, now)
	}

	f.refused.mu.Lock()
	if f.refused.m == nil {
		f.refused.m = map[chat.Conversation]*refusal{}
	}
	e, ok := f.refused.m[c]
	if !ok || e.token != out.Token {
		e = &refusal{token: out.Token, created: out.Created, since: now}
		f.refused.m[c] = e
	}
	if definite && serr == nil {
		e.since, e.clock = since, true
	}
	e.attempts++
	e.tried, e.err = now, perr
	e.next = now.Add(f.backoff(e.attempts))
	first := e.attempts == 1
	warn := first || now.Sub(e.logged) >= warnEvery
	if warn {
		e.logged = now
	}
	snap := *e
	f.refused.mu.Unlock()

	attrs := func(more ...any) []any {
		return logConv(c, append([]any{slog.String("batch_id", out.ID), slog.String("kind", kind),
			slog.Duration("age", now.Sub(snap.created).Round(time.Millisecond)),
			slog.Duration("refused_for", now.Sub(snap.since).Round(time.Millisecond)),
			slog.Int("attempts", snap.attempts), slog.Any("error", perr)}, more...)...)
	}
	if serr != nil && ctx.Err() == nil {
		f.hookError("refused", serr)
		f.cfg.Logger.Warn("flush: cannot record a batch's refusal in the store; its refusal clock runs in this process only",
			logConv(c, slog.String("batch_id", out.ID), slog.Any("error", serr))...)
	}
	rejectAt := snap.since.Add(f.cfg.RejectAfter)
	if f.cfg.Rejecter != nil && definite && serr == nil && !now.Before(rejectAt) {
		if err := f.cfg.Rejecter.Reject(ctx, *out, perr); err != nil {
			f.hookError("reject", err)
			if ok, suppressed := f.refused.allowWarn(now); ok && warn {
				f.cfg.Logger.Error("flush: batch refused past the limit and cannot be dead-lettered either; it stays in flight and is retried",
					attrs(slog.Any("dead_letter_error", err), slog.Duration("next_try_in", snap.next.Sub(now).Round(time.Millisecond)),
						slog.Int("similar_messages_suppressed", suppressed))...)
			}
			return false
		}
		f.cfg.Logger.Error("flush: batch refused past the limit; dead-lettered whole (batch_rejected)",
			attrs(slog.Duration("limit", f.cfg.RejectAfter), slog.Int("messages", out.messages))...)
		if f.cfg.Hooks.Rejected != nil {
			f.cfg.Hooks.Rejected(out.messages)
		}
		return true
	}
	if warn {
		if ok, suppressed := f.refused.allowWarn(now); ok {
			more := []any{slog.Duration("next_try_in", snap.next.Sub(now).Round(time.Millisecond)),
				slog.Int("similar_messages_suppressed", suppressed)}
			if f.cfg.Rejecter != nil && snap.clock {
				more = append(more, slog.Duration("dead_letter_in", max(rejectAt.Sub(now), 0).Round(time.Second)))
			}
			f.cfg.Logger.Warn("flush: CHAT_FLUSHED refused a batch; it stays in flight and is retried with backoff", attrs(more...)...)
		}
	}
	return false
}

// published clears c's refusal after its batch went out (or none was in
// flight), and says so when there had been one.
func (f *Flusher) published(c chat.Conversation, id string) {
	e, ok := f.refused.get(c)
	if !ok {
		return
	}
	f.refused.forget(c)
	if id != "" && e.token != 0 {
		f.cfg.Logger.Info("flush: a refused batch went through", logConv(c, slog.String("batch_id", id),
			slog.Int("attempts", e.attempts), slog.Duration("refused_for", f.cfg.Now().Sub(e.since).Round(time.Millisecond)))...)
	}
}

// backoffErr returns an ErrBackoff error when c's refused batch is not due
// for a retry yet.
func (f *Flusher) backoffErr(c chat.Conversation) error {
	wait := f.refused.waiting(c, f.cfg.Now())
	if wait <= 0 {
		return nil
	}
	e, _ := f.refused.get(c)
	return fmt.Errorf("%w: next try in %v (refused %d times, last: %v)", ErrBackoff, wait.Round(time.Millisecond), e.attempts, e.err)
}
