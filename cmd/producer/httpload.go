package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/verify"
)

// httpPublisher drives the gateway's POST /api/push/chat/messages: --conns
// workers, each on its own keep-alive connection, each sending its own
// conversations' messages in order, up to --batch per request. A request
// answered 503 or not answered is sent again (message ids make the retry
// harmless); any other refusal fails its messages.
type httpPublisher struct {
	url, key string
	client   *http.Client
	o        loadOptions
	rec      *verify.Recorder
	convs    []chat.Conversation

	published, failures, retries, pending atomic.Int64

	mu   sync.Mutex
	acks []time.Duration
	errs []string
}

// httpMessage is one message of a request, with its conversation's ids.
type httpMessage struct {
	message
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id"`
	AgentID  string `json:"agent_id"`
}

func newHTTPPublisher(base, key string, o loadOptions, rec *verify.Recorder, convs []chat.Conversation) *httpPublisher {
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        o.conns,
		MaxIdleConnsPerHost: o.conns,
		MaxConnsPerHost:     o.conns,
		IdleConnTimeout:     90 * time.Second,
	}
	return &httpPublisher{
		url: strings.TrimSuffix(base, "/") + "/api/push/chat/messages", key: key,
		client: &http.Client{Transport: tr, Timeout: 2 * ackTimeout},
		o:      o, rec: rec, convs: convs, acks: make([]time.Duration, 0, o.messages),
	}
}

func (p *httpPublisher) progress() progress {
	return progress{published: p.published.Load(), failed: p.failures.Load(), pending: int(p.pending.Load())}
}

// run sends the load and waits for every answer.
func (p *httpPublisher) run(ctx context.Context) stats {
	start := time.Now()
	var sent atomic.Int64
	var wg sync.WaitGroup
	for w := range min(p.o.conns, len(p.convs)) {
		wg.Go(func() { sent.Add(int64(p.worker(ctx, w, start))) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	p.mu.Lock()
	defer p.mu.Unlock()
	s := stats{
		Run: p.rec.Run(), Conversations: len(p.convs), Hostile: p.o.hostile, Requested: p.o.messages,
		Published: int(p.published.Load()), Failures: int(p.failures.Load()), Retries: int(p.retries.Load()), Errors: p.errs,
		ElapsedS: elapsed.Seconds(), PubAck: verify.Summarize(p.acks), Interrupted: int(sent.Load()) < p.o.messages,
	}
	if elapsed > 0 {
		s.PerSecond = float64(s.Published) / elapsed.Seconds()
	}
	return s
}

// worker sends the messages of the conversations i with i % conns == w, in
// message order, and returns how many it sent (or gave up on).
func (p *httpPublisher) worker(ctx context.Context, w int, start time.Time) int {
	conns := min(p.o.conns, len(p.convs))
	var batch []int
	sent := 0
	flush := func() {
		if len(batch) > 0 {
			p.send(ctx, batch)
			sent += len(batch)
			batch = batch[:0]
		}
	}
	for n := 0; n < p.o.messages; n++ {
		if (n%len(p.convs))%conns != w {
			continue
		}
		if p.o.rate > 0 {
			flush()
			sleep(ctx, time.Until(start.Add(time.Duration(float64(n)/p.o.rate*float64(time.Second)))))
		}
		if ctx.Err() != nil {
			break
		}
		batch = append(batch, n)
		if len(batch) == p.o.batch {
			flush()
		}
	}
	if ctx.Err() == nil {
		flush()
	}
	return sent
}

// send posts messages ns in one request, retrying while the gateway is
// unavailable.
func (p *httpPublisher) send(ctx context.Context, ns []int) {
	msgs := make([]httpMessage, len(ns))
	ids := make([]string, len(ns))
	for i, n := range ns {
		c := p.convs[n%len(p.convs)]
		if !p.o.noMessageID {
			ids[i] = p.rec.Run() + "-" + fmt.Sprint(n)
		}
		role := [...]string{"user", "assistant"}[(n/len(p.convs))%2]
		msgs[i] = httpMessage{message: message{Role: role, Content: p.rec.Content(n, p.o.size), MessageID: ids[i],
			Timestamp: time.Now().UTC().Format(time.RFC3339Nano)}, UserID: c.User, DeviceID: c.Device, AgentID: c.Agent}
	}
	body, err := json.Marshal(map[string]any{"messages": msgs})
	if err != nil {
		panic(err) // strings always marshal
	}
	p.pending.Add(int64(len(ns)))
	defer p.pending.Add(-int64(len(ns)))
	for attempt := 1; ; attempt++ {
		at := time.Now()
		retry, err := p.post(ctx, body)
		if err == nil {
			d := time.Since(at)
			for i, n := range ns {
				p.rec.Add(verify.Sent{Marker: p.rec.Marker(n), Conversation: p.convs[n%len(p.convs)], MessageID: ids[i], Published: at})
			}
			p.published.Add(int64(len(ns)))
			p.mu.Lock()
			for range ns {
				p.acks = append(p.acks, d)
			}
			p.mu.Unlock()
			return
		}
		if !retry || attempt == maxAttempts || !sleep(ctx, time.Duration(attempt)*retryPause) {
			p.failures.Add(int64(len(ns)))
			p.mu.Lock()
			if e := err.Error(); len(p.errs) < maxErrors && !slices.Contains(p.errs, e) {
				p.errs = append(p.errs, e)
			}
			p.mu.Unlock()
			return
		}
		p.retries.Add(1)
	}
}

// post sends one request; retry says whether sending it again may help.
func (p *httpPublisher) post(ctx context.Context, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	if p.key != "" {
		req.Header.Set("X-API-Key", p.key)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096)) // read whole: the connection is reused
	_, _ = io.Copy(io.Discard, resp.Body)
	switch {
	case resp.StatusCode == http.StatusOK:
		return false, nil
	case resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout:
		return true, fmt.Errorf("%s: %d %s", p.url, resp.StatusCode, bytes.TrimSpace(answer))
	default:
		return false, fmt.Errorf("%s: %d %s", p.url, resp.StatusCode, bytes.TrimSpace(answer))
	}
}
