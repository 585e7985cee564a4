package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
)

// pendingRefresh is how often Pending reads CHAT_IN's info again, so that a
// CHAT_IN created again is noticed even by a process that did not create it.
const pendingRefresh = 5 * time.Second

// Pending answers which of a conversation's messages are still stored in
// CHAT_IN (flush.Pending): one "get message, next by subject" lookup, a
// direct get where the stream allows it (CHAT_IN does, see Streams).
//
// On nats-server before 2.10.25 the file store's per-subject index can
// hide a stored message from that lookup (after a subject's last message
// is removed while two or more remain). There Pending answers with the
// first CHAT_IN sequence that may not be acked yet, whatever its subject:
// coarser, never wrong (see firstUnacked).
type Pending struct {
	js  jetstream.JetStream
	cfg Config

	mu      sync.Mutex
	s       jetstream.Stream
	epoch   int64
	at      time.Time
	careful bool // the connected server's lookups can hide a message

	seenEpoch int64
	seen      uint64

	unackedMu sync.Mutex
	unacked   unacked

	log *slog.Logger
}

// unacked is what firstUnacked read last, for one epoch of CHAT_IN.
type unacked struct {
	epoch   int64
	readAt  time.Time // when the last read began
	first   uint64    // CHAT_IN's first stored sequence
	movedAt time.Time // when first last moved
	floor   uint64    // the worker consumer's ack floor
	floorAt time.Time // when floor was last read
	below   uint64    // a first stored sequence found at or below the floor
	warned  uint64    // the last such sequence logged
}

// floorAfter is how long CHAT_IN's first stored sequence may stand still
// before firstUnacked reads the consumer's ack floor too (at most once per
// floorAfter while it stands).
const floorAfter = 250 * time.Millisecond

// NewPending returns a Pending on CHAT_IN.
func NewPending(js jetstream.JetStream, cfg Config) *Pending {
	return &Pending{js: js, cfg: cfg.WithDefaults()}
}

// SetLogger sets where Pending warns of a message CHAT_IN keeps though its
// consumer counts it acked (see firstUnacked). Call it before use.
func (p *Pending) SetLogger(log *slog.Logger) { p.log = log }

// Epoch returns CHAT_IN's creation time in unix ms, reading the stream's
// info when it is older than a few seconds.
func (p *Pending) Epoch(ctx context.Context) (int64, error) {
	_, epoch, err := p.stream(ctx)
	return epoch, err
}

// Refresh makes the next call read the stream's info again, for after the
// stream was set up again.
func (p *Pending) Refresh() {
	p.mu.Lock()
	p.at = time.Time{}
	p.mu.Unlock()
}

// Saw records that CHAT_IN of epoch stores (or stored) the message at seq:
// the worker calls it for each message delivered, before appending it.
func (p *Pending) Saw(epoch int64, seq uint64) {
	p.mu.Lock()
	if epoch > p.seenEpoch {
		p.seenEpoch, p.seen = epoch, 0
	}
	if epoch == p.seenEpoch && seq > p.seen {
		p.seen = seq
	}
	p.mu.Unlock()
}

// Seen implements flush.Pending: the highest sequence passed to Saw, with
// its epoch.
func (p *Pending) Seen() (int64, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seenEpoch, p.seen
}

// stream returns CHAT_IN and its epoch, read again every pendingRefresh.
// When that read fails, the last answer stands (a stream created again
// is noticed at the next read that works); with none, it fails.
func (p *Pending) stream(ctx context.Context) (jetstream.Stream, int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.s != nil && time.Since(p.at) < pendingRefresh {
		return p.s, p.epoch, nil
	}
	s, err := p.js.Stream(ctx, p.cfg.InStream)
	if err != nil {
		if p.s != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return p.s, p.epoch, nil
		}
		return nil, 0, fmt.Errorf("stream: info of %s: %w", p.cfg.InStream, err)
	}
	p.s, p.epoch, p.at = s, s.CachedInfo().Created.UnixMilli(), time.Now()
	p.careful = HidesMessages(p.js.Conn().ConnectedServerVersion())
	return p.s, p.epoch, nil
}

