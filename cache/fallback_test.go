package cache

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/internal/redistest"
)

// While Redis answers, Fallback is a Redis cache like any other.
func TestFallbackConformance(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	var n atomic.Int64
	testConformance(t, func(t *testing.T) (Cache, func(time.Duration)) {
		cfg := Config{Prefix: fmt.Sprintf("f%d:", n.Add(1))}
		f := NewFallback(NewRedis(client, cfg), NewMemory(cfg), FallbackConfig{})
		t.Cleanup(func() {
			if f.Mode() != ModeRedis {
				t.Errorf("mode = %s while Redis was up", f.Mode())
			}
			if err := f.Close(); err != nil {
				t.Error(err)
			}
		})
		return f, time.Sleep
	})
}

// syncBuffer is a bytes.Buffer safe for the prober's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestFallbackSwitchesToMemoryAndBack(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	client := srv.Client(t)
	var logs syncBuffer
	modes := make(chan string, 10)
	f := NewFallback(NewRedis(client, Config{}), NewMemory(Config{}), FallbackConfig{
		ProbeBackoff:    10 * time.Millisecond,
		ProbeMaxBackoff: 50 * time.Millisecond,
		Logger:          slog.New(slog.NewTextHandler(&logs, nil)),
		OnModeChange:    func(mode string) { modes <- mode },
	})
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	})
	waitMode := func(want string) {
		t.Helper()
		select {
		case got := <-modes:
			if got != want {
				t.Fatalf("OnModeChange(%q), want %q", got, want)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("no switch to %s", want)
		}
		if f.Mode() != want {
			t.Fatalf("Mode() = %s, want %s", f.Mode(), want)
		}
	}

	must[bool](t)(f.Set(ctx, "k", "in redis", SetOptions{}))
	// Neither a miss nor a WRONGTYPE reply is an outage.
	_, err := f.Get(ctx, "absent")
	wantErr(t, err, ErrMiss)
	_, err = f.LPush(ctx, "k", "x")
	wantErr(t, err, ErrWrongType)
	if f.Mode() != ModeRedis || len(modes) != 0 {
		t.Fatalf("mode = %s after a miss and a WRONGTYPE, want redis", f.Mode())
	}

	srv.Stop()
	// The call that meets the outage succeeds, on memory.
	if ok, err := f.Set(ctx, "k", "in memory", SetOptions{}); err != nil || !ok {
		t.Fatalf("Set during the outage = %v, %v", ok, err)
	}
	waitMode(ModeMemory)
	if v := must[string](t)(f.Get(ctx, "k")); v != "in memory" {
		t.Fatalf("Get during the outage = %q", v)
	}
	_, err = f.Get(ctx, "absent")
	wantErr(t, err, ErrMiss)
	if err := f.Ping(ctx); err != nil {
		t.Fatalf("Ping in memory mode: %v", err)
	}
	if !strings.Contains(logs.String(), "using memory") {
		t.Fatalf("the switch to memory was not logged:\n%s", logs.String())
	}

	srv.Restart()
	waitMode(ModeRedis)
	if !strings.Contains(logs.String(), "redis is back") {
		t.Fatalf("the switch back was not logged:\n%s", logs.String())
	}
	// Writes go to Redis again, and the outage's memory copy is gone.
	must[bool](t)(f.Set(ctx, "after", "in redis", SetOptions{}))
	if v, err := client.Get(ctx, "opencontext:after").Result(); err != nil || v != "in redis" {
		t.Fatalf("raw GET after the switch back = %q, %v", v, err)
	}
	if v, err := f.Get(ctx, "k"); err == nil && v == "in memory" {
		t.Fatal("the outage's memory value is still served")
	}
}
