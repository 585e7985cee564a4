// Package fallback keeps a worker accepting messages while Redis is
// unreachable. Buffers switches from the shared store (Redis) to a local
// in-memory store when an append fails for want of Redis, keeps the messages
// it buffers locally unacked ("held") until they are published in a batch or
// moved into Redis, probes Redis with backoff, and when Redis answers again
// moves the local buffers into it, in order and deduplicated, before
// switching back.
package fallback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/flush"
	"github.com/opencontext/chatbuf/locking"
)

// Mode is where appends go.
type Mode string

const (
	Shared Mode = "shared" // Redis
	Local  Mode = "local"  // process memory, while Redis is unreachable
)

// Config tunes Buffers. Zero values mean the defaults.
type Config struct {
	ProbeMin time.Duration // first probe delay after a switch to local (100ms)
	ProbeMax time.Duration // longest probe delay (5s)
	Logger   *slog.Logger
	OnMode   func(Mode) // called after each switch
}

// Side is one store with the locker and flusher that work on it.
type Side struct {
	Store   buffer.Store
	Locker  locking.Locker
	Flusher *flush.Flusher
	Sweeper *flush.Sweeper
}

// Buffers routes appends and flushes to the shared or the local side.
type Buffers struct {
	shared Side
	local  Side
	mem    *buffer.Memory
	ping   func(context.Context) error
	cfg    Config

	// Appends hold mu for reading; the last migration round holds it for
	// writing, so no append lands locally after the switch back.
	mu      sync.RWMutex
	isLocal atomic.Bool
	wake    chan struct{}

	// doubt holds conversations whose append or move into Redis failed, or
	// that received a redelivered message while local: Redis may hold those
	// messages (applied before the connection broke, without the replicas
	// WAIT asked for, or by an earlier delivery elsewhere), so their local messages are not flushed
	// locally (that could publish a message Redis also holds) but only moved
	// into Redis, which deduplicates.
	doubt  sync.Map     // chat.Conversation -> struct{}
	doubts atomic.Int64 // entries in doubt
}

