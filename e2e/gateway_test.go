package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/internal/redistest"
	"github.com/opencontext/chatbuf/stream"
)

const gatewayKey = "e2e-gateway-key"

// startGateway starts a gateway process on a free port in front of the
// system's NATS and returns its base URL once /health answers.
func (s *system) startGateway(extra ...string) string {
	s.t.Helper()
	port, err := redistest.FreePort()
	if err != nil {
		s.t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	var log bytes.Buffer
	cmd := exec.Command(bin.gateway)
	cmd.Env = append(append(os.Environ(), "NATS_URL="+s.nats.URL, "LOG_LEVEL=warn", "CONTEXT_API_KEY="+gatewayKey,
		fmt.Sprintf("GATEWAY_ADDR=127.0.0.1:%d", port)), extra...)
	cmd.Stderr = &syncWriter{w: &log}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start gateway: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	s.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if s.t.Failed() {
			s.t.Logf("gateway log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/api/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		select {
		case err := <-done:
			s.t.Fatalf("gateway exited: %v\n%s", err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("gateway not healthy after 30s: %v\n%s", err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// call sends a request with the gateway key and returns the status and the
// answer as JSON text.
func call(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", gatewayKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func requireAnswer(t *testing.T, what string, status int, body string, wantStatus int, want string) {
	t.Helper()
	if status != wantStatus || body != want {
		t.Errorf("%s: %d %s\nwant %d %s", what, status, body, wantStatus, want)
	}
}

// gatewayBatch is what the test reads of a batch.
type gatewayBatch struct {
	BatchID  string  `json:"batch_id"`
	Reason   string  `json:"reason"`
	UserID   *string `json:"user_id"`
	DeviceID *string `json:"device_id"`
	AgentID  *string `json:"agent_id"`
	Messages []struct {
		Role      string `json:"role"`
		Content   string `json:"content"`
		MessageID string `json:"message_id"`
	} `json:"messages"`
}

// batchesOf waits until CHAT_FLUSHED holds want messages of conversation c
// and returns its batches in stream order.
func batchesOf(t *testing.T, js jetstream.JetStream, c chat.Conversation, want int) []gatewayBatch {
	t.Helper()
	subject := c.Subject(stream.DefaultPrefix, stream.KindFlushed)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var out []gatewayBatch
		n := 0
		for _, m := range readStream(ctx, t, js, stream.DefaultFlushedStream) {
			if m.Subject() != subject {
				continue
			}
			var b gatewayBatch
			if err := json.Unmarshal(m.Data(), &b); err != nil {
				t.Fatalf("batch on %s: %v: %s", subject, err, m.Data())
			}
			out = append(out, b)
			n += len(b.Messages)
		}
		cancel()
		if n >= want {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("CHAT_FLUSHED holds %d messages on %s after 60s, want %d", n, subject, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func idOrNull(p *string) string {
	if p == nil {
		return "null"
	}
	return *p
}

// Every route, through a gateway process, a worker process and real
// servers: ids of any form reach batches decoded, flush requests reach the
// worker, the completion routes its service; 401, 422 and 503 as
// OpenContext answers them.
func TestGatewayEndToEnd(t *testing.T) {
	s := newSystem(t, natstest.Embedded)
	s.startWorker()
	base := s.startGateway()
	nc, err := nats.Connect(s.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	status, body := call(t, "GET", base+"/health", "")
	requireAnswer(t, "health", status, body, 200, `{"code":0,"status":200,"message":"success","data":{"status":"healthy","service":"opencontext"}}`)

	conv := chat.Conversation{User: "zoë.müller@example.com", Device: "phone 1", Agent: "bot:v2"}
	ids := fmt.Sprintf(`"user_id":%q,"device_id":%q,"agent_id":%q`, conv.User, conv.Device, conv.Agent)
	status, body = call(t, "POST", base+"/api/push/chat/message", `{"role":"user","content":"one",`+ids+`,"message_id":"g1"}`)
	requireAnswer(t, "chat/message", status, body, 200, `{"code":0,"status":200,"message":"Chat message pushed successfully"}`)
	status, body = call(t, "POST", base+"/api/push/chat/messages",
		`{`+ids+`,"messages":[{"role":"assistant","content":"two","message_id":"g2"},{"role":"user","content":"three","message_id":"g3"}]}`)
	requireAnswer(t, "chat/messages", status, body, 200, `{"code":0,"status":200,"message":"Pushed 2 chat messages successfully","data":{"count":2}}`)
	status, body = call(t, "POST", base+"/api/push/batch",
		`{"user_id":`+fmt.Sprintf("%q", conv.User)+`,"device_id":`+fmt.Sprintf("%q", conv.Device)+`,"items":[
		{"type":"chat","data":{"role":"assistant","content":"four","agent_id":`+fmt.Sprintf("%q", conv.Agent)+`,"message_id":"g4"}},
		{"type":"tip","data":{"content":"x"}}]}`)
	requireAnswer(t, "batch", status, body, 200, `{"code":0,"status":200,"message":"Batch push completed: 1/2 items succeeded","data":{"results":[{"type":"chat","success":true},{"type":"tip","success":false,"error":"Item type tip is not supported: this endpoint accepts chat items only"}],"success_count":1,"total":2}}`)
	status, body = call(t, "POST", base+"/api/push/chat",
		`{`+ids+`,"messages":[{"role":"user","content":"five","message_id":"g5"}]}`)
	requireAnswer(t, "chat", status, body, 200, `{"code":0,"status":200,"message":"Chat messages pushed successfully","data":{"count":1}}`)

	// The worker may not have consumed the last message when the flush
	// request comes: flush until all five are in batches.
	deadline := time.Now().Add(60 * time.Second)
	var batches []gatewayBatch
	for {
		status, body = call(t, "POST", base+"/api/push/chat/flush", `{`+ids+`}`)
		requireAnswer(t, "chat/flush", status, body, 200, `{"code":0,"status":200,"message":"Chat buffer flushed successfully"}`)
		batches = batchesOf(t, js, conv, 0)
		n := 0
		for _, b := range batches {
			n += len(b.Messages)
		}
		if n == 5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var contents []string
	for _, b := range batches {
		if idOrNull(b.UserID) != conv.User || idOrNull(b.DeviceID) != conv.Device || idOrNull(b.AgentID) != conv.Agent {
			t.Errorf("batch %s ids %s/%s/%s, want %+v", b.BatchID, idOrNull(b.UserID), idOrNull(b.DeviceID), idOrNull(b.AgentID), conv)
		}
		for _, m := range b.Messages {
			contents = append(contents, m.Content)
		}
	}
	if got := strings.Join(contents, " "); got != "one two three four five" {
		t.Errorf("batched contents %q, want one two three four five in order", got)
	}

	// Completion routes through the worker's service.
	status, body = call(t, "POST", base+"/api/completions/precompute/7?content=hello", "")
	requireAnswer(t, "precompute", status, body, 200, `{"success":true,"message":"Document 7 context precomputation completed"}`)
	status, body = call(t, "GET", base+"/api/completions/cache/stats", "")
	if status != 200 || !strings.HasPrefix(body, `{"success":true,"data":{"total_requests":`) || !strings.Contains(body, `"success":true`) {
		t.Errorf("cache stats: %d %s", status, body)
	}
	status, body = call(t, "POST", base+"/api/completions/cache/clear", "")
	requireAnswer(t, "cache clear", status, body, 200, `{"success":true,"message":"Cache cleared"}`)

	// 401 and 422.
	req, _ := http.NewRequest("POST", base+"/api/push/chat/message", strings.NewReader(`{"role":"user","content":"x"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	requireAnswer(t, "no key", resp.StatusCode, string(b), 401, `{"detail":"API key required. Provide it via X-API-Key header or api_key query parameter."}`)
	status, body = call(t, "POST", base+"/api/push/chat/message?api_key=wrong", `{"content":"x"}`)
	requireAnswer(t, "missing role", status, body, 422, `{"detail":[{"type":"missing","loc":["body","role"],"msg":"Field required","input":{"content":"x"}}]}`)
	status, body = call(t, "POST", base+"/api/push/chat/message", `{"role":"user"`)
	if status != 422 || !strings.Contains(body, `"type":"json_invalid"`) {
		t.Errorf("not JSON: %d %s", status, body)
	}

	// 503 while NATS is down.
	s.nats.Stop()
	deadline = time.Now().Add(60 * time.Second)
	for {
		status, body = call(t, "POST", base+"/api/push/chat/message", `{"role":"user","content":"x"}`)
		if status == 503 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if status != 503 || !strings.HasPrefix(body, `{"code":503,"status":503,"message":"Chat message push failed: `) {
		t.Errorf("NATS down: %d %s, want 503", status, body)
	}
}

// flush_immediately closes the conversation's batch right after the
// request's last message: one batch, the request's messages in order,
// reason end.
func TestGatewayFlushImmediately(t *testing.T) {
	s := newSystem(t, natstest.Embedded, "CHAT_FLUSH_MAX_AGE=5m")
	s.startWorker()
	base := s.startGateway()
	nc, err := nats.Connect(s.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	conv := chat.Conversation{User: "a.b@c.d", Device: "_", Agent: "助手"}
	status, body := call(t, "POST", base+"/api/push/chat/messages", fmt.Sprintf(`{"user_id":%q,"agent_id":%q,"flush_immediately":true,"messages":[
		{"role":"user","content":"m1"},{"role":"assistant","content":"m2"},{"role":"user","content":"m3"}]}`, conv.User, conv.Agent))
	requireAnswer(t, "chat/messages", status, body, 200, `{"code":0,"status":200,"message":"Pushed 3 chat messages successfully","data":{"count":3}}`)
	batches := batchesOf(t, js, conv, 3)
	if len(batches) != 1 {
		t.Fatalf("%d batches, want 1: %+v", len(batches), batches)
	}
	b := batches[0]
	var got []string
	for _, m := range b.Messages {
		got = append(got, m.Content)
	}
	if strings.Join(got, " ") != "m1 m2 m3" || b.Reason != "end" || b.DeviceID != nil {
		t.Errorf("batch: reason %s, device %s, contents %q; want end, null, m1 m2 m3", b.Reason, idOrNull(b.DeviceID), got)
	}
}

// producer load --http drives the gateway; every message lands in exactly
// one batch.
func TestGatewayLoadHTTP(t *testing.T) {
	s := newSystem(t, natstest.Embedded)
	s.startWorker()
	base := s.startGateway()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.producer, "--nats", s.nats.URL, "load", "--http", base, "--verify", "--json",
		"--conversations", "50", "--messages", "3000", "--hostile", "--batch", "10", "--conns", "8", "--verify-timeout", "3m")
	cmd.Env = append(os.Environ(), "CONTEXT_API_KEY="+gatewayKey)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var res loadResult
	if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr != nil || res.Report == nil {
		t.Fatalf("producer load --http: %v; output not understood (%v):\n%s\nstderr:\n%s", err, jerr, stdout.String(), stderr.String())
	}
	t.Logf("producer: %s", bytes.TrimSpace(stderr.Bytes()))
	if res.Failures != 0 {
		t.Errorf("%d messages failed: %v", res.Failures, res.Errors)
	}
	requireExactlyOnce(t, res.Report, 3000)
}
