package buffer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/redisscript"
)

// Claim implements Store.
func (r *Redis) Claim(ctx context.Context, c chat.Conversation, fence int64, w ClaimOptions) (Batch, error) {
	if w.Max <= 0 {
		return Batch{}, fmt.Errorf("buffer: claim: max %d, want > 0", w.Max)
	}
	keys, args := r.claimArgs(c, fence, w)
	v, err := claimScript.Run(ctx, r.rdb, keys, args...).Slice()
	return claimResult(c, v, err)
}

func (r *Redis) claimArgs(c chat.Conversation, fence int64, w ClaimOptions) ([]string, []any) {
	now := r.cfg.Now()
	var before int64
	if !w.Before.IsZero() {
		before = w.Before.UnixMilli()
	}
	limited, le, ls := 0, "0", "0"
	if w.Through != nil {
		limited, le, ls = 1, strconv.FormatInt(w.Through.Epoch, 10), strconv.FormatUint(w.Through.Seq, 10)
		if w.Settled {
			limited = 2
		}
	}
	var quiet int64
	if !w.IdleBefore.IsZero() {
		quiet = w.IdleBefore.UnixMilli()
	}
	return []string{r.keys.Buffer(c), r.keys.Inflight(c), r.keys.Meta(c), r.dueKey(c), r.idleKey(c)},
		[]any{fence, w.Max, w.Min, before, string(w.Reason), now.UnixMilli(), r.cfg.TTL.Milliseconds(), c.Tag(), now.UnixMicro(),
			limited, le, ls, max(w.MaxBytes, 0), quiet}
}

func claimResult(c chat.Conversation, v []any, err error) (Batch, error) {
	if err != nil {
		return Batch{}, fmt.Errorf("buffer: claim %s: %w", c, err)
	}
	code, ok := v[0].(int64)
	if !ok {
		return Batch{}, fmt.Errorf("buffer: claim %s: unexpected reply %v", c, v)
	}
	switch code {
	case -1:
		return Batch{}, ErrFenced
	case 0:
		return Batch{}, nil
	case 3:
		b := Batch{Blocked: true}
		for _, x := range v[1:] {
			str, _ := x.(string)
			seq, err := strconv.ParseUint(str, 10, 64)
			if err != nil {
				return Batch{}, fmt.Errorf("buffer: claim %s: unexpected reply %v", c, v)
			}
			b.Beyond = append(b.Beyond, seq)
		}
		return b, nil
	case 1, 2:
		return parseClaim(code == 2, v[1:])
	default:
		return Batch{}, fmt.Errorf("buffer: claim %s: unexpected reply code %d", c, code)
	}
}

// ClaimMany implements ManyStore: one pipelined round trip.
func (r *Redis) ClaimMany(ctx context.Context, reqs []ClaimReq) ([]Batch, []error, error) {
	cmds, err := redisscript.Pipelined(ctx, r.rdb, claimScript, len(reqs), func(p redis.Pipeliner, i int) *redis.Cmd {
		keys, args := r.claimArgs(reqs[i].Conv, reqs[i].Fence, reqs[i].Want)
		return claimScript.EvalSha(ctx, p, keys, args...)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("buffer: claim many: %w", err)
	}
	batches, errs := make([]Batch, len(reqs)), make([]error, len(reqs))
	for i, cmd := range cmds {
		v, err := cmd.Slice()
		batches[i], errs[i] = claimResult(reqs[i].Conv, v, err)
	}
	return batches, errs, nil
}

func parseClaim(resumed bool, v []any) (Batch, error) {
	if len(v) < 5 {
		return Batch{}, fmt.Errorf("buffer: claim: unexpected reply %v", v)
	}
	strs := make([]string, 4)
	for i := range strs {
		s, ok := v[i].(string)
		if !ok {
			return Batch{}, fmt.Errorf("buffer: claim: unexpected reply field %d: %v", i, v[i])
		}
		strs[i] = s
	}
	token, err1 := strconv.ParseInt(strs[0], 10, 64)
	created, err2 := strconv.ParseInt(strs[2], 10, 64)
	pos, err3 := strconv.ParseUint(strs[3], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Batch{}, fmt.Errorf("buffer: claim: unexpected reply: %w", err)
	}
	b := Batch{
		Token:   token,
		Reason:  chat.Trigger(strs[1]),
		Created: time.UnixMilli(created),
		Resumed: resumed,
		PrevPos: pos,
		Records: make([][]byte, 0, len(v)-4),
	}
	for _, rec := range v[4:] {
		s, ok := rec.(string)
		if !ok {
			return Batch{}, fmt.Errorf("buffer: claim: unexpected record %v", rec)
		}
		b.Records = append(b.Records, []byte(s))
	}
	return b, nil
}

// Commit implements Store.
func (r *Redis) Commit(ctx context.Context, c chat.Conversation, fence, token int64, pos uint64) (int64, error) {
	keys, args := r.commitArgs(CommitReq{Conv: c, Fence: fence, Token: token, Pos: pos})
	n, err := commitScript.Run(ctx, r.rdb, keys, args...).Int64()
	return commitResult(c, n, err)
}

func (r *Redis) commitArgs(q CommitReq) ([]string, []any) {
	return []string{r.keys.Inflight(q.Conv), r.keys.Meta(q.Conv), r.keys.Buffer(q.Conv), r.dueKey(q.Conv), r.idleKey(q.Conv)},
		[]any{q.Fence, q.Token, strconv.FormatUint(q.Pos, 10), q.Conv.Tag(), r.cfg.TTL.Milliseconds()}
}

func commitResult(c chat.Conversation, n int64, err error) (int64, error) {
	if err != nil {
		return 0, fmt.Errorf("buffer: commit %s: %w", c, err)
	}
	switch {
	case n == -1:
		return 0, ErrFenced
	case n == -2:
		return 0, ErrNoBatch
	case n >= 0:
		return n, nil
	default:
		return 0, fmt.Errorf("buffer: commit %s: unexpected reply %d", c, n)
	}
}

// CommitMany implements ManyStore: one pipelined round trip.
func (r *Redis) CommitMany(ctx context.Context, reqs []CommitReq) ([]int64, []error, error) {
	cmds, err := redisscript.Pipelined(ctx, r.rdb, commitScript, len(reqs), func(p redis.Pipeliner, i int) *redis.Cmd {
		keys, args := r.commitArgs(reqs[i])
		return commitScript.EvalSha(ctx, p, keys, args...)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("buffer: commit many: %w", err)
	}
	left, errs := make([]int64, len(reqs)), make([]error, len(reqs))
	for i, cmd := range cmds {
		n, err := cmd.Int64()
		left[i], errs[i] = commitResult(reqs[i].Conv, n, err)
	}
	return left, errs, nil
}

// Retoken implements Store.
func (r *Redis) Retoken(ctx context.Context, c chat.Conversation, fence, token, above int64) (int64, error) {
	n, err := retokenScript.Run(ctx, r.rdb, []string{r.keys.Meta(c)}, fence, token, above, r.cfg.Now().UnixMicro()).Int64()
	return commitResult(c, n, err)
}

// Refused implements Store.
func (r *Redis) Refused(ctx context.Context, c chat.Conversation, fence, token int64, at time.Time) (time.Time, error) {
	n, err := refusedScript.Run(ctx, r.rdb, []string{r.keys.Meta(c)}, fence, token, at.UnixMilli()).Int64()
	if n, err = commitResult(c, n, err); err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(n), nil
}
