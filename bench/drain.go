package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontext/chatbuf/internal/procs"
	"github.com/opencontext/chatbuf/stream"
)

// drainSpec is one drain measurement: CHAT_IN preloaded with msgs messages
// over convs conversations, then one worker started with env on top of the
// bench's defaults.
type drainSpec struct {
	nats  *natsBinary
	redis *redisServer
	convs int
	msgs  int
	env   map[string]string
	// corpus are messages of the repository's corpus published after the
	// msgs of the load.
	corpus []corpusMsg
	notes  []string // what the table should say about this drain
	// timebox, when positive, ends the drain after this long even if not
	// every message is in a batch yet; the rate is then of those that are.
	timebox time.Duration
}

// fullBuffers reports whether every conversation ends with whole batches
// only, so that size flushes alone drain the load.
func (s drainSpec) fullBuffers() bool {
	return len(s.corpus) == 0 && s.msgs%s.convs == 0 && (s.msgs/s.convs)%s.bufferSize() == 0
}

// total is the number of messages of the drain, the corpus's included.
func (s drainSpec) total() int { return s.msgs + len(s.corpus) }

// bufferSize is the worker's CHAT_BUFFER_SIZE in this drain.
func (s drainSpec) bufferSize() int {
	if n, err := strconv.Atoi(s.env["CHAT_BUFFER_SIZE"]); err == nil && n > 0 {
		return n
	}
	return bufferSize
}

// workerEnv is the worker's whole environment: nothing is inherited but
// PATH and HOME, so that REDIS_* or NATS_* of the caller cannot leak in.
func workerEnv(redisPort int, natsURL, metricsAddr string, maxAckPending int, extra map[string]string) []string {
	env := map[string]string{
		"CHAT_MAX_ACK_PENDING": strconv.Itoa(maxAckPending),
		"PATH":                 os.Getenv("PATH"),
		"HOME":                 os.Getenv("HOME"),
		"REDIS_HOST":           "127.0.0.1",
		"REDIS_PORT":           strconv.Itoa(redisPort),
		"NATS_URL":             natsURL,
		"METRICS_ADDR":         metricsAddr,
		"CHAT_BUFFER_SIZE":     strconv.Itoa(bufferSize),
		"LOG_LEVEL":            "warn",
		"SHUTDOWN_TIMEOUT":     "5s",
	}
	maps.Copy(env, extra)
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// workerProc is a running worker with its metrics endpoint.
type workerProc struct {
	p       *procs.Proc
	metrics string // base URL
}

func startWorker(h *harness, rs *redisServer, natsURL string, extra map[string]string) (*workerProc, error) {
	port, err := procs.FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	h.workers++
	p, err := h.ps.Start("worker", h.tmpPath(fmt.Sprintf("worker-%d.log", h.workers)),
		workerEnv(rs.port, natsURL, addr, h.opts.maxAckPending, extra), h.workerBin)
	if err != nil {
		return nil, err
	}
	return &workerProc{p: p, metrics: "http://" + addr}, nil
}

func (w *workerProc) stop() { w.p.Stop(10 * time.Second) }

// failure explains err from talking to the worker: when the worker has
// exited (or is exiting), its exit status and last log lines say more.
func (w *workerProc) failure(err error) error {
	select {
	case <-w.p.Done():
		return w.p.ExitError()
	case <-time.After(500 * time.Millisecond):
		return fmt.Errorf("worker (pid %d, still running): %w", w.p.Pid(), err)
	}
}

// httpClient reads /metrics uncompressed: the harness polls every 50 ms,
// and gzip at that pace would be a cost of the bench, not of the worker.
var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableCompression: true}}

// scrape reads /metrics and returns every sample's value by metric name,
// summed over labels, and by name{labels}.
func (w *workerProc) scrape(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.metrics+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics parses the Prometheus text format far enough for the bench.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		series := line[:i]
		out[series] = v
		if name, _, ok := strings.Cut(series, "{"); ok {
			out[name] += v
		}
	}
	return out, sc.Err()
}

