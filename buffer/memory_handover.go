package buffer

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/opencontext/chatbuf/chat"
)

// ErrInFlight: Take found a claimed batch; flush it first.
var ErrInFlight = errors.New("buffer: a batch is in flight")

// Pending returns up to limit conversations holding buffered or in-flight
// messages, oldest first.
func (m *Memory) Pending(ctx context.Context, limit int) ([]chat.Conversation, error) {
	return m.Due(ctx, time.UnixMilli(math.MaxInt64), limit)
}

// Take removes and returns the buffered messages of c, in order, to be
// appended to another store; their dedupe keys stay remembered here. It
// returns ErrInFlight while c has a claimed batch.
func (m *Memory) Take(ctx context.Context, c chat.Conversation) ([]Item, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.unlock()
	s, ok := m.convs[c]
	if !ok {
		return nil, nil
	}
	if len(s.inflight) > 0 {
		return nil, ErrInFlight
	}
	items := make([]Item, len(s.buffer))
	for i := range s.buffer {
		items[i] = Item{Conv: c, Key: s.keys[i], Record: s.buffer[i]}
	}
	s.buffer, s.keys = nil, nil
	m.removeDue(s)
	m.forget(s)
	return items, nil
}

// Release reports c's keys as released (OnRelease), for messages that Take
// handed over once they are durable elsewhere.
func (m *Memory) Release(c chat.Conversation, keys []string) {
	if m.mcfg.OnRelease != nil && len(keys) > 0 {
		m.mcfg.OnRelease(c, keys)
	}
}

// Restore puts items taken by Take back at the head of c's buffer, after a
// failed hand-over.
func (m *Memory) Restore(c chat.Conversation, items []Item) {
	m.mu <- struct{}{}
	defer m.unlock()
	s := m.conv(c)
	recs := make([][]byte, 0, len(items)+len(s.buffer))
	keys := make([]string, 0, len(items)+len(s.buffer))
	for _, it := range items {
		recs = append(recs, it.Record)
		keys = append(keys, it.Key)
	}
	s.buffer = append(recs, s.buffer...)
	s.keys = append(keys, s.keys...)
	m.fixDue(s)
}

// Unclaim puts c's in-flight batch back at the head of its buffer, for a
// batch the sink refused as stale: it was not published.
func (m *Memory) Unclaim(c chat.Conversation) {
	m.mu <- struct{}{}
	defer m.unlock()
	s, ok := m.convs[c]
	if !ok || len(s.inflight) == 0 {
		return
	}
	s.buffer = append(s.inflight, s.buffer...)
	s.keys = append(s.inKeys, s.keys...)
	s.inflight, s.inKeys, s.batch, s.reason, s.created, s.refused = nil, nil, 0, "", 0, 0
	m.fixDue(s)
}
