package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/internal/procs"
)

// redisBenchArgs is reference (1): pipelined RPUSH of 256-byte values to
// 10,000 random keys. The explicit command form is needed because the
// built-in "-t rpush" ignores -r.
func redisBenchArgs(port, n int) []string {
	return []string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-P", "16", "-r", "10000", "-n", strconv.Itoa(n), "-q",
		"RPUSH", "key:__rand_int__", strings.Repeat("v", messageBytes)}
}

var requestsPerSecond = regexp.MustCompile(`([0-9.]+) requests per second`)

// redisBenchRound runs redis-benchmark once on an empty server and returns
// its requests per second.
func redisBenchRound(ctx context.Context, r *redisServer, n int) (float64, error) {
	bin, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return 0, fmt.Errorf("redis-benchmark not found in PATH (it comes with redis-server; make deps installs it): %w", err)
	}
	if err := r.flush(ctx); err != nil {
		return 0, err
	}
	out, err := procs.Command(ctx, nil, bin, redisBenchArgs(r.port, n)...)
	if err != nil {
		return 0, err
	}
	// -q rewrites its progress line with \r; the last match is the result.
	m := requestsPerSecond.FindAllSubmatch(out, -1)
	if m == nil {
		return 0, fmt.Errorf("redis-benchmark output not understood: %q", tail(string(out), 200))
	}
	return strconv.ParseFloat(string(m[len(m)-1][1]), 64)
}

// jsRefRound is one round of reference (2): msgs messages preloaded into
// CHAT_IN exactly as for the drain (stream and consumer made by
// stream.Ensure: file storage, work-queue retention, 2m duplicate window,
// explicit ack, the workers' MaxAckPending), then consumed by a minimal pull
// consumer on the workers' durable consumer: Messages() pulling as many at
// a time as a worker with its default lanes (one per CPU) does, and Ack each. The time runs until
// the server has every ack (no ack pending), so the stream is empty.
func jsRefRound(ctx context.Context, h *harness, bin *natsBinary, msgs, convs int, extra []corpusMsg) (jsRefResult, error) {
	var res jsRefResult
	n, err := startNATS(ctx, h.ps, bin, h.tmpPath("nats-ref"))
	if err != nil {
		return res, err
	}
	defer n.stop()
	cfg := h.streamConfig()
	if err := ensureStreams(ctx, n, cfg); err != nil {
		return res, err
	}
	if res.PreloadRate, err = preload(ctx, n, cfg, "ref", msgs, convs, extra); err != nil {
		return res, err
	}
	msgs += len(extra)
	nc, js, err := n.connect()
	if err != nil {
		return res, err
	}
	defer nc.Close()
	cons, err := js.Consumer(ctx, cfg.InStream, cfg.Consumer)
	if err != nil {
		return res, err
	}
	res.MaxAckPending = cons.CachedInfo().Config.MaxAckPending

	natsCPU0, err := procs.CPUTime(n.p.Pid())
	if err != nil {
		return res, err
	}
	selfCPU0 := procs.SelfCPU()
	start := time.Now()
	res.PullMax = runtime.NumCPU() * 256 // the worker's pull window: lanes (CPUs) × WORKER_APPEND_BATCH
	it, err := cons.Messages(jetstream.PullMaxMessages(res.PullMax), jetstream.WithMessagesErrOnMissingHeartbeat(false))
	if err != nil {
		return res, err
	}
	stopIt := context.AfterFunc(ctx, it.Stop)
	defer stopIt()
	for got := 0; got < msgs; {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return res, err
			}
			continue
		}
		if err := m.Ack(); err != nil {
			return res, fmt.Errorf("ack: %w", err)
		}
		got++
	}
	it.Stop()
	deadline := time.Now().Add(time.Minute)
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			return res, err
		}
		if info.NumAckPending == 0 && info.NumPending == 0 {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("acks still pending after 1m: %d", info.NumAckPending)
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(start)
	natsCPU1, err := procs.CPUTime(n.p.Pid())
	if err != nil {
		return res, err
	}
	res.ElapsedS = elapsed.Seconds()
	res.Rate = float64(msgs) / elapsed.Seconds()
	res.NATSCPUus = perMsgUS(natsCPU1-natsCPU0, msgs)
	res.ConsumerCPUus = perMsgUS(procs.SelfCPU()-selfCPU0, msgs)
	return res, nil
}

func perMsgUS(d time.Duration, msgs int) float64 {
	return float64(d.Microseconds()) / float64(msgs)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
