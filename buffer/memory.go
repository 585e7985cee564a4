package buffer

import (
	"container/heap"
	"context"
	"fmt"
	"slices"

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
