package flush

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/locking"
)

// ManySink publishes many batches in one go. Positions and errors are per
// batch, with Publish's meaning.
type ManySink interface {
	Sink
	PublishMany(ctx context.Context, outs []Envelope) ([]uint64, []error)
}

// maxRounds bounds how many batches in a row one FlushMany takes from a
// conversation, so that one busy conversation cannot keep the others'
// locks.
const maxRounds = 4

// FlushMany flushes many conversations at once with a handful of round
// trips in all: lock all, claim all, publish all, commit all, unlock all,
// and again while some still hold a full batch. It needs a ManyLocker, a
// ManyStore and a ManySink, and otherwise flushes one conversation after
// the other. It returns the conversations whose lock was busy, for a later
// try. Conversations whose refused batch waits for its next try (see Flush)
// are skipped: the Sweeper tries them again when it is due.
func (f *Flusher) FlushMany(ctx context.Context, convs []chat.Conversation, reason chat.Trigger) (Result, []chat.Conversation, error) {
	convs = f.notWaiting(convs)
	if len(convs) == 0 {
		return Result{}, nil, nil
	}
	ml, ok1 := f.locker.(locking.ManyLocker)
	ms, ok2 := f.store.(buffer.ManyStore)
	mk, ok3 := f.sink.(ManySink)
	if !ok1 || !ok2 || !ok3 {
		return f.flushEach(ctx, convs, reason)
	}
	var res Result
	locks, err := ml.TryLockMany(ctx, convs)
	if err != nil {
		f.hookError("lock", err)
		return res, nil, err
	}
	var busy, held []chat.Conversation
	var fences []int64
	until := time.Time{}
	for i, l := range locks {
		if l == nil {
			busy = append(busy, convs[i])
			continue
		}
		held = append(held, convs[i])
		fences = append(fences, l.Fence())
		if until.IsZero() || l.Until().Before(until) {
			until = l.Until()
		}
	}
	defer func() {
		if err := ml.UnlockMany(context.WithoutCancel(ctx), locks); err != nil && !errors.Is(err, locking.ErrLost) {
			f.cfg.Logger.Warn("flush: unlock failed", slog.Any("error", err))
		}
	}()
	if len(held) == 0 {
		return res, busy, nil
	}
	// Work stops before the earliest lock expires; the fence and the
	// stream's compare-and-set guard anything slower.
	ctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()

	var errs []error
	for round := 0; len(held) > 0 && round < maxRounds && ctx.Err() == nil; round++ {
		start := time.Now()
		reqs := make([]buffer.ClaimReq, len(held))
		for i, c := range held {
			reqs[i] = buffer.ClaimReq{Conv: c, Fence: fences[i], Want: f.want(c, reason)}
		}
		f.limit(ctx, reqs)
		batches, cerrs, err := ms.ClaimMany(ctx, reqs)
		if err != nil {
			f.hookError("claim", err)
			return res, busy, errors.Join(append(errs, err)...)
		}
		if err := f.claimFurther(ctx, ms, reqs, batches, cerrs); err != nil {
			f.hookError("claim", err)
			return res, busy, errors.Join(append(errs, err)...)
		}
		var outs []Envelope
		var idx []int
		for i, b := range batches {
			if cerrs[i] != nil {
				f.hookError("claim", cerrs[i])
				errs = append(errs, cerrs[i])
				continue
			}
			if b.Blocked {
				// An earlier message is still on its way: try again soon.
				busy = append(busy, held[i])
			}
			if b.Token == 0 {
				f.refused.forget(held[i])
				continue
			}
			out, err := f.out(held[i], b)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			outs = append(outs, out)
			idx = append(idx, i)
		}
		if len(outs) == 0 {
			held = nil
			break
		}
		spans := make([]trace.Span, len(outs))
		for j := range outs {
			spans[j] = f.startSpan(ctx, &outs[j])
		}
		spanErrs := make([]error, len(outs))
		pos, perrs := mk.PublishMany(ctx, outs)
		acked := make([]time.Time, len(outs))
		now := time.Now()
		var commits []buffer.CommitReq
		var cidx []int
		rejected := map[int]bool{}
		for j := range outs {
			acked[j] = now
			if errors.Is(perrs[j], ErrStale) {
				pos[j], perrs[j] = f.publish(ctx, mk.Publish, fences[idx[j]], &outs[j])
				acked[j] = time.Now()
			}
			out := outs[j]
			i := idx[j]
			if perrs[j] != nil {
				f.hookError("publish", perrs[j])
				if ctx.Err() != nil || errors.Is(perrs[j], ErrStale) {
					spanErrs[j] = fmt.Errorf("flush: publish %s: %w", out.ID, perrs[j])
					errs = append(errs, spanErrs[j])
					continue
				}
				if !f.refuse(ctx, held[i], fences[i], &outs[j], perrs[j]) {
					spanErrs[j] = &refusedErr{out.ID, perrs[j]}
					errs = append(errs, spanErrs[j])
					continue
				}
				// Dead-lettered whole: the sink's last batch of the
				// conversation is still the one before.
				rejected[j], pos[j] = true, out.PrevPos
			}
			commits = append(commits, buffer.CommitReq{Conv: held[i], Fence: fences[i], Token: out.Token, Pos: pos[j]})
			cidx = append(cidx, j)
		}
		endSpans := func() {
			for j, span := range spans {
				endSpan(span, &outs[j], spanErrs[j], rejected[j])
			}
		}
		if len(commits) == 0 {
			endSpans()
			held = nil
			break
		}
		left, merrs, err := ms.CommitMany(ctx, commits)
		if err != nil {
			f.hookError("commit", err)
			for _, j := range cidx {
				spanErrs[j] = fmt.Errorf("flush: commit %s: %w", outs[j].ID, err)
			}
			endSpans()
			return res, busy, errors.Join(append(errs, err)...)
		}
		d := time.Since(start)
		var nextHeld []chat.Conversation
		var nextFences []int64
		for k, q := range commits {
			out := outs[cidx[k]]
			if merrs[k] != nil {
				f.hookError("commit", merrs[k])
				spanErrs[cidx[k]] = fmt.Errorf("flush: commit %s: %w", out.ID, merrs[k])
				errs = append(errs, spanErrs[cidx[k]])
				continue
			}
			if rejected[cidx[k]] {
				f.refused.forget(q.Conv)
				res.Rejected = append(res.Rejected, out.ID)
			} else {
				f.published(q.Conv, out.ID)
				res.BatchIDs = append(res.BatchIDs, out.ID)
			}
			if f.cfg.Logger.Enabled(ctx, slog.LevelDebug) && !rejected[cidx[k]] {
				f.cfg.Logger.Debug("flush: batch published", logConv(q.Conv, slog.String("batch_id", out.ID),
					slog.Any("reason", out.Reason), slog.Int("messages", out.messages), slog.Uint64("position", pos[cidx[k]]), slog.Duration("duration", d))...)
			}
			if f.cfg.Hooks.Batch != nil && !rejected[cidx[k]] {
				f.cfg.Hooks.Batch(out.Reason, out.messages, d)
			}
			if !rejected[cidx[k]] {
				f.delivered(&out, acked[cidx[k]])
			}
			if left[k] >= int64(f.cfg.BatchSize) || (left[k] > 0 && (reason == chat.TriggerManual || reason == chat.TriggerEnd)) {
				nextHeld = append(nextHeld, q.Conv)
				nextFences = append(nextFences, q.Fence)
			}
		}
		endSpans()
		held, fences = nextHeld, nextFences
	}
	if len(held) > 0 && ctx.Err() == nil {
		// Still full after maxRounds: let the caller queue them again.
		busy = append(busy, held...)
	}
	return res, busy, errors.Join(errs...)
}

