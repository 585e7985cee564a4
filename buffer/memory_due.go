package buffer

import (
	"cmp"
	"container/heap"
	"context"
	"slices"
	"time"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/indexheap"
)

func (m *Memory) removeDue(s *memConv) {
	if s.dueIdx >= 0 {
		heap.Remove(m.due, s.dueIdx)
	}
}

// Due implements Store: a bounded walk of the heap, O(limit log limit).
func (m *Memory) Due(ctx context.Context, before time.Time, limit int) ([]chat.Conversation, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.unlock()
	m.expireSeen(m.cfg.Now().UnixMilli() - m.cfg.DedupeWindow.Milliseconds())
	cut := before.UnixMilli()
	var out []chat.Conversation
	// Candidates are heap positions, kept as a small heap ordered like the
	// due heap; a node's children become candidates once it is taken.
	cand := &posHeap{h: m.due}
	if len(m.due.Items) > 0 {
		heap.Push(cand, 0)
	}
	for cand.Len() > 0 && len(out) < limit {
		i := heap.Pop(cand).(int)
		s := m.due.Items[i]
		if s.dueScore >= cut {
			break
		}
		out = append(out, s.c)
		for _, child := range [2]int{2*i + 1, 2*i + 2} {
			if child < len(m.due.Items) {
				heap.Push(cand, child)
			}
		}
	}
	return out, nil
}

// Idle implements Store: a walk of every conversation, O(n log n).
func (m *Memory) Idle(ctx context.Context, before time.Time, limit int) ([]chat.Conversation, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.unlock()
	cut := before.UnixMilli()
	var idle []*memConv
	for _, s := range m.convs {
		if len(s.buffer) > 0 && s.last < cut {
			idle = append(idle, s)
		}
	}
	slices.SortFunc(idle, func(a, b *memConv) int {
		return cmp.Or(cmp.Compare(a.last, b.last), cmp.Compare(a.c.Tag(), b.c.Tag()))
	})
	out := make([]chat.Conversation, 0, min(len(idle), limit))
	for _, s := range idle[:min(len(idle), limit)] {
		out = append(out, s.c)
	}
	return out, nil
}

// Oldest implements Store.
func (m *Memory) Oldest(ctx context.Context) (time.Time, bool, error) {
	if err := m.lock(ctx); err != nil {
		return time.Time{}, false, err
	}
	defer m.unlock()
	if len(m.due.Items) == 0 {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(m.due.Items[0].dueScore), true, nil
}

// dueBefore orders the due heap: by due score, then by tag.
func dueBefore(a, b *memConv) bool {
	if a.dueScore != b.dueScore {
		return a.dueScore < b.dueScore
	}
	return a.c.Tag() < b.c.Tag()
}

// posHeap orders positions of the due heap by their entries.
type posHeap struct {
	h   *indexheap.Heap[*memConv]
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

// fixDue sets s's due score to its head's receive time; m.mu held.
func (m *Memory) fixDue(s *memConv) {
	if len(s.buffer) == 0 && len(s.inflight) == 0 {
		m.removeDue(s)
		return
	}
	head := s.buffer
	if len(s.inflight) > 0 {
		head = s.inflight
	}
	if r, err := chat.ParseRecord(head[0]); err == nil {
		s.dueScore = r.ReceivedMS
	}
	if s.dueIdx < 0 {
		heap.Push(m.due, s)
	} else {
		heap.Fix(m.due, s.dueIdx)
	}
}
