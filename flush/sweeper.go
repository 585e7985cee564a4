package flush

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/opencontext/chatbuf/chat"
)

// DefaultSweepInterval is how often a Sweeper looks for old buffers.
const DefaultSweepInterval = time.Second

// Sweeper flushes buffers whose oldest message is older than MaxAge, so that
// no message waits for a full buffer forever.
type Sweeper struct {
	f        *Flusher
	interval time.Duration
	limit    int
}

// NewSweeper returns a Sweeper that checks the due index every interval
// (DefaultSweepInterval when zero) and flushes up to limit conversations per
// pass (1000 when zero).
func NewSweeper(f *Flusher, interval time.Duration, limit int) *Sweeper {
	if interval <= 0 {
		interval = DefaultSweepInterval
	}
	if limit <= 0 {
		limit = 1000
	}
	return &Sweeper{f: f, interval: interval, limit: limit}
}

// Run sweeps every interval until ctx is done; it returns nil then.
func (s *Sweeper) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.f.cfg.Logger.Warn("flush: sweep failed", slog.Any("error", err))
			}
		}
	}
}

// sweepGroup is how many conversations one FlushMany of a sweep takes.
const sweepGroup = 64

// Sweep runs one pass: it flushes (reason age) each conversation that the
// due index lists as older than MaxAge, skipping those another flusher
// holds. It returns how many batches it published.
func (s *Sweeper) Sweep(ctx context.Context) (int, error) {
	due, err := s.f.store.Due(ctx, s.f.cfg.Now().Add(-s.f.cfg.MaxAge), s.limit)
	if err != nil {
		return 0, err
	}
	var n int
	var errs []error
	for len(due) > 0 && ctx.Err() == nil {
		group := due[:min(len(due), sweepGroup)]
		due = due[len(group):]
		res, _, err := s.f.FlushMany(ctx, group, chat.TriggerAge)
		n += len(res.BatchIDs)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}