// notWaiting returns convs without those whose refused batch is not due for
// a retry yet.
func (f *Flusher) notWaiting(convs []chat.Conversation) []chat.Conversation {
	f.refused.mu.Lock()
	n := len(f.refused.m)
	f.refused.mu.Unlock()
	if n == 0 {
		return convs
	}
	now := f.cfg.Now()
	var out []chat.Conversation
	for i, c := range convs {
		if f.refused.waiting(c, now) > 0 {
			if out == nil {
				out = append(make([]chat.Conversation, 0, len(convs)), convs[:i]...)
			}
			continue
		}
		if out != nil {
			out = append(out, c)
		}
	}
	if out == nil {
		return convs
	}
	return out
}

// ackSettle is how long a claim blocked at a record in the buffer waits
// before it looks again: about the time an ack takes to be processed.
const ackSettle = 3 * time.Millisecond

// claimFurther claims again, with a limit further on (see further), the
// requests whose claim was blocked at a record in the buffer; the lookups
// of all of them go out at once.
func (f *Flusher) claimFurther(ctx context.Context, ms buffer.ManyStore, reqs []buffer.ClaimReq, batches []buffer.Batch, cerrs []error) error {
	var idx []int
	for i, b := range batches {
		if cerrs[i] == nil && b.Blocked && len(b.Beyond) > 0 {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	// Commonly the record at the limit was just appended and its ack is on
	// its way: after a moment one lookup each tells more than a lookup per
	// record would.
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(ackSettle):
	}
	sub := make([]buffer.ClaimReq, len(idx))
	for j, i := range idx {
		sub[j] = reqs[i]
	}
	f.limit(ctx, sub)
	bs, es, err := ms.ClaimMany(ctx, sub)
	if err != nil {
		return err
	}
	var still []int
	for j, i := range idx {
		reqs[i].Want.Through, reqs[i].Want.Settled = sub[j].Want.Through, sub[j].Want.Settled
		batches[i], cerrs[i] = bs[j], es[j]
		if es[j] == nil && bs[j].Blocked && len(bs[j].Beyond) > 0 {
			still = append(still, i)
		}
	}
	idx = still
	if len(idx) == 0 {
		return nil
	}
	limits := make([]*buffer.Pos, len(idx))
	var wg sync.WaitGroup
	for j, i := range idx {
		wg.Go(func() { limits[j] = f.further(ctx, reqs[i].Conv, reqs[i].Want.Through, batches[i]) })
	}
	wg.Wait()
	var again []buffer.ClaimReq
	var at []int
	for j, i := range idx {
		if limits[j] != nil {
			q := reqs[i]
			q.Want.Through = limits[j]
			again = append(again, q)
			at = append(at, i)
		}
	}
	if len(again) == 0 {
		return nil
	}
	bs, es, err = ms.ClaimMany(ctx, again)
	if err != nil {
		return err
	}
	for j, i := range at {
		batches[i], cerrs[i] = bs[j], es[j]
	}
	return nil
}

// limit sets each request's Through, with the Pending lookups of all
// conversations at once.
func (f *Flusher) limit(ctx context.Context, reqs []buffer.ClaimReq) {
	if f.cfg.Pending == nil {
		return
	}
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Go(func() { reqs[i].Want.Through, reqs[i].Want.Settled = f.through(ctx, reqs[i].Conv) })
	}
	wg.Wait()
}

