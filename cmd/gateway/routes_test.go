package main

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/completion"
	"github.com/opencontext/chatbuf/stream"
	"github.com/opencontext/chatbuf/worker"
)

// flushResponder answers flush requests on NATS as a worker does, with
// reply, and records the subjects asked.
func flushResponder(t *testing.T, e *testEnv, reply worker.FlushReply) *[]string {
	t.Helper()
	var (
		mu    sync.Mutex
		asked []string
	)
	sub, err := e.nc.Subscribe(stream.DefaultPrefix+".flush.>", func(m *nats.Msg) {
		mu.Lock()
		asked = append(asked, m.Subject)
		mu.Unlock()
		b, _ := json.Marshal(reply)
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return &asked
}

func TestFlushRoute(t *testing.T) {
	e := newEnv(t, nil)
	// No worker listening: 503.
	a := e.post(flushPath, `{"user_id":"u"}`)
	expect(t, a, 503, `{"code":503,"status":503,"message":"Chat buffer flush failed: no worker is listening on opencontext.chat.flush.u._._"}`)

	asked := flushResponder(t, e, worker.FlushReply{OK: true, Batches: 1, BatchIDs: []string{"u:_:_#1"}})
	expect(t, e.post(flushPath, `{}`), 200, `{"code":0,"status":200,"message":"Chat buffer flushed successfully"}`)
	expect(t, e.post(flushPath, `{"user_id":"a.b@c","device_id":"d 1","agent_id":"ü"}`), 200,
		`{"code":0,"status":200,"message":"Chat buffer flushed successfully"}`)
	want := []string{
		chat.Conversation{User: "_", Device: "_", Agent: "_"}.Subject(stream.DefaultPrefix, stream.KindFlush),
		chat.Conversation{User: "a.b@c", Device: "d 1", Agent: "ü"}.Subject(stream.DefaultPrefix, stream.KindFlush),
	}
	if strings.Join(*asked, " | ") != strings.Join(want, " | ") {
		t.Errorf("flush requests on %q, want %q", *asked, want)
	}
	expect(t, e.post(flushPath, `{"user_id":5}`), 422,
		`{"detail":[{"type":"string_type","loc":["body","user_id"],"msg":"Input should be a valid string","input":5}]}`)

	// flush_immediately with no message flushes the request's conversation.
	expect(t, e.post(msgsPath, `{"user_id":"z","messages":[],"flush_immediately":true}`), 200,
		`{"code":0,"status":200,"message":"Pushed 0 chat messages successfully","data":{"count":0}}`)
	if last := (*asked)[len(*asked)-1]; last != "opencontext.chat.flush.z._._" {
		t.Errorf("last flush request on %q, want the request's conversation", last)
	}
}

func TestFlushRouteWorkerFails(t *testing.T) {
	e := newEnv(t, nil)
	flushResponder(t, e, worker.FlushReply{Error: "busy"})
	expect(t, e.post(flushPath, `{"user_id":"u"}`), 503,
		`{"code":503,"status":503,"message":"Chat buffer flush failed: the worker could not flush u:_:_: busy"}`)
}

func TestCompletionRoutes(t *testing.T) {
	e := newEnv(t, nil)
	// No service: 503 in the completion shape.
	a := e.do("GET", "/api/completions/cache/stats", "")
	if a.status != 503 || string(a.body) != `{"success":false,"error":"completion service unavailable: no worker serves completion.stats"}` {
		t.Errorf("stats without service: %d %s", a.status, a.body)
	}

	cache, err := completion.NewMemory(completion.Config{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := completion.NewService(e.nc, cache, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := cache.Put(ctx, "default", "k1", []completion.Suggestion{{Text: "x"}}, "", 0.5); err != nil {
		t.Fatal(err)
	}
	if _, err := cache.Get(ctx, "default", "k1", ""); err != nil {
		t.Fatal(err)
	}

	a = e.do("GET", "/api/completions/cache/stats", "")
	var stats struct {
		Success   bool             `json:"success"`
		Data      completion.Stats `json:"data"`
		Timestamp string           `json:"timestamp"`
	}
	if err := json.Unmarshal(a.body, &stats); a.status != 200 || err != nil || !stats.Success || stats.Data.Hits != 1 || stats.Timestamp == "" {
		t.Errorf("stats: %d %s (%v)", a.status, a.body, err)
	}

	expect(t, e.post("/api/completions/precompute/42?content=hello+world", ""), 200,
		`{"success":true,"message":"Document 42 context precomputation completed"}`)
	v, err := cache.GetPrecomputed(ctx, "default", "42")
	if err != nil || string(v) != `{"document_id":42,"content":"hello world"}` {
		t.Errorf("precomputed value %s, %v", v, err)
	}
	expect(t, e.post("/api/completions/precompute/abc?content=x", ""), 422,
		`{"detail":[{"type":"int_parsing","loc":["path","document_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"abc"}]}`)
	expect(t, e.post("/api/completions/precompute/1", ""), 422,
		`{"detail":[{"type":"missing","loc":["query","content"],"msg":"Field required","input":null}]}`)

	expect(t, e.post("/api/completions/cache/clear", ""), 200, `{"success":true,"message":"Cache cleared"}`)
	if _, err := cache.Get(ctx, "default", "k1", ""); err == nil {
		t.Error("the cache still holds k1 after clear")
	}
}
