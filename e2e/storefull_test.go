package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/natstest"
)

// Redis full (maxmemory with noeviction) under a worker process: no valid
// message is dead-lettered, /readyz answers 503 with the reason and
// chatbuf_store_refusing is 1 while it is full, flushes still run, and once
// Redis has room every message reaches exactly one batch.
func TestRedisFullWorkerProcess(t *testing.T) {
	const convs, perConv = 120, 9
	s := newSystemRedisArgs(t, natstest.Embedded, []string{"--maxmemory", "2200kb", "--maxmemory-policy", "noeviction"},
		"CHAT_BUFFER_SIZE=1000", "CHAT_FLUSH_MAX_AGE=1h")
	w := s.startWorker()
	nc := s.nats.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pad := strings.Repeat("x", 2000)
	want := map[string]bool{}
	for i := range convs * perConv {
		c := chat.Conversation{User: fmt.Sprintf("full-%d", i%convs), Device: "d", Agent: "a"}
		content := fmt.Sprintf("full-%d-%s", i, pad)
		want[content] = true
		if _, err := js.Publish(ctx, prefix+".in."+c.User+".d.a", fmt.Appendf(nil, `{"role":"user","content":%q}`, content)); err != nil {
			t.Fatal(err)
		}
	}

	// Not ready, with the reason, while Redis is full.
	var body string
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, text := readyzBody(w)
		if code == http.StatusServiceUnavailable && strings.Contains(text, "OOM") {
			body = text
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never said Redis refuses writes: %d %q", code, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("/readyz while full: %s", strings.TrimSpace(body))
	if v := w.metric("chatbuf_store_refusing"); v != 1 {
		t.Errorf("chatbuf_store_refusing = %v while full, want 1", v)
	}
	if v := w.metric(`chatbuf_store_refusals_total{kind="oom"}`); v < 1 {
		t.Errorf(`chatbuf_store_refusals_total{kind="oom"} = %v, want >= 1`, v)
	}
	// A flush works while Redis is full.
	flushAllConvs(t, nc, convs)

	// Room again: appends resume by themselves.
	if err := s.redis.Client(t).ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, w, http.StatusOK)
	seen := map[string]int{}
	for deadline := time.Now().Add(3 * time.Minute); len(seen) < len(want); {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages in batches after 3m", len(seen), len(want))
		}
		flushAllConvs(t, nc, convs)
		seen = batchContents(t, js)
	}
	for content, n := range seen {
		if !want[content] {
			t.Errorf("unexpected message %.20q", content)
		}
		if n > 1 {
			t.Errorf("message %.20q in %d batches", content, n)
		}
	}
	if info, err := js.Stream(ctx, "CHAT_DEAD"); err == nil {
		if st, err := info.Info(ctx); err == nil && st.State.Msgs > 0 {
			t.Errorf("%d valid messages dead-lettered", st.State.Msgs)
		}
	}
	if err := w.stop(30 * time.Second); err != nil {
		t.Errorf("worker on SIGTERM: %v", err)
	}
}

func readyzBody(w *workerProc) (int, string) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + w.metrics + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// flushAllConvs asks for a manual flush of conversations full-0..n-1; each
// must succeed (a busy lock is asked again).
func flushAllConvs(t *testing.T, nc *nats.Conn, n int) {
	t.Helper()
	for i := range n {
		subject := fmt.Sprintf("%s.flush.full-%d.d.a", prefix, i)
		for attempt := 0; ; attempt++ {
			msg, err := nc.Request(subject, nil, 10*time.Second)
			if err != nil {
				t.Fatalf("flush request %s: %v", subject, err)
			}
			var r struct {
				OK    bool   `json:"ok"`
				Error string `json:"error"`
			}
			if err := json.Unmarshal(msg.Data, &r); err != nil {
				t.Fatalf("flush reply %q: %v", msg.Data, err)
			}
			if r.OK {
				break
			}
			if r.Error != "busy" || attempt > 20 {
				t.Fatalf("flush %s: %s", subject, msg.Data)
			}
		}
	}
}

// batchContents counts each message content over the batches in
// CHAT_FLUSHED.
func batchContents(t *testing.T, js jetstream.JetStream) map[string]int {
	t.Helper()
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, "CHAT_FLUSHED", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for {
		b, err := cons.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range b.Messages() {
			got++
			var batch chat.Batch
			if err := json.Unmarshal(m.Data(), &batch); err != nil {
				t.Fatalf("batch is not JSON: %v", err)
			}
			for _, msg := range batch.Messages {
				var content string
				if err := json.Unmarshal(msg.Content, &content); err != nil {
					t.Fatalf("content %s: %v", msg.Content, err)
				}
				out[content]++
			}
		}
		if got == 0 {
			return out
		}
	}
}
