package flush_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/flush"
)

// recordingSink is an in-memory sink with the semantics the flusher relies
// on: a batch id is stored once, and a batch older than the conversation's
// last one is refused (ErrStale).
type recordingSink struct {
	mu      sync.Mutex
	byID    map[string]uint64
	batches []flush.Envelope
	last    map[chat.Conversation]flush.Envelope
	fail    func(flush.Envelope) error // when set and non-nil result: Publish fails
	publish func(flush.Envelope)       // when set: called before storing (may block)
}

func newSink() *recordingSink {
	return &recordingSink{byID: map[string]uint64{}, last: map[chat.Conversation]flush.Envelope{}}
}

func (s *recordingSink) Publish(ctx context.Context, b flush.Envelope) (uint64, error) {
	if s.publish != nil {
		s.publish(b)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		if err := s.fail(b); err != nil {
			return 0, err
		}
	}
	if pos, ok := s.byID[b.ID]; ok {
		return pos, nil
	}
	if last, ok := s.last[b.Conv]; ok && last.Token > b.Token {
		return 0, &flush.StaleError{Last: last.Token}
	}
	s.batches = append(s.batches, b)
	pos := uint64(len(s.batches))
	s.byID[b.ID] = pos
	s.last[b.Conv] = b
	return pos, nil
}

// decoded returns the published batches, decoded, in publish order.
func (s *recordingSink) decoded(t *testing.T) []chat.Batch {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]chat.Batch, len(s.batches))
	for i, b := range s.batches {
		if err := json.Unmarshal(b.Data, &out[i]); err != nil {
			t.Fatalf("batch %s is not valid JSON: %v", b.ID, err)
		}
	}
	return out
}

// checkExactlyOnce asserts that the published batches hold every sequence
// of want exactly once and nothing else, that they are well-formed, and
// returns them.
func checkExactlyOnce(t *testing.T, s *recordingSink, size int, want map[uint64]chat.Conversation) []chat.Batch {
	t.Helper()
	batches := s.decoded(t)
	seen := map[uint64]string{}
	lastToken := map[chat.Conversation]int64{}
	for _, b := range batches {
		c := chat.Conversation{User: b.UserID, Device: b.DeviceID, Agent: b.AgentID}
		if b.MessageCount != len(b.Messages) || b.MessageCount == 0 || b.MessageCount > size {
			t.Errorf("batch %s: message_count %d, %d messages, size %d", b.BatchID, b.MessageCount, len(b.Messages), size)
		}
		if b.Reason == chat.TriggerSize && len(b.Messages) != size {
			t.Errorf("size batch %s holds %d messages, want %d", b.BatchID, len(b.Messages), size)
		}
		if b.BatchID != chat.BatchID(c, b.FencingToken) {
			t.Errorf("batch id %q, want %q", b.BatchID, chat.BatchID(c, b.FencingToken))
		}
		if b.FencingToken <= lastToken[c] {
			t.Errorf("batch %s: fencing token %d after %d", b.BatchID, b.FencingToken, lastToken[c])
		}
		lastToken[c] = b.FencingToken
		for i, m := range b.Messages {
			if i > 0 && m.Seq <= b.Messages[i-1].Seq {
				t.Errorf("batch %s: seq %d after %d", b.BatchID, m.Seq, b.Messages[i-1].Seq)
			}
			if prev, dup := seen[m.Seq]; dup {
				t.Errorf("seq %d in batches %s and %s", m.Seq, prev, b.BatchID)
			}
			seen[m.Seq] = b.BatchID
			if wc, ok := want[m.Seq]; !ok {
				t.Errorf("batch %s holds unexpected seq %d", b.BatchID, m.Seq)
			} else if wc != c {
				t.Errorf("seq %d of %v landed in %v's batch %s", m.Seq, wc, c, b.BatchID)
			}
		}
	}
	lost := 0
	for seq := range want {
		if _, ok := seen[seq]; !ok {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d messages in no batch", lost, len(want))
	}
	return batches
}

var errSinkDown = fmt.Errorf("sink down")

// PublishMany makes recordingSink a flush.ManySink.
func (s *recordingSink) PublishMany(ctx context.Context, outs []flush.Envelope) ([]uint64, []error) {
	pos, errs := make([]uint64, len(outs)), make([]error, len(outs))
	for i, o := range outs {
		pos[i], errs[i] = s.Publish(ctx, o)
	}
	return pos, errs
}
