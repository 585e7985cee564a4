package buffer

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/indexheap"
)

// Memory is a Store in process memory with the same semantics as Redis, for
// a single instance or while Redis is unreachable. Buffers have no TTL here:
// they live until flushed or until the process ends.
//
// With MemoryConfig.Hold, appended messages are reported Held: they are not
// durable, so their producer's message must not be acked until OnRelease
// names their conversation and dedupe keys (their batch was committed, or
// Take handed them over to a durable store).
type Memory struct {
	cfg  Config
	mcfg MemoryConfig

	mu    chan struct{} // a mutex that honours ctx
	convs map[chat.Conversation]*memConv
	due   *indexheap.Heap[*memConv] // conversations with a buffer or a batch in flight, by due score
	// seenLog holds every remembered dedupe key in the order seen, from
	// seenHead on: entries past the dedupe window are forgotten from the
	// front on each append and each Due (the sweep), so that idle
	// conversations do not keep their keys, or their state, for ever.
	seenLog  []seenEntry
	seenHead int
}

var _ ManyStore = (*Memory)(nil)

// MemoryConfig adds the in-memory store's own options to Config.
type MemoryConfig struct {
	Hold bool // report appended messages as Held
	// OnRelease is called, outside the store's lock, with a conversation
	// and the dedupe keys of its committed messages. A dedupe key names a
	// message only within its conversation.
	OnRelease func(c chat.Conversation, keys []string)
}

type memConv struct {
	c        chat.Conversation
	buffer   [][]byte
	keys     []string // dedupe keys of buffer, index for index
	inflight [][]byte
	inKeys   []string // dedupe keys of inflight
	fence    int64
	ctr      int64
	batch    int64
	reason   chat.Trigger
	created  int64
	refused  int64 // first refusal of the in-flight batch, ms (0: none)
	pos      uint64
	seen     map[string]int64 // dedupe key -> first seen, ms
	dueIdx   int              // index in the due heap, -1 when absent
	dueScore int64
	last     int64 // last append, ms
}

type seenEntry struct {
	c   chat.Conversation
	key string
	at  int64
}

// NewMemory returns an empty in-memory Store.
func NewMemory(cfg Config, mcfg ...MemoryConfig) *Memory {
	m := &Memory{cfg: cfg.withDefaults(), mu: make(chan struct{}, 1), convs: map[chat.Conversation]*memConv{},
		due: indexheap.New(dueBefore, func(s *memConv) *int { return &s.dueIdx })}
	if len(mcfg) > 0 {
		m.mcfg = mcfg[0]
	}
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
	m.expireSeen(now - m.cfg.DedupeWindow.Milliseconds())
	out := make([]Appended, len(items))
	for i, it := range items {
		rec, err := chat.ParseRecord(it.Record)
		if err != nil {
			out[i].Err = fmt.Errorf("buffer: append to %s: %w", it.Conv, err)
			continue
		}
		s := m.conv(it.Conv)
		if _, dup := s.seen[it.Key]; dup {
			out[i] = Appended{Dup: true, Len: int64(len(s.buffer))}
			continue
		}
		s.seen[it.Key] = now
		m.seenLog = append(m.seenLog, seenEntry{it.Conv, it.Key, now})
		s.insert(rec, it.Record, it.Key)
		s.last = now
		if s.dueIdx < 0 {
			s.dueScore = rec.ReceivedMS
			heap.Push(m.due, s)
		}
		out[i] = Appended{Len: int64(len(s.buffer)), Held: m.mcfg.Hold}
	}
	return out, nil
}

// insert puts a record at its place: after the last record whose Pos is
// not after its own (at the tail, commonly).
func (s *memConv) insert(rec chat.Record, raw []byte, key string) {
	p := Pos{rec.Epoch, rec.Seq}
	i := len(s.buffer)
	for i > 0 {
		prev, err := chat.ParseRecord(s.buffer[i-1])
		if err != nil || !p.Less(Pos{prev.Epoch, prev.Seq}) {
			break
		}
		i--
	}
	s.buffer = slices.Insert(s.buffer, i, raw)
	s.keys = slices.Insert(s.keys, i, key)
}

