package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/internal/redistest"
)

// run serves until its context ends, then finishes the request in flight
// and returns nil (SIGTERM's path).
func TestRunShutsDownGracefully(t *testing.T) {
	ns := natstest.Embedded(t)
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(map[string]string{"NATS_URL": ns.URL, "CONTEXT_API_KEY": testKey,
		"GATEWAY_ADDR": fmt.Sprintf("127.0.0.1:%d", port), "GATEWAY_FLUSH_TIMEOUT": "30s"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, "the gateway to serve", func() bool {
		resp, err := http.Get(base + "/api/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	// A flush request a worker answers only after the shutdown began.
	nc := ns.Conn(t)
	asked := make(chan func(), 1)
	sub, err := nc.Subscribe("opencontext.chat.flush.>", func(m *nats.Msg) {
		asked <- func() { _ = m.Respond([]byte(`{"ok":true,"batches":0,"batch_ids":[]}`)) }
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	answer := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("POST", base+"/api/push/chat/flush", strings.NewReader(`{}`))
		req.Header.Set("X-API-Key", testKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answer <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answer <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	respond := <-asked
	cancel()
	waitFor(t, "the listener to close", func() bool {
		resp, err := http.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})
	select {
	case err := <-done:
		t.Fatalf("run returned %v with a request in flight", err)
	default:
	}
	respond()
	if got := <-answer; got != `200 {"code":0,"status":200,"message":"Chat buffer flushed successfully"}` {
		t.Errorf("request in flight during shutdown: %s", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v, want nil after a graceful shutdown", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("run did not return within 60s of the shutdown")
	}
}