// FirstPending implements flush.Pending.
func (p *Pending) FirstPending(ctx context.Context, c chat.Conversation, from uint64) (uint64, int64, error) {
	s, epoch, err := p.stream(ctx)
	if err != nil {
		return 0, 0, err
	}
	p.mu.Lock()
	careful := p.careful
	p.mu.Unlock()
	if careful {
		first, epoch, err := p.firstUnacked(ctx, s)
		if err != nil {
			return 0, 0, fmt.Errorf("stream: first pending message of %s: %w", c, err)
		}
		return max(from, first), epoch, nil
	}
	msg, err := s.GetMsg(ctx, max(from, 1), jetstream.WithGetMsgSubject(p.cfg.In(c)))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, epoch, nil
	case err != nil:
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			p.Refresh()
		}
		return 0, 0, fmt.Errorf("stream: first pending message of %s: %w", c, err)
	}
	return msg.Sequence, epoch, nil
}

// firstUnacked returns the first CHAT_IN sequence that may not be acked
// yet, and CHAT_IN's epoch, as of the call: read by this call, or by a read
// that began after it (concurrent callers share one read).
//
// CHAT_IN is a work queue: a message leaves it when acked, so its first
// stored sequence is the answer, read from the stream's info, which these
// servers keep as counters. But after a kill -9, nats-server 2.9 can keep a
// message stored that the consumer counts as acked and never delivers
// again, and the first stored sequence then stands still below messages
// long acked. So when it has not moved for floorAfter, the consumer's ack
// floor is read too (every message at or below it is acked) and the higher
// answer stands. The consumer's info is not read on every call: those
// servers count its pending messages subject by subject for each request,
// which cost nats-server more than the rest of a drain. When that read
// fails, the first stored sequence answers alone: coarser, never wrong.
func (p *Pending) firstUnacked(ctx context.Context, s jetstream.Stream) (uint64, int64, error) {
	called := time.Now()
	p.unackedMu.Lock()
	defer p.unackedMu.Unlock()
	u := &p.unacked
	if !u.readAt.Before(called) {
		return max(u.first, u.floor+1), u.epoch, nil
	}
	began := time.Now()
	info, err := s.Info(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			p.Refresh()
		}
		return 0, 0, fmt.Errorf("first stored message of %s: %w", p.cfg.InStream, err)
	}
	if epoch := info.Created.UnixMilli(); epoch != u.epoch {
		if u.epoch != 0 {
			p.Refresh() // created again: the lookups read it afresh
		}
		*u = unacked{epoch: epoch, movedAt: began}
	}
	if first := info.State.FirstSeq; first > u.first {
		u.first, u.movedAt = first, began
	}
	if began.Sub(u.movedAt) >= floorAfter && began.Sub(u.floorAt) >= floorAfter {
		u.floorAt = began // also after a failed read: at most one a floorAfter
		if cons, err := s.Consumer(ctx, p.cfg.Consumer); err == nil {
			// A consumer created again starts from 0, but what the old
			// one acked is gone from the work queue: the floor only rises.
			u.floor = max(u.floor, cons.CachedInfo().AckFloor.Stream)
			p.warnBelowFloor(u)
		}
	}
	u.readAt = began
	return max(u.first, u.floor+1), u.epoch, nil
}

// warnBelowFloor logs, once per sequence, a first stored message at or
// below the ack floor at two floor reads in a row (at one, it may have been
// acked between the stream's read and the consumer's).
func (p *Pending) warnBelowFloor(u *unacked) {
	if u.first > u.floor {
		u.below = 0
		return
	}
	if u.below == u.first && u.warned != u.first && p.log != nil {
		u.warned = u.first
		p.log.Warn("stream: CHAT_IN keeps a message its consumer counts as acked; the server will not deliver it again, and batches now wait up to 250 ms for each ack floor read until it is removed (nats stream rmm)",
			slog.String("stream", p.cfg.InStream), slog.Uint64("seq", u.first), slog.Uint64("ack_floor", u.floor))
	}
	u.below = u.first
}

// HidesMessages reports whether a nats-server of this version can hide a
// stored message from a "next message on this subject" lookup: its file
// store's per-subject index can keep a removed sequence as a subject's
// first (fixed in 2.10.25). An unknown version counts as current.
func HidesMessages(version string) bool {
	v := strings.TrimPrefix(version, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	parts := strings.Split(v, ".")
	if len(parts) < 3 {
		return false
	}
	var n [3]int
	for i := range n {
		x, err := strconv.Atoi(parts[i])
		if err != nil {
			return false
		}
		n[i] = x
	}
	switch {
	case n[0] != 2:
		return n[0] < 2
	case n[1] != 10:
		return n[1] < 10
	default:
		return n[2] < 25
	}
}