// ready waits for /readyz to answer 200.
func (w *workerProc) ready(ctx context.Context, timeout time.Duration) error {
	err := procs.WaitFor(ctx, w.p, timeout, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.metrics+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	if err == nil && !w.p.Alive() {
		return w.p.ExitError() // another process answered on its port
	}
	return err
}

// drainRound runs one drain: a fresh nats-server and an empty Redis,
// CHAT_IN preloaded, then one worker process; the time runs from starting
// the worker until its chatbuf_batch_messages_total reaches the load.
func drainRound(ctx context.Context, h *harness, s drainSpec) (drainResult, error) {
	var res drainResult
	rs := s.redis
	n, cfg, err := freshSystem(ctx, h, s.nats, rs, "nats-drain")
	if err != nil {
		return res, err
	}
	defer n.stop()
	if res.PreloadRate, err = preload(ctx, n, cfg, "drain", s.msgs, s.convs, s.corpus); err != nil {
		return res, err
	}

	if err := rs.resetStats(ctx); err != nil {
		return res, err
	}
	aof, err := rs.meterAOF(ctx)
	if err != nil {
		return res, err
	}
	defer aof.stop()
	redisCPU0, err1 := procs.CPUTime(rs.p.Pid())
	natsCPU0, err2 := procs.CPUTime(n.p.Pid())
	if err1 != nil || err2 != nil {
		return res, fmt.Errorf("read server CPU: %v %v", err1, err2)
	}
	start := time.Now()
	w, err := startWorker(h, rs, n.url, s.env)
	if err != nil {
		return res, err
	}
	defer w.stop()

	// Generous: the slowest expected rate is a few hundred messages/s.
	timeout := 2*time.Minute + time.Duration(s.total())*2*time.Millisecond
	deadline := start.Add(timeout)
	var m map[string]float64
	for {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if !w.p.Alive() {
			return res, w.p.ExitError()
		}
		got, err := w.scrape(ctx)
		if err == nil {
			m = got
			if res.AllAppendedS == 0 && m["chatbuf_messages_appended_total"]+m["chatbuf_messages_deduplicated_total"] >= float64(s.total()) {
				res.AllAppendedS = time.Since(start).Seconds()
			}
			if m["chatbuf_batch_messages_total"] >= float64(s.total()) {
				res.Complete = true
				break
			}
		}
		if s.timebox > 0 && time.Since(start) >= s.timebox && m != nil {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("drain: only %.0f of %d messages in batches after %v; worker log:\n%s",
				m["chatbuf_batch_messages_total"], s.total(), timeout, w.p.LogTail(10))
		}
	}
	elapsed := time.Since(start)
	redisCPU1, err1 := procs.CPUTime(rs.p.Pid())
	natsCPU1, err2 := procs.CPUTime(n.p.Pid())
	rss, err3 := procs.PeakRSS(w.p.Pid())
	if err1 != nil || err2 != nil || err3 != nil {
		return res, fmt.Errorf("read /proc: %v %v %v", err1, err2, err3)
	}

	// Per-message costs are of the messages handled: all of them, or those
	// appended by the time box (whose appends are most of the work done).
	msgs := float64(s.total())
	appended := m["chatbuf_messages_appended_total"] + m["chatbuf_messages_deduplicated_total"]
	res.ElapsedS = elapsed.Seconds()
	res.Rate = m["chatbuf_batch_messages_total"] / elapsed.Seconds()
	if res.Complete {
		res.Rate = msgs / elapsed.Seconds()
	} else if appended > 0 {
		msgs = appended
	}
	res.AppendRate = appended / elapsed.Seconds()
	if res.AllAppendedS > 0 {
		res.AppendRate = float64(s.total()) / res.AllAppendedS
	}
	res.RoundTripsPerMsg = m["chatbuf_redis_round_trips_total"] / msgs
	res.CommandsPerMsg = m["chatbuf_redis_commands_total"] / msgs
	res.WorkerCPUus = m["process_cpu_seconds_total"] * 1e6 / msgs
	res.RedisCPUus = float64((redisCPU1 - redisCPU0).Microseconds()) / msgs
	res.NATSCPUus = float64((natsCPU1 - natsCPU0).Microseconds()) / msgs
	if n := m["chatbuf_flush_duration_seconds_count"]; n > 0 {
		res.FlushMeanMS = 1000 * m["chatbuf_flush_duration_seconds_sum"] / n
	}
	res.WorkerPeakRSSMiB = float64(rss) / (1 << 20)
	res.RedisUsedMiB = rs.usedMiB(ctx)
	res.Batches = map[string]float64{}
	for _, r := range []string{"size", "age", "manual"} {
		if v := m[`chatbuf_batches_total{reason="`+r+`"}`]; v > 0 {
			res.Batches[r] = v
		}
	}
	res.Appended = m["chatbuf_messages_appended_total"]
	res.Duplicates = m["chatbuf_messages_deduplicated_total"]
	res.Dead = m["chatbuf_messages_dead_total"]
	res.InBatches = m["chatbuf_batch_messages_total"]
	if res.AOF, err = aof.finish(ctx, msgs); err != nil {
		return res, err
	}
	if res.RedisCommands, err = rs.commandCosts(ctx, msgs); err != nil {
		return res, err
	}
	res.WritesPerMsg = writesPerMsg(res.RedisCommands)
	if res.MaxAckPending, err = maxAckPending(ctx, n, cfg); err != nil {
		return res, err
	}
	return res, nil
}

// freshSystem starts a nats-server on an empty store under name, empties
// rs and creates the streams with the default settings but the consumer's
// MaxAckPending, --max-ack-pending.
func freshSystem(ctx context.Context, h *harness, bin *natsBinary, rs *redisServer, name string) (*natsServer, stream.Config, error) {
	cfg := h.streamConfig()
	n, err := startNATS(ctx, h.ps, bin, h.tmpPath(name))
	if err != nil {
		return nil, cfg, err
	}
	if err := rs.flush(ctx); err != nil {
		n.stop()
		return nil, cfg, err
	}
	if err := ensureStreams(ctx, n, cfg); err != nil {
		n.stop()
		return nil, cfg, err
	}
	return n, cfg, nil
}

// streamConfig is the streams' configuration: the defaults, with the
// workers' MaxAckPending.
func (h *harness) streamConfig() stream.Config {
	return stream.Config{MaxAckPending: h.opts.maxAckPending}.WithDefaults()
}

// maxAckPending reads the consumer's MaxAckPending from the server.
func maxAckPending(ctx context.Context, n *natsServer, cfg stream.Config) (int, error) {
	nc, js, err := n.connect()
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	c, err := js.Consumer(ctx, cfg.InStream, cfg.Consumer)
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", cfg.Consumer, err)
	}
	return c.CachedInfo().Config.MaxAckPending, nil
}
