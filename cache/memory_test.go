package cache

import (
	"fmt"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/internal/clocktest"
)

// newFakeClock is a manual clock at a fixed start.
func newFakeClock() *clocktest.Clock {
	return clocktest.New(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
}

func newTestMemory(t *testing.T, cfg Config) (*Memory, *clocktest.Clock) {
	t.Helper()
	clk := newFakeClock()
	cfg.Now = clk.Now
	m := NewMemory(cfg)
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m, clk
}

func TestMemoryConformance(t *testing.T) {
	testConformance(t, func(t *testing.T) (Cache, func(time.Duration)) {
		m, clk := newTestMemory(t, Config{})
		return m, clk.Advance
	})
}

func (m *Memory) size() (keys, deadlines int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.data), len(m.exp.Items)
}

// Expired keys are reclaimed without anyone reading them.
func TestMemorySweepReclaimsUnreadKeys(t *testing.T) {
	ctx := t.Context()
	m, clk := newTestMemory(t, Config{SweepInterval: time.Hour})
	for i := range 100 {
		k := fmt.Sprint(i)
		switch i % 4 {
		case 0:
			must[bool](t)(m.Set(ctx, k, "v", SetOptions{TTL: time.Second}))
		case 1:
			must[int64](t)(m.RPush(ctx, k, "v"))
			must[bool](t)(m.Expire(ctx, k, time.Second))
		case 2:
			must[bool](t)(m.Set(ctx, k, "v", SetOptions{TTL: time.Hour}))
			must[bool](t)(m.Expire(ctx, k, time.Second)) // shortened: heap.Fix
		case 3:
			must[bool](t)(m.Set(ctx, k, "v", SetOptions{TTL: time.Second}))
			must[bool](t)(m.Set(ctx, k, "v", SetOptions{})) // TTL cleared
		}
	}
	if keys, deadlines := m.size(); keys != 100 || deadlines != 75 {
		t.Fatalf("before: %d keys, %d deadlines; want 100, 75", keys, deadlines)
	}
	clk.Advance(2 * time.Second)
	m.sweep()
	if keys, deadlines := m.size(); keys != 25 || deadlines != 0 {
		t.Fatalf("after sweep: %d keys, %d deadlines; want 25, 0", keys, deadlines)
	}
}

// The sweeper goroutine runs on its own.
func TestMemorySweeperRuns(t *testing.T) {
	m, clk := newTestMemory(t, Config{SweepInterval: time.Millisecond})
	must[bool](t)(m.Set(t.Context(), "k", "v", SetOptions{TTL: time.Second}))
	clk.Advance(2 * time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if keys, _ := m.size(); keys == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not reclaim the expired key")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSpan(t *testing.T) {
	tests := []struct {
		name           string
		n, start, stop int64
		wantLo, wantHi int64
		wantOK         bool
	}{
		{name: "all", n: 3, start: 0, stop: -1, wantLo: 0, wantHi: 3, wantOK: true},
		{name: "empty list", n: 0, start: 0, stop: -1},
		{name: "clamp", n: 3, start: -9, stop: 9, wantLo: 0, wantHi: 3, wantOK: true},
		{name: "start past end", n: 3, start: 3, stop: 5},
		{name: "stop before start", n: 3, start: 2, stop: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lo, hi, ok := span(tt.n, tt.start, tt.stop)
			if lo != tt.wantLo || hi != tt.wantHi || ok != tt.wantOK {
				t.Fatalf("span = %d, %d, %v; want %d, %d, %v", lo, hi, ok, tt.wantLo, tt.wantHi, tt.wantOK)
			}
		})
	}
}
