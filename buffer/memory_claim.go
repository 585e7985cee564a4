package buffer

import (
	"container/heap"
	"context"
	"fmt"
	"time"

	"github.com/opencontext/chatbuf/chat"
)

// Claim implements Store.
func (m *Memory) Claim(ctx context.Context, c chat.Conversation, fence int64, w ClaimOptions) (Batch, error) {
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
		PrevPos: s.pos,
	}
}

// take decides a new batch as claimScript does: how many records, under
// which reason, whether to claim at all, and whether records beyond
// w.Through held it back.
func (s *memConv) take(w ClaimOptions) (n int, reason chat.Trigger, ok, blocked bool, err error) {
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
func (s *memConv) beyond(w ClaimOptions) []uint64 {
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