// New returns Buffers in shared mode. local.Store must be mem, created with
// buffer.MemoryConfig{Hold: true, OnRelease: ...} so that the worker acks
// locally buffered messages only once they are released. ping tells whether
// Redis answers.
func New(shared, local Side, mem *buffer.Memory, ping func(context.Context) error, cfg Config) *Buffers {
	if cfg.ProbeMin <= 0 {
		cfg.ProbeMin = 100 * time.Millisecond
	}
	if cfg.ProbeMax <= 0 {
		cfg.ProbeMax = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Buffers{shared: shared, local: local, mem: mem, ping: ping, cfg: cfg, wake: make(chan struct{}, 1)}
}

// Mode returns the current mode.
func (b *Buffers) Mode() Mode {
	if b.isLocal.Load() {
		return Local
	}
	return Shared
}

// AppendBatch appends to Redis, or to the local store when Redis cannot be
// reached (then the results are Held). A Redis that answers and refuses
// (buffer.Unreachable false) is not fallen back from: its error is
// returned, for the caller to retry.
func (b *Buffers) AppendBatch(ctx context.Context, items []buffer.Item) ([]buffer.Appended, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if !b.isLocal.Load() {
		res, err := b.shared.Store.AppendBatch(ctx, items)
		if err == nil {
			if b.doubts.Load() > 0 {
				// A retry went through: its conversations leave doubt.
				for _, it := range items {
					b.trust(it.Conv)
				}
			}
			return res, nil
		}
		// Redis may have applied some of it. Should these messages come
		// back here after a switch to local (the caller retries), they
		// only move.
		for _, it := range items {
			b.distrust(it.Conv)
		}
		if ctx.Err() != nil || !buffer.Unreachable(err) {
			// Redis answers and refuses (full, read-only, missing
			// permissions, not replicated yet): the caller retries until
			// it takes writes again. Local memory would only diverge from
			// a Redis that is there.
			return res, err
		}
		b.degrade(err)
	}
	for _, it := range items {
		if it.Redelivered {
			// An earlier delivery, here or on another worker, may have
			// reached Redis: this conversation only moves.
			b.distrust(it.Conv)
		}
	}
	return b.local.Store.AppendBatch(ctx, items)
}

func (b *Buffers) degrade(cause error) {
	if b.isLocal.Swap(true) {
		return
	}
	b.cfg.Logger.Warn("fallback: Redis unreachable; buffering in local memory, holding acks until batches are published or moved back into Redis",
		"error", cause)
	if b.cfg.OnMode != nil {
		b.cfg.OnMode(Local)
	}
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *Buffers) distrust(c chat.Conversation) {
	if _, had := b.doubt.LoadOrStore(c, struct{}{}); !had {
		b.doubts.Add(1)
	}
}

func (b *Buffers) trust(c chat.Conversation) {
	if _, had := b.doubt.LoadAndDelete(c); had {
		b.doubts.Add(-1)
	}
}

func (b *Buffers) inDoubt(c chat.Conversation) bool {
	_, ok := b.doubt.Load(c)
	return ok
}

// Flush flushes c on the side appends currently go to. A conversation in
// doubt is not flushed locally (nothing happens until Redis is back).
func (b *Buffers) Flush(ctx context.Context, c chat.Conversation, reason chat.Trigger) (flush.Result, error) {
	if b.isLocal.Load() {
		if b.inDoubt(c) {
			return flush.Result{}, nil
		}
		return b.local.Flusher.Flush(ctx, c, reason)
	}
	return b.shared.Flusher.Flush(ctx, c, reason)
}

// FlushMany flushes many conversations on the side appends currently go to,
// skipping those in doubt locally.
func (b *Buffers) FlushMany(ctx context.Context, cs []chat.Conversation, reason chat.Trigger) (flush.Result, []chat.Conversation, error) {
	if b.isLocal.Load() {
		sure := slices.DeleteFunc(slices.Clone(cs), b.inDoubt)
		return b.local.Flusher.FlushMany(ctx, sure, reason)
	}
	return b.shared.Flusher.FlushMany(ctx, cs, reason)
}

// Sweep runs one age sweep on the current side.
func (b *Buffers) Sweep(ctx context.Context) (int, error) {
	if !b.isLocal.Load() {
		return b.shared.Sweeper.Sweep(ctx)
	}
	cfg := b.local.Flusher.Config()
	due, err := b.mem.Due(ctx, cfg.Now().Add(-cfg.MaxAge), 1000)
	if err != nil {
		return 0, err
	}
	due = slices.DeleteFunc(due, b.inDoubt)
	res, _, err := b.local.Flusher.FlushMany(ctx, due, chat.TriggerAge)
	return len(res.BatchIDs), err
}

// Oldest reports the oldest pending message of the current side.
func (b *Buffers) Oldest(ctx context.Context) (time.Time, bool, error) {
	if b.isLocal.Load() {
		return b.local.Store.Oldest(ctx)
	}
	return b.shared.Store.Oldest(ctx)
}

// Run probes Redis while in local mode and moves the local buffers back once
// it answers, until ctx is done.
func (b *Buffers) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-b.wake:
		}
		delay := b.cfg.ProbeMin
		for b.isLocal.Load() {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
			delay = min(2*delay, b.cfg.ProbeMax)
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			err := b.ping(pctx)
			cancel()
			if err != nil {
				b.cfg.Logger.Debug("fallback: Redis still unreachable", "error", err, "next_probe", delay)
				continue
			}
			if err := b.recover(ctx); err != nil {
				b.cfg.Logger.Warn("fallback: moving local buffers back into Redis failed; will retry", "error", err, "next_probe", delay)
			}
		}
	}
}

// errPending: some conversations could not be moved yet (a local flush holds
// them).
var errPending = errors.New("fallback: local buffers still pending")

