package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/internal/procs"
	"github.com/opencontext/chatbuf/verify"
)

// steadyConvs is how many conversations the steady-state load rotates over.
const steadyConvs = 1000

// steadyRound runs one worker under a paced load of rate messages/s for dur,
// then checks every message with verify.Check (the producer's --verify) and
// returns its latencies. Messages go out in runs of CHAT_BUFFER_SIZE per
// conversation (conversation (n / 10) mod 1000), so that a buffer fills
// within 10/rate seconds and the size-batch latency is chatbuf's own, not
// the wait for a slow conversation to fill its buffer.
func steadyRound(ctx context.Context, h *harness, bin *natsBinary, rate float64, dur time.Duration) (steadyResult, error) {
	var res steadyResult
	n, cfg, err := freshSystem(ctx, h, bin, h.redis, "nats-steady")
	if err != nil {
		return res, err
	}
	defer n.stop()
	w, err := startWorker(h, h.redis, n.url, nil)
	if err != nil {
		return res, err
	}
	defer w.stop()
	if err := w.ready(ctx, 30*time.Second); err != nil {
		return res, err
	}

	total := max(bufferSize, int(rate*dur.Seconds())/bufferSize*bufferSize)
	rec := verify.NewRecorder(verify.NewRunID())
	sentAt := make([]atomic.Int64, total)
	var (
		mu      sync.Mutex
		acks    = make([]time.Duration, 0, total)
		pubErrs atomic.Int64
	)
	convOf := func(i int) int { return (i / bufferSize) % steadyConvs }
	nc, js, err := n.connect(
		jetstream.WithPublishAsyncMaxPending(publishWindow),
		jetstream.WithPublishAsyncTimeout(30*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { pubErrs.Add(1) }),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
			id := m.Header.Get(jetstream.MsgIDHeader)
			i, err := strconv.Atoi(id[strings.LastIndexByte(id, '-')+1:])
			if err != nil || i < 0 || i >= total {
				pubErrs.Add(1)
				return
			}
			at := time.Unix(0, sentAt[i].Load())
			rec.Add(verify.Sent{Marker: rec.Marker(i), Conversation: conversation(convOf(i)), MessageID: id, Seq: ack.Sequence, Published: at})
			mu.Lock()
			acks = append(acks, time.Since(at))
			mu.Unlock()
		}))
	if err != nil {
		return res, err
	}
	defer nc.Close()
	from, err := verify.Tail(ctx, js, cfg)
	if err != nil {
		return res, err
	}

	m0, err := w.scrape(ctx)
	if err != nil {
		return res, w.failure(err)
	}
	self0 := procs.SelfCPU()
	start := time.Now()
	for i := 0; i < total; {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		due := min(total, int(time.Since(start).Seconds()*rate)+1)
		for ; i < due; i++ {
			id := rec.Run() + "-" + strconv.Itoa(i)
			msg := &nats.Msg{Subject: cfg.In(conversation(convOf(i))), Data: body(id, rec.Marker(i)+" "), Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, id)
			sentAt[i].Store(time.Now().UnixNano())
			if _, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(30*time.Second)); err != nil {
				pubErrs.Add(1)
			}
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(time.Minute):
		return res, fmt.Errorf("steady: %d PubAcks still pending after 1m", js.PublishAsyncPending())
	}
	pubElapsed := time.Since(start)
	self1 := procs.SelfCPU()
	m1, err := w.scrape(ctx)
	if err != nil {
		return res, w.failure(err)
	}
	// How far behind the worker was: the wait, after the last PubAck, until
	// it has appended every message.
	published := float64(rec.Len())
	for m := m1; m["chatbuf_messages_appended_total"]-m0["chatbuf_messages_appended_total"] < published; {
		if time.Since(start) > pubElapsed+time.Minute {
			break
		}
		time.Sleep(20 * time.Millisecond)
		if m, err = w.scrape(ctx); err != nil {
			return res, w.failure(err)
		}
	}
	res.BacklogS = (time.Since(start) - pubElapsed).Seconds()

	rep, err := verify.Check(ctx, js, cfg, rec, verify.Options{BufferSize: bufferSize, Timeout: 2 * time.Minute, From: from, Flush: true})
	if err != nil {
		return res, w.failure(fmt.Errorf("verify: %w", err))
	}
	res.Rate = rate
	res.DurationS = pubElapsed.Seconds()
	res.Published = rec.Len()
	res.PublishedRate = float64(rec.Len()) / pubElapsed.Seconds()
	res.PublishErrors = int(pubErrs.Load())
	res.SizeLatency = rep.SizeLatency
	res.Latency = rep.Latency
	res.PubAck = verify.Summarize(acks)
	res.Lost, res.Duplicated, res.Misplaced, res.Malformed = rep.Lost, rep.Duplicated, rep.Misplaced, rep.Malformed
	res.VerifyOK = rep.OK() && !rep.TimedOut
	res.WorkerCPUPercent = 100 * (m1["process_cpu_seconds_total"] - m0["process_cpu_seconds_total"]) / pubElapsed.Seconds()
	res.PublisherCPUPercent = 100 * (self1 - self0).Seconds() / pubElapsed.Seconds()
	if n := m1["chatbuf_flush_duration_seconds_count"] - m0["chatbuf_flush_duration_seconds_count"]; n > 0 {
		res.FlushMeanMS = 1000 * (m1["chatbuf_flush_duration_seconds_sum"] - m0["chatbuf_flush_duration_seconds_sum"]) / n
	}
	if d := m1["chatbuf_messages_appended_total"] - m0["chatbuf_messages_appended_total"]; d > 0 {
		res.RoundTripsPerMsg = (m1["chatbuf_redis_round_trips_total"] - m0["chatbuf_redis_round_trips_total"]) / d
	}
	return res, nil
}
