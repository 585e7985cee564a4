package completion

import (
	"encoding/json"
	"testing"
	"time"
)

func TestMemoryConformance(t *testing.T) {
	testConformance(t, func(t *testing.T, cfg Config) (Cache, error) { return NewMemory(cfg) })
}

// Users whose entries have all expired are forgotten by anyone's next Put,
// as their Redis keys would expire: memory stays bounded without reads.
func TestMemoryForgetsLapsedUsers(t *testing.T) {
	ctx := t.Context()
	clk := newFakeClock()
	m, err := NewMemory(Config{TTL: 10 * time.Second, PrecomputedTTL: 10 * time.Second, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob"} {
		if err := m.Put(ctx, u, "k", nil, "", 0); err != nil {
			t.Fatal(err)
		}
		if err := m.PutPrecomputed(ctx, u, "d", json.RawMessage(`1`)); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(10 * time.Second)
	if err := m.Put(ctx, "carol", "k", nil, "", 0); err != nil {
		t.Fatal(err)
	}
	if err := m.PutPrecomputed(ctx, "carol", "d", json.RawMessage(`1`)); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.users) != 1 || m.users["carol"] == nil || m.lapses.len() != 1 {
		t.Fatalf("users = %d, lapses = %d; want only carol", len(m.users), m.lapses.len())
	}
	if len(m.pre) != 1 || m.preExp.len() != 1 {
		t.Fatalf("precomputed = %d, %d; want 1", len(m.pre), m.preExp.len())
	}
}
