package worker

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/opencontext/chatbuf/buffer"
)

// refusalLogEvery is how often a lasting store refusal is logged again.
const refusalLogEvery = 10 * time.Second

// refusal tracks whether the store refuses appends as a whole (full,
// read-only, missing permissions, unreachable without fallback). While it
// does, the worker pulls no new messages and reports not ready; the lanes
// keep retrying what they hold, and the first append that goes through ends
// the refusal.
type refusal struct {
	mu      sync.Mutex
	err     error     // the latest refusal; nil while the store takes writes
	kind    string    // buffer.RefusalKind(err)
	since   time.Time // when the refusal began
	count   int       // refused appends since the last log line
	total   int       // refused appends since the refusal began
	logged  time.Time
	started chan struct{} // closed when a refusal begins
	ended   chan struct{} // closed when it ends
	log     *slog.Logger
	hooks   Hooks
}

func newRefusal(log *slog.Logger, hooks Hooks) *refusal {
	ended := make(chan struct{})
	close(ended)
	return &refusal{started: make(chan struct{}), ended: ended, log: log, hooks: hooks}
}

// fail records a store-wide refusal of an append of n messages.
func (r *refusal) fail(err error, n int) {
	kind := buffer.RefusalKind(err)
	if r.hooks.StoreRefused != nil {
		r.hooks.StoreRefused(kind)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	r.count++
	r.total++
	r.kind = kind
	if r.err == nil {
		r.err, r.since, r.logged = err, now, now
		close(r.started)
		r.ended = make(chan struct{})
		if r.hooks.StoreRefusing != nil {
			r.hooks.StoreRefusing(true)
		}
		r.log.Warn("worker: the store refuses writes; not pulling new messages until it takes them again",
			slog.String("kind", kind), slog.Int("messages", n), slog.Any("error", err))
		r.count = 0
		return
	}
	r.err = err
	if now.Sub(r.logged) >= refusalLogEvery {
		r.log.Warn("worker: the store still refuses writes",
			slog.String("kind", kind), slog.Int("refused_appends", r.count),
			slog.Duration("for", now.Sub(r.since).Round(time.Second)), slog.Any("error", err))
		r.logged, r.count = now, 0
	}
}

// ok records an append that went through; it ends a refusal.
func (r *refusal) ok() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		return
	}
	r.log.Info("worker: the store takes writes again; pulling",
		slog.String("kind", r.kind), slog.Int("refused_appends", r.total),
		slog.Duration("for", time.Since(r.since).Round(time.Millisecond)))
	r.err, r.count, r.total = nil, 0, 0
	close(r.ended)
	r.started = make(chan struct{})
	if r.hooks.StoreRefusing != nil {
		r.hooks.StoreRefusing(false)
	}
}

// state reports whether a refusal is under way, and returns a channel
// closed when a refusal begins (closed already during one) and one closed
// when it ends (closed already when there is none).
func (r *refusal) state() (refusing bool, started, ended <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err != nil, r.started, r.ended
}

// reason is the refusal as a readiness reason, nil when there is none.
func (r *refusal) reason() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		return nil
	}
	if r.kind == "unreachable" {
		return fmt.Errorf("redis unreachable since %s: %w", r.since.UTC().Format(time.RFC3339), r.err)
	}
	return fmt.Errorf("redis refuses writes (%s) since %s: %w", r.kind, r.since.UTC().Format(time.RFC3339), r.err)
}
