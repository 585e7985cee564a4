package stream

import (
	"context"
	"errors"
	"fmt"
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
// direct get where the stream allows it (CHAT_IN does, see Streams). It
// works on every server chatbuf supports.
type Pending struct {
	js  jetstream.JetStream
	cfg Config

	mu    sync.Mutex
	s     jetstream.Stream
	epoch int64
	at    time.Time
}

// NewPending returns a Pending on CHAT_IN.
func NewPending(js jetstream.JetStream, cfg Config) *Pending {
	return &Pending{js: js, cfg: cfg.WithDefaults()}
}

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
	return p.s, p.epoch, nil
}

// FirstPending implements flush.Pending.
func (p *Pending) FirstPending(ctx context.Context, c chat.Conversation, from uint64) (uint64, int64, error) {
	s, epoch, err := p.stream(ctx)
	if err != nil {
		return 0, 0, err
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