// flushEach is FlushMany without the bulk interfaces.
func (f *Flusher) flushEach(ctx context.Context, convs []chat.Conversation, reason chat.Trigger) (Result, []chat.Conversation, error) {
	var res Result
	var busy []chat.Conversation
	var errs []error
	for _, c := range convs {
		r, err := f.Flush(ctx, c, reason)
		res.BatchIDs = append(res.BatchIDs, r.BatchIDs...)
		res.Rejected = append(res.Rejected, r.Rejected...)
		switch {
		case errors.Is(err, ErrBackoff):
		case errors.Is(err, locking.ErrBusy):
			busy = append(busy, c)
		case err != nil:
			errs = append(errs, err)
		}
	}
	return res, busy, errors.Join(errs...)
}

// out builds the batch for a claim.
func (f *Flusher) out(c chat.Conversation, b buffer.Batch) (Envelope, error) {
	records := make([]chat.Record, len(b.Records))
	for i, raw := range b.Records {
		var err error
		if records[i], err = chat.ParseRecord(raw); err != nil {
			return Envelope{}, fmt.Errorf("flush: %s: %w", c, err)
		}
	}
	return Envelope{
		Conv:     c,
		ID:       chat.BatchID(c, b.Token),
		Token:    b.Token,
		Reason:   b.Reason,
		Data:     chat.EncodeBatch(c, b.Token, b.Reason, b.Created, records),
		PrevPos:  b.PrevPos,
		Created:  b.Created,
		Records:  records,
		messages: len(records),
	}, nil
}

// retoken rebuilds the batch under a new token.
func (o *Envelope) retoken(token int64) {
	o.Token = token
	o.ID = chat.BatchID(o.Conv, token)
	o.Data = chat.EncodeBatch(o.Conv, token, o.Reason, o.Created, o.Records)
}
