package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/procs"
)

// bufferSize is CHAT_BUFFER_SIZE throughout the bench.
const bufferSize = 10

// countingHook counts Redis round trips and commands the way the worker's
// metrics do: a pipeline is one round trip of many commands.
type countingHook struct{ trips, cmds *atomic.Int64 }

func (h countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.trips.Add(1)
		h.cmds.Add(1)
		return next(ctx, cmd)
	}
}

func (h countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.trips.Add(1)
		h.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// bufferItems builds msgs items over convs conversations, round-robin, with
// the records a worker would build for the drain's 256-byte messages. lanes
// splits them by conversation, as the worker's lanes do.
func bufferItems(msgs, convs, lanes int) [][]buffer.Item {
	now := time.Now()
	out := make([][]buffer.Item, lanes)
	for i := range msgs {
		c := conversation(i % convs)
		id := "buf-" + strconv.Itoa(i)
		seq := uint64(i + 1)
		b := body(id, "")
		// The content as Decode would keep it: the JSON string after "content":.
		content := b[len(`{"role":"user","message_id":"`)+len(id)+len(`","content":`) : len(b)-1]
		m := chat.Message{Role: "user", Content: content, MessageID: id}
		lane := (i % convs) % lanes
		out[lane] = append(out[lane], buffer.Item{Conv: c, Key: m.DedupeKey(seq, now.UnixNano()), Record: chat.NewRecord(&m, 0, seq, false, now)})
	}
	return out
}

// bufferRound runs the buffer layer alone on an empty Redis: each lane
// appends its items appendBatch at a time (AppendBatch), claims and commits
// the buffers that became full right after the append that filled them, in
// one ClaimMany and one CommitMany, and at the end claims and commits what is
// left in partial buffers, appendBatch conversations at a time. It returns
// the rate and the Redis round trips and commands per message.
func bufferRound(ctx context.Context, r *redisServer, lanes [][]buffer.Item, appendBatch int) (bufferResult, error) {
	var res bufferResult
	if err := r.flush(ctx); err != nil {
		return res, err
	}
	var trips, cmds atomic.Int64
	rdb := redis.NewClient(&redis.Options{Addr: r.addr})
	defer rdb.Close()
	store := buffer.NewRedis(rdb, buffer.Config{})
	// Load the scripts and warm the pool outside the timing.
	warm := conversation(-1)
	if _, err := store.Append(ctx, buffer.Item{Conv: warm, Key: "warm", Record: lanes[0][0].Record}); err != nil {
		return res, err
	}
	if _, err := store.Claim(ctx, warm, 1, buffer.ClaimOptions{Max: 1, Min: 1, Reason: chat.TriggerManual}); err != nil {
		return res, err
	}
	if err := r.flush(ctx); err != nil {
		return res, err
	}
	if err := r.resetStats(ctx); err != nil {
		return res, err
	}
	rdb.AddHook(countingHook{&trips, &cmds})

	var (
		claimed atomic.Int64
		pos     atomic.Uint64
		total   int
	)
	for _, l := range lanes {
		total += len(l)
	}
	// flush claims and commits the batches of convs as the worker's grouped
	// flush does (flush.FlushMany): one ClaimMany and one CommitMany round
	// trip per round, again for those still holding w.Min or more.
	flush := func(ctx context.Context, convs []chat.Conversation, w buffer.ClaimOptions, left map[chat.Conversation]int64) error {
		for len(convs) > 0 {
			reqs := make([]buffer.ClaimReq, len(convs))
			for i, c := range convs {
				reqs[i] = buffer.ClaimReq{Conv: c, Fence: 1, Want: w}
			}
			got, errs, err := store.ClaimMany(ctx, reqs)
			if err = errors.Join(append(errs, err)...); err != nil {
				return err
			}
			var commits []buffer.CommitReq
			for i, b := range got {
				if b.Token != 0 {
					commits = append(commits, buffer.CommitReq{Conv: convs[i], Fence: 1, Token: b.Token, Pos: pos.Add(1)})
					claimed.Add(int64(len(b.Records)))
				}
			}
			if len(commits) == 0 {
				return nil
			}
			rest, errs, err := store.CommitMany(ctx, commits)
			if err = errors.Join(append(errs, err)...); err != nil {
				return err
			}
			convs = convs[:0]
			for i, n := range rest {
				c := commits[i].Conv
				left[c] = n
				if n >= int64(w.Min) {
					convs = append(convs, c)
				}
			}
		}
		return nil
	}
	full := buffer.ClaimOptions{Max: bufferSize, Min: bufferSize, Reason: chat.TriggerSize}
	rest := buffer.ClaimOptions{Max: bufferSize, Min: 1, Reason: chat.TriggerManual}

	aof, err := r.meterAOF(ctx)
	if err != nil {
		return res, err
	}
	defer aof.stop()
	redisCPU0, err := procs.CPUTime(r.p.Pid())
	if err != nil {
		return res, err
	}
	selfCPU0 := procs.SelfCPU()
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for _, items := range lanes {
		g.Go(func() error {
			left := map[chat.Conversation]int64{}
			var order []chat.Conversation
			for i := 0; i < len(items); i += appendBatch {
				chunk := items[i:min(i+appendBatch, len(items))]
				out, err := store.AppendBatch(gctx, chunk)
				if err != nil {
					return err
				}
				var fill []chat.Conversation
				for j, a := range out {
					if a.Err != nil {
						return a.Err
					}
					c := chunk[j].Conv
					if _, ok := left[c]; !ok {
						order = append(order, c)
					}
					if a.Len >= bufferSize && left[c] < bufferSize {
						fill = append(fill, c)
					}
					left[c] = a.Len
				}
				if err := flush(gctx, fill, full, left); err != nil {
					return err
				}
			}
			var partial []chat.Conversation
			for _, c := range order {
				if left[c] > 0 {
					partial = append(partial, c)
				}
			}
			for i := 0; i < len(partial); i += appendBatch {
				if err := flush(gctx, partial[i:min(i+appendBatch, len(partial))], rest, left); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return res, fmt.Errorf("buffer layer: %w", err)
	}
	elapsed := time.Since(start)
	if n := claimed.Load(); n != int64(total) {
		return res, fmt.Errorf("buffer layer: %d messages claimed in batches, want %d", n, total)
	}
	res.ElapsedS = elapsed.Seconds()
	res.Rate = float64(total) / elapsed.Seconds()
	res.RoundTripsPerMsg = float64(trips.Load()) / float64(total)
	res.CommandsPerMsg = float64(cmds.Load()) / float64(total)
	if redisCPU1, err := procs.CPUTime(r.p.Pid()); err == nil {
		res.RedisCPUus = perMsgUS(redisCPU1-redisCPU0, total)
	}
	res.ClientCPUus = perMsgUS(procs.SelfCPU()-selfCPU0, total)
	if res.AOF, err = aof.finish(ctx, float64(total)); err != nil {
		return res, err
	}
	if res.RedisCommands, err = r.commandCosts(ctx, float64(total)); err != nil {
		return res, err
	}
	res.WritesPerMsg = writesPerMsg(res.RedisCommands)
	return res, nil
}