// expireSeen forgets the dedupe keys seen before horizon (ms), and the
// conversations left with nothing to keep; m.mu held. Amortised O(1) per
// key remembered.
func (m *Memory) expireSeen(horizon int64) {
	for m.seenHead < len(m.seenLog) && m.seenLog[m.seenHead].at < horizon {
		e := m.seenLog[m.seenHead]
		m.seenLog[m.seenHead] = seenEntry{}
		m.seenHead++
		if s, ok := m.convs[e.c]; ok && s.seen[e.key] == e.at {
			delete(s.seen, e.key)
			m.forget(s)
		}
	}
	if m.seenHead > 0 && m.seenHead >= len(m.seenLog)/2 {
		m.seenLog = append(m.seenLog[:0:0], m.seenLog[m.seenHead:]...)
		m.seenHead = 0
	}
}

// Size reports how many conversations and dedupe keys the store keeps.
func (m *Memory) Size() (conversations, dedupeKeys int) {
	m.mu <- struct{}{}
	defer m.unlock()
	for _, s := range m.convs {
		dedupeKeys += len(s.seen)
	}
	return len(m.convs), dedupeKeys
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
	n, reason, ok, blocked, err := s.take(w)
	if err != nil {
		return Batch{}, fmt.Errorf("buffer: claim %s: %w", c, err)
	}
	if !ok {
		b := Batch{Blocked: blocked}
		if blocked {
			b.Beyond = s.beyond(w)
		}
		return b, nil
	}
	s.inflight = append([][]byte(nil), s.buffer[:n]...)
	s.inKeys = append([]string(nil), s.keys[:n]...)
	s.buffer = append(s.buffer[:0:0], s.buffer[n:]...)
	s.keys = append(s.keys[:0:0], s.keys[n:]...)
	w.Reason = reason
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

// take decides a new batch as claimScript does: how many records, under
// which reason, whether to claim at all, and whether records beyond
// w.Through held it back.
func (s *memConv) take(w Want) (n int, reason chat.Trigger, ok, blocked bool, err error) {
	used := 0
	var stop string
	for _, raw := range s.buffer[:min(len(s.buffer), w.Max)] {
		r, err := chat.ParseRecord(raw)
		if err != nil {
			return 0, "", false, false, err
		}
		if w.MaxBytes > 0 && n > 0 && used+r.Cost > w.MaxBytes {
			stop = "bytes"
			break
		}
		if w.Through != nil && w.Through.Less(Pos{r.Epoch, r.Seq}) {
			stop = "limit"
			break
		}
		n, used = n+1, used+r.Cost
		if r.End {
			stop = "end"
			break
		}
	}
	reason = w.Reason
	switch {
	case stop == "end":
		reason, ok = chat.TriggerEnd, true
	case stop == "bytes":
		reason, ok = chat.TriggerBytes, true
	case n >= w.Min:
		ok = true
		if reason == chat.TriggerEnd {
			reason = chat.TriggerSize
		}
	case n > 0:
		if !w.Before.IsZero() {
			ok = s.dueScore < w.Before.UnixMilli()
		}
		if !ok && !w.IdleBefore.IsZero() && s.last != 0 {
			ok = s.last < w.IdleBefore.UnixMilli()
		}
	}
	if !ok {
		return 0, "", false, stop == "limit" && len(s.buffer) >= w.Min, nil
	}
	return n, reason, true, false, nil
}

// beyond lists Batch.Beyond for a claim blocked at w.Through.
func (s *memConv) beyond(w Want) []uint64 {
	var out []uint64
	at := false
	for _, raw := range s.buffer[:min(len(s.buffer), w.Max)] {
		r, err := chat.ParseRecord(raw)
		if err != nil {
			return nil
		}
		p := Pos{r.Epoch, r.Seq}
		switch {
		case at && r.Epoch == w.Through.Epoch:
			out = append(out, r.Seq)
		case at:
			return out
		case p == *w.Through:
			at = true
		case w.Through.Less(p) && w.Settled:
			if r.Epoch != w.Through.Epoch {
				return out
			}
			at = true
			out = append(out, r.Seq)
		case w.Through.Less(p):
			return nil
		}
	}
	return out
}

// Commit implements Store.
func (m *Memory) Commit(ctx context.Context, c chat.Conversation, fence, token int64, pos uint64) (int64, error) {
	n, released, err := m.commit(ctx, c, fence, token, pos)
	if err == nil && m.mcfg.OnRelease != nil && len(released) > 0 {
		m.mcfg.OnRelease(c, released)
	}
	return n, err
}

func (m *Memory) commit(ctx context.Context, c chat.Conversation, fence, token int64, pos uint64) (n int64, released []string, err error) {
	if err := m.lock(ctx); err != nil {
		return 0, nil, err
	}
	defer m.unlock()
	s := m.conv(c)
	defer m.forget(s)
	if fence != s.fence {
		return 0, nil, ErrFenced
	}
	if len(s.inflight) == 0 || s.batch != token {
		return 0, nil, ErrNoBatch
	}
	released = s.inKeys
	s.inflight, s.inKeys, s.batch, s.reason, s.created, s.refused = nil, nil, 0, "", 0, 0
	s.pos = pos
	if len(s.buffer) == 0 {
		m.removeDue(s)
	} else {
		head, err := chat.ParseRecord(s.buffer[0])
		if err != nil {
			return 0, nil, fmt.Errorf("buffer: commit %s: %w", c, err)
		}
		s.dueScore = head.ReceivedMS
		if s.dueIdx < 0 {
			heap.Push(m.due, s)
		} else {
			heap.Fix(m.due, s.dueIdx)
		}
	}
	return int64(len(s.buffer)), released, nil
}

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

// ClaimMany implements ManyStore.
func (m *Memory) ClaimMany(ctx context.Context, reqs []ClaimReq) ([]Batch, []error, error) {
	batches, errs := make([]Batch, len(reqs)), make([]error, len(reqs))
	for i, q := range reqs {
		batches[i], errs[i] = m.Claim(ctx, q.Conv, q.Fence, q.Want)
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
	}
	return batches, errs, nil
}

// CommitMany implements ManyStore.
func (m *Memory) CommitMany(ctx context.Context, reqs []CommitReq) ([]int64, []error, error) {
	left, errs := make([]int64, len(reqs)), make([]error, len(reqs))
	for i, q := range reqs {
		left[i], errs[i] = m.Commit(ctx, q.Conv, q.Fence, q.Token, q.Pos)
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
	}
	return left, errs, nil
}

// Retoken implements Store.
func (m *Memory) Retoken(ctx context.Context, c chat.Conversation, fence, token, above int64) (int64, error) {
	if err := m.lock(ctx); err != nil {
		return 0, err
	}
	defer m.unlock()
	s := m.conv(c)
	defer m.forget(s)
	switch {
	case fence != s.fence:
		return 0, ErrFenced
	case len(s.inflight) == 0 || s.batch != token:
		return 0, ErrNoBatch
	}
	s.ctr = max(nextToken(s.ctr, m.cfg.Now()), above+1)
	s.batch = s.ctr
	return s.ctr, nil
}

// Refused implements Store.
func (m *Memory) Refused(ctx context.Context, c chat.Conversation, fence, token int64, at time.Time) (time.Time, error) {
	if err := m.lock(ctx); err != nil {
		return time.Time{}, err
	}
	defer m.unlock()
	s := m.conv(c)
	defer m.forget(s)
	switch {
	case fence != s.fence:
		return time.Time{}, ErrFenced
	case len(s.inflight) == 0 || s.batch != token:
		return time.Time{}, ErrNoBatch
	}
	if s.refused == 0 {
		s.refused = at.UnixMilli()
	}
	return time.UnixMilli(s.refused), nil
}
