package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontext/chatbuf/internal/procs"
)

// The HTTP ingest row: messages per request and keep-alive connections of
// `producer load --http`, and the conversations both loads rotate over.
const (
	httpBatch = 50
	httpConns = 64
	httpConvs = 200
)

// httpResult is one round of HTTP ingest through the gateway beside direct
// JetStream publishing, on the same nats-server, with one worker consuming.
type httpResult struct {
	DirectRate float64 `json:"direct_msgs_per_s"`
	HTTPRate   float64 `json:"http_msgs_per_s"`
	Ratio      float64 `json:"ratio"`
}

// measureHTTP drives the gateway (`producer load --http`, keep-alive
// connections) and publishes the same load directly (`producer load`),
// round by round, on the current nats-server.
func (h *harness) measureHTTP(ctx context.Context) {
	o := h.opts
	msgs := max(2000, o.messages/5)
	row := &Row[httpResult]{Name: "HTTP ingest", NATS: h.current, Redis: h.redis.cfg.Label(), Conversations: httpConvs, Messages: msgs}
	h.res.HTTP = row
	if err := h.buildCommands(ctx); err != nil {
		row.Error = h.failed("HTTP ingest: build", err)
		return
	}
	for i := range o.rounds {
		what := fmt.Sprintf("HTTP ingest, round %d/%d", i+1, o.rounds)
		h.logf("%s: %s messages, %d per request, %d connections", what, num(float64(msgs), 0), httpBatch, httpConns)
		if round(ctx, h, row, what, func() (httpResult, error) { return httpRound(ctx, h, msgs) }) {
			v := row.Rounds[len(row.Rounds)-1]
			h.logf("  direct %s msgs/s, through the gateway %s msgs/s (%s)", rate(v.DirectRate), rate(v.HTTPRate), ratio(v.Ratio))
		}
	}
	if row.ok() {
		row.finish()
		row.Ratio, row.RatioTo = row.Median.HTTPRate/row.Median.DirectRate, "direct JetStream publishing"
	}
}

// buildCommands builds the gateway and the producer into the bench's bin
// directory.
func (h *harness) buildCommands(ctx context.Context) error {
	for _, c := range []string{"gateway", "producer"} {
		if _, err := procs.Command(ctx, h.goEnv(), "go", "build", "-o", filepath.Join(h.binDir, c), "./cmd/"+c); err != nil {
			return err
		}
	}
	return nil
}

func httpRound(ctx context.Context, h *harness, msgs int) (httpResult, error) {
	var res httpResult
	n, _, err := freshSystem(ctx, h, h.current, h.redis, "nats-http")
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
	port, err := procs.FreePort()
	if err != nil {
		return res, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	gw, err := h.ps.Start("gateway", h.tmpPath("gateway.log"),
		[]string{"GATEWAY_ADDR=" + addr, "GATEWAY_AUTH=false", "NATS_URL=" + n.url, "LOG_LEVEL=warn"}, filepath.Join(h.binDir, "gateway"))
	if err != nil {
		return res, err
	}
	defer gw.Stop(10 * time.Second)
	if err := waitHealthy(ctx, "http://"+addr+"/health", 30*time.Second); err != nil {
		return res, fmt.Errorf("gateway: %w\n%s", err, gw.LogTail(20))
	}
	load := []string{"--conversations", strconv.Itoa(httpConvs), "--messages", strconv.Itoa(msgs)}
	if res.DirectRate, err = producerRate(ctx, h, n.url, load...); err != nil {
		return res, err
	}
	if res.HTTPRate, err = producerRate(ctx, h, n.url, append(load, "--http", "http://"+addr,
		"--batch", strconv.Itoa(httpBatch), "--conns", strconv.Itoa(httpConns))...); err != nil {
		return res, err
	}
	res.Ratio = res.HTTPRate / res.DirectRate
	return res, nil
}

// producerRate runs `producer load --json` and returns its publish rate.
func producerRate(ctx context.Context, h *harness, natsURL string, args ...string) (float64, error) {
	out, err := procs.Command(ctx, nil, filepath.Join(h.binDir, "producer"), append([]string{"--nats", natsURL, "load", "--json"}, args...)...)
	if err != nil {
		return 0, err
	}
	// The summary is the one JSON object on stdout; stderr is mixed in.
	i := strings.IndexByte(string(out), '{')
	var s struct {
		Published int     `json:"published"`
		Failures  int     `json:"failures"`
		PerSecond float64 `json:"published_per_s"`
	}
	if i < 0 {
		return 0, fmt.Errorf("producer printed no summary:\n%s", out)
	}
	if err := json.NewDecoder(strings.NewReader(string(out[i:]))).Decode(&s); err != nil {
		return 0, fmt.Errorf("producer summary: %w\n%s", err, out)
	}
	if s.Failures > 0 || s.PerSecond <= 0 {
		return 0, fmt.Errorf("producer: %d published, %d failures", s.Published, s.Failures)
	}
	return s.PerSecond, nil
}

// waitHealthy polls url until it answers 200.
func waitHealthy(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy within %v (last: %v)", url, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// httpSection writes the HTTP ingest row.
func (r *Results) httpSection(b *strings.Builder) {
	x := r.HTTP
	if x == nil {
		return
	}
	b.WriteString("## HTTP ingest through the gateway\n\n")
	fmt.Fprintf(b, "`producer load --http` (%d messages per request to `/api/push/chat/messages`, %d keep-alive connections, `GATEWAY_AUTH=false`) "+
		"beside `producer load` publishing the same load directly to JetStream, on the same nats-server with one worker consuming; "+
		"the gateway answers only after every message's PubAck.\n\n", httpBatch, httpConns)
	if !x.ok() {
		table(b, []string{"run", "error"}, [][]string{{x.Name, x.Error}})
		return
	}
	m := x.Median
	table(b, []string{"nats-server", "conversations", "messages", "direct msgs/s", "through the gateway msgs/s", "spread", "ratio"},
		[][]string{{natsName(x.NATS), num(float64(x.Conversations), 0), num(float64(x.Messages), 0), rate(m.DirectRate), rate(m.HTTPRate),
			spread(x.Rounds, func(v httpResult) float64 { return v.HTTPRate }, rate), ratio(x.Ratio) + " " + x.RatioTo}})
}
