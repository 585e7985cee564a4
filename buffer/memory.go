package buffer

import (
	"container/heap"
	"context"
	"fmt"
	"time"

	"github.com/opencontext/chatbuf/chat"
)

// Memory is a Store in process memory with the same semantics as Redis, for
// a single instance or while Redis is unreachable. Buffers have no TTL here:
// they live until flushed or until the process ends.
type Memory struct {
	cfg Config

	mu    chan struct{} // a mutex that honours ctx
	convs map[chat.Conversation]*memConv
	due   dueHeap
}

var _ Store = (*Memory)(nil)

type memConv struct {
	c        chat.Conversation
	buffer   [][]byte
	inflight [][]byte
	fence    int64
	ctr      int64
	batch    int64
	reason   chat.Trigger
	created  int64
	pos      uint64
	seen     map[string]int64 // dedupe key -> first seen, ms
	seenLog  []seenEntry      // dedupe keys in the order seen, for expiry
	dueIdx   int              // index in the due heap, -1 when absent
	dueScore int64
}

type seenEntry struct {
	key string
	at  int64
}

// NewMemory returns an empty in-memory Store.
func NewMemory(cfg Config) *Memory {
	m := &Memory{cfg: cfg.withDefaults(), mu: make(chan struct{}, 1), convs: map[chat.Conversation]*memConv{}}
	return m
}

func (m *Memory) lock(ctx context.Context) error {
	select {
	case m.mu <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("buffer: %w", ctx.Err())
	}
}

func (m *Memory) unlock() { <-m.mu }

func (m *Memory) conv(c chat.Conversation) *memConv {
	s, ok := m.convs[c]
	if !ok {
		s = &memConv{c: c, seen: map[string]int64{}, dueIdx: -1}
		m.convs[c] = s
	}
	return s
}

// forget drops a conversation's state when nothing of it needs keeping.
func (m *Memory) forget(s *memConv) {
	if len(s.buffer) == 0 && len(s.inflight) == 0 && len(s.seen) == 0 && s.dueIdx < 0 {
		delete(m.convs, s.c)
	}
}

// Append implements Store.
func (m *Memory) Append(ctx context.Context, it Item) (Appended, error) {
	res, err := m.AppendBatch(ctx, []Item{it})
	if err != nil {
		return Appended{}, err
	}
	return res[0], res[0].Err
}

// AppendBatch implements Store.
func (m *Memory) AppendBatch(ctx context.Context, items []Item) ([]Appended, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.unlock()
	now := m.cfg.Now().UnixMilli()
	horizon := now - m.cfg.DedupeWindow.Milliseconds()
	out := make([]Appended, len(items))
	for i, it := range items {
		rec, err := chat.ParseRecord(it.Record)
		if err != nil {
			out[i].Err = fmt.Errorf("buffer: append to %s: %w", it.Conv, err)
			continue
		}
		s := m.conv(it.Conv)
		s.expireSeen(horizon)
		if _, dup := s.seen[it.Key]; dup {
			out[i] = Appended{Dup: true, Len: int64(len(s.buffer))}
			continue
		}
		s.seen[it.Key] = now
		s.seenLog = append(s.seenLog, seenEntry{it.Key, now})
		s.buffer = append(s.buffer, it.Record)
		if s.dueIdx < 0 {
			s.dueScore = rec.ReceivedMS
			heap.Push(&m.due, s)
		}
		out[i] = Appended{Len: int64(len(s.buffer))}
	}
	return out, nil
}

func (s *memConv) expireSeen(horizon int64) {
	n := 0
	for n < len(s.seenLog) && s.seenLog[n].at < horizon {
		if s.seen[s.seenLog[n].key] == s.seenLog[n].at {
			delete(s.seen, s.seenLog[n].key)
		}
		n++
	}
	if n > 0 {
		s.seenLog = append(s.seenLog[:0:0], s.seenLog[n:]...)
	}
}

// Claim implements Store.
func (m *Memory) Claim(ctx context.Context, c chat.Conversation, fence int64, w Want) (Batch, error) {
	if w.Max <= 0 {
		return Batch{}, fmt.Errorf("buffer: claim: max %d, want > 0", w.Max)
	}
	if err := m.lock(ctx); err != nil {
		return Batch{}, err
	}
	defer m.unlock()
	s := m.conv(c)
	defer m.forget(s)
	if fence < s.fence {
		return Batch{}, ErrFenced
	}
	s.fence = fence
	if len(s.inflight) > 0 {
		return s.batchOut(true), nil
	}
	if len(s.buffer) == 0 {
		m.removeDue(s)
		return Batch{}, nil
	}
	if len(s.buffer) < w.Min {
		if w.Before.IsZero() {
			return Batch{}, nil
		}
		head, err := chat.ParseRecord(s.buffer[0])
		if err != nil {
			return Batch{}, fmt.Errorf("buffer: claim %s: %w", c, err)
		}
		if head.ReceivedMS >= w.Before.UnixMilli() {
			return Batch{}, nil
		}
	}
	n := min(len(s.buffer), w.Max)
	s.inflight = append([][]byte(nil), s.buffer[:n]...)
	s.buffer = append(s.buffer[:0:0], s.buffer[n:]...)
	now := m.cfg.Now()
	s.ctr = nextToken(s.ctr, now)
	s.batch, s.reason, s.created = s.ctr, w.Reason, now.UnixMilli()
	return s.batchOut(false), nil
}