// recover moves the local buffers into Redis and switches back to shared
// mode. Rounds run while appends continue locally; the last one holds the
// append lock, so nothing can land locally after it.
func (b *Buffers) recover(ctx context.Context) error {
	for range 3 {
		if _, err := b.moveAll(ctx); err != nil && !errors.Is(err, errPending) {
			return err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	moved, err := b.moveAll(ctx)
	if err != nil {
		return err
	}
	b.isLocal.Store(false)
	b.doubt.Clear()
	b.doubts.Store(0)
	b.cfg.Logger.Info("fallback: Redis is back; local buffers moved into it; shared mode", "messages_moved_last_round", moved)
	if b.cfg.OnMode != nil {
		b.cfg.OnMode(Shared)
	}
	return nil
}

// moveAll moves every local conversation it can into Redis. It returns how
// many messages it moved, and errPending if some remain.
func (b *Buffers) moveAll(ctx context.Context) (int, error) {
	convs, err := b.mem.Pending(ctx, 1<<30)
	if err != nil {
		return 0, err
	}
	moved, pending := 0, 0
	for _, c := range convs {
		n, err := b.move(ctx, c)
		moved += n
		switch {
		case errors.Is(err, locking.ErrBusy):
			pending++
		case err != nil:
			return moved, err
		}
	}
	if pending > 0 {
		return moved, fmt.Errorf("%w: %d conversations", errPending, pending)
	}
	return moved, nil
}

// move moves one conversation, holding its local flush lock so no local
// flush claims what is being moved. A claimed batch is first published
// (under its id, so a copy that reached the stream is not repeated); one the
// stream refuses as stale was not published and is moved with the rest.
func (b *Buffers) move(ctx context.Context, c chat.Conversation) (int, error) {
	// A conversation in doubt publishes nothing new from here, only the
	// batch it claimed before it came into doubt (its messages are this
	// worker's alone); the rest goes to Redis.
	var err error
	if b.inDoubt(c) {
		_, err = b.local.Flusher.PublishInFlight(ctx, c)
	} else {
		_, err = b.local.Flusher.Flush(ctx, c, chat.TriggerSize)
	}
	if errors.Is(err, flush.ErrStale) {
		b.mem.Unclaim(c)
	} else if err != nil {
		return 0, fmt.Errorf("fallback: publish local batch of %s: %w", c, err)
	}
	n, refused, err := b.take(ctx, c)
	if refused != nil {
		b.trust(c) // Redis holds none of it: it refuses the conversation
		// Redis refuses this conversation (a key of the wrong type, say):
		// publish its messages from here rather than hold them forever.
		b.cfg.Logger.Warn("fallback: Redis refuses a conversation; flushing it from local memory", "user", c.User,
			"device", c.Device, "agent", c.Agent, "error", refused)
		if _, err := b.local.Flusher.Flush(ctx, c, chat.TriggerManual); err != nil {
			return 0, fmt.Errorf("fallback: flush refused conversation %s: %w", c, err)
		}
		return n, nil
	}
	return n, err
}

func (b *Buffers) take(ctx context.Context, c chat.Conversation) (moved int, refused, err error) {
	lock, err := b.local.Locker.TryLock(ctx, c)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = lock.Unlock(context.WithoutCancel(ctx)) }()
	items, err := b.mem.Take(ctx, c)
	if errors.Is(err, buffer.ErrInFlight) {
		return 0, nil, locking.ErrBusy // claimed since the flush: next round
	}
	if err != nil || len(items) == 0 {
		return 0, nil, err
	}
	res, err := b.shared.Store.AppendBatch(ctx, items)
	if err != nil {
		// Redis may hold them now (ErrNotReplicated says it does; a broken
		// connection leaves it open), so from here on they only move.
		b.distrust(c)
		b.mem.Restore(c, items)
		return 0, nil, fmt.Errorf("fallback: move %s into Redis: %w", c, err)
	}
	if res[0].Err != nil {
		b.mem.Restore(c, items)
		return 0, res[0].Err, nil
	}
	keys := make([]string, len(items))
	for i, it := range items {
		keys[i] = it.Key
	}
	b.mem.Release(c, keys)
	return len(items), nil, nil
}
