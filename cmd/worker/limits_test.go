package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/internal/natstest"
)

// A worker whose largest message cannot fit a batch on the server it
// connects to (max_payload 64 KiB, CHAT_MAX_MESSAGE_BYTES 64 KiB) refuses
// to run, naming the variables, their values and the limit.
func TestWorkerRefusesAMessageLimitTheServerCannotCarry(t *testing.T) {
	srv := natstest.BinaryWith(t, natstest.Options{Config: "max_payload: 65536\n"})
	cfg, err := loadConfig(map[string]string{"NATS_URL": srv.URL, "REDIS_ENABLED": "false", "METRICS_ADDR": "", "COMPLETION_ENABLED": "false"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := &lockedLog{}
	err = run(ctx, cfg, slog.New(slog.NewJSONHandler(out, nil)))
	if err == nil {
		t.Fatalf("run accepted CHAT_MAX_MESSAGE_BYTES=65536 on a server with max_payload 65536")
	}
	if ctx.Err() != nil {
		t.Fatalf("run returned only when stopped: %v", err)
	}
	for _, w := range []string{"CHAT_MAX_MESSAGE_BYTES=65536", "CHAT_BATCH_MAX_BYTES (unset: max_payload 65536 - 4096 = 61440)"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}

	// The same server carries a configuration that fits: run starts (and
	// stops when asked).
	cfg.MaxMessageBytes = 4096
	ctx2, stop := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- run(ctx2, cfg, slog.New(slog.NewJSONHandler(out, nil))) }()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), `"msg":"nats: batch ceiling"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no batch ceiling logged within a minute; log:\n%s", out.String())
		}
		select {
		case err := <-errc:
			t.Fatalf("run with CHAT_MAX_MESSAGE_BYTES=4096: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !strings.Contains(out.String(), `"chat_batch_max_bytes":61440`) {
		t.Errorf("batch ceiling not max_payload - 4096; log:\n%s", out.String())
	}
	stop()
	if err := <-errc; err != nil {
		t.Errorf("run after stop: %v", err)
	}
}

// The first connection decides the ceiling; a later server with a smaller
// max_payload makes the worker not ready, with the reason, until a server
// with room is back.
func TestBatchLimitsFollowReconnections(t *testing.T) {
	cfg, err := loadConfig(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	l := newBatchLimits(cfg, slog.New(slog.DiscardHandler))
	if err := l.ready(); err == nil {
		t.Errorf("ready before any connection")
	}
	l.connected(1 << 20)
	if got, err := l.wait(nil); err != nil || got != 1<<20-4096 {
		t.Fatalf("ceiling after the first connection = %d, %v", got, err)
	}
	if err := l.ready(); err != nil {
		t.Errorf("not ready on the first server: %v", err)
	}
	l.connected(512 * 1024)
	if err := l.ready(); err == nil || !strings.Contains(err.Error(), "max_payload 524288") || !strings.Contains(err.Error(), "CHAT_BATCH_MAX_BYTES") {
		t.Errorf("ready on a server with a smaller max_payload: %v", err)
	}
	l.connected(1 << 20)
	if err := l.ready(); err != nil {
		t.Errorf("not ready once a server with room is back: %v", err)
	}
}