func (s *memConv) batchOut(resumed bool) Batch {
	return Batch{
		Token:   s.batch,
		Reason:  s.reason,
		Created: time.UnixMilli(s.created),
		Records: append([][]byte(nil), s.inflight...),
		Resumed: resumed,
		After:   s.pos,
	}
}

// Commit implements Store.
func (m *Memory) Commit(ctx context.Context, c chat.Conversation, fence, token int64, pos uint64) (int64, error) {
	if err := m.lock(ctx); err != nil {
		return 0, err
	}
	defer m.unlock()
	s := m.conv(c)
	defer m.forget(s)
	if fence != s.fence {
		return 0, ErrFenced
	}
	if len(s.inflight) == 0 || s.batch != token {
		return 0, ErrNoBatch
	}
	s.inflight, s.batch, s.reason, s.created = nil, 0, "", 0
	s.pos = pos
	if len(s.buffer) == 0 {
		m.removeDue(s)
	} else {
		head, err := chat.ParseRecord(s.buffer[0])
		if err != nil {
			return 0, fmt.Errorf("buffer: commit %s: %w", c, err)
		}
		s.dueScore = head.ReceivedMS
		if s.dueIdx < 0 {
			heap.Push(&m.due, s)
		} else {
			heap.Fix(&m.due, s.dueIdx)
		}
	}
	return int64(len(s.buffer)), nil
}

func (m *Memory) removeDue(s *memConv) {
	if s.dueIdx >= 0 {
		heap.Remove(&m.due, s.dueIdx)
	}
}

// Due implements Store: a bounded walk of the heap, O(limit log limit).
func (m *Memory) Due(ctx context.Context, before time.Time, limit int) ([]chat.Conversation, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.unlock()
	cut := before.UnixMilli()
	var out []chat.Conversation
	// Candidates are heap positions, kept as a small heap ordered like the
	// due heap; a node's children become candidates once it is taken.
	cand := &posHeap{h: &m.due}
	if len(m.due) > 0 {
		heap.Push(cand, 0)
	}
	for cand.Len() > 0 && len(out) < limit {
		i := heap.Pop(cand).(int)
		s := m.due[i]
		if s.dueScore >= cut {
			break
		}
		out = append(out, s.c)
		for _, child := range [2]int{2*i + 1, 2*i + 2} {
			if child < len(m.due) {
				heap.Push(cand, child)
			}
		}
	}
	return out, nil
}

// Oldest implements Store.
func (m *Memory) Oldest(ctx context.Context) (time.Time, bool, error) {
	if err := m.lock(ctx); err != nil {
		return time.Time{}, false, err
	}
	defer m.unlock()
	if len(m.due) == 0 {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(m.due[0].dueScore), true, nil
}

// Len implements Store.
func (m *Memory) Len(ctx context.Context, c chat.Conversation) (int64, error) {
	if err := m.lock(ctx); err != nil {
		return 0, err
	}
	defer m.unlock()
	if s, ok := m.convs[c]; ok {
		return int64(len(s.buffer)), nil
	}
	return 0, nil
}

// dueHeap is a min-heap of conversations by due score.
type dueHeap []*memConv

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if h[i].dueScore != h[j].dueScore {
		return h[i].dueScore < h[j].dueScore
	}
	return h[i].c.Tag() < h[j].c.Tag()
}
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].dueIdx, h[j].dueIdx = i, j
}
func (h *dueHeap) Push(x any) {
	s := x.(*memConv)
	s.dueIdx = len(*h)
	*h = append(*h, s)
}
func (h *dueHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.dueIdx = -1
	return s
}

// posHeap orders positions of a dueHeap by their entries.
type posHeap struct {
	h   *dueHeap
	pos []int
}

func (p *posHeap) Len() int           { return len(p.pos) }
func (p *posHeap) Less(i, j int) bool { return p.h.Less(p.pos[i], p.pos[j]) }
func (p *posHeap) Swap(i, j int)      { p.pos[i], p.pos[j] = p.pos[j], p.pos[i] }
func (p *posHeap) Push(x any)         { p.pos = append(p.pos, x.(int)) }
func (p *posHeap) Pop() any {
	x := p.pos[len(p.pos)-1]
	p.pos = p.pos[:len(p.pos)-1]
	return x
}
