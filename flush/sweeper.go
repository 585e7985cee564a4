package flush

import (
	"context"
	"errors"
	"time"

	"github.com/opencontext/chatbuf/chat"
)

// DefaultSweepInterval is how often a worker sweeps (Sweeper.Sweep) by
// default.
const DefaultSweepInterval = time.Second

// Sweeper flushes buffers whose oldest message is older than MaxAge, so that
// no message waits for a full buffer forever. Its caller runs a pass
// (Sweep) every sweep interval: the worker's loop.
type Sweeper struct {
	f     *Flusher
	limit int
}

// NewSweeper returns a Sweeper that flushes up to limit conversations per
// pass (1000 when zero).
func NewSweeper(f *Flusher, limit int) *Sweeper {
	if limit <= 0 {
		limit = 1000
	}
	return &Sweeper{f: f, limit: limit}
}

// sweepGroup is how many conversations one FlushMany of a sweep takes, and
// maxSweepPages how many pages of due conversations one sweep takes.
const (
	sweepGroup    = 64
	maxSweepPages = 16
)

// Sweep runs one pass: it flushes (reason age) each conversation that the
// due index lists as older than MaxAge, and, with Config.Idle, (reason
// idle) each one without an append for Idle, skipping those another
// flusher holds, and tries again the refused batches of this flusher whose
// backoff has passed (an in-flight batch is listed in the due index too,
// but a batch claimed by size is young). It returns how many batches it
// published.
func (s *Sweeper) Sweep(ctx context.Context) (int, error) {
	n, err := s.sweep(ctx, chat.TriggerAge, func() ([]chat.Conversation, error) {
		return s.f.store.Due(ctx, s.f.cfg.Now().Add(-s.f.cfg.MaxAge), s.limit)
	})
	if s.f.cfg.Idle <= 0 || ctx.Err() != nil {
		return n, err
	}
	m, ierr := s.sweep(ctx, chat.TriggerIdle, func() ([]chat.Conversation, error) {
		return s.f.store.Idle(ctx, s.f.cfg.Now().Add(-s.f.cfg.Idle), s.limit)
	})
	return n + m, errors.Join(err, ierr)
}

func (s *Sweeper) sweep(ctx context.Context, reason chat.Trigger, list func() ([]chat.Conversation, error)) (int, error) {
	var n int
	var errs []error
	if retry := s.f.refused.due(s.f.cfg.Now(), s.limit); reason == chat.TriggerAge && len(retry) > 0 {
		for len(retry) > 0 && ctx.Err() == nil {
			group := retry[:min(len(retry), sweepGroup)]
			retry = retry[len(group):]
			res, _, err := s.f.FlushMany(ctx, group, chat.TriggerAge)
			n += len(res.BatchIDs)
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	// A full page means more may be due: take further pages, up to
	// maxSweepPages, so that a large backlog of old buffers drains at more
	// than one page per interval.
	for page := 0; page < maxSweepPages && ctx.Err() == nil; page++ {
		due, err := list()
		if err != nil {
			return n, errors.Join(append(errs, err)...)
		}
		full := len(due) == s.limit
		before := n
		for len(due) > 0 && ctx.Err() == nil {
			group := due[:min(len(due), sweepGroup)]
			due = due[len(group):]
			res, _, err := s.f.FlushMany(ctx, group, reason)
			n += len(res.BatchIDs)
			if err != nil {
				errs = append(errs, err)
			}
		}
		if !full || n == before {
			break // all due ones seen, or none of this page could be flushed
		}
	}
	return n, errors.Join(errs...)
}
