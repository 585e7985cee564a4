package completion

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opencontext/chatbuf/internal/clocktest"
)

// newCache builds an empty cache for one subtest; cfg carries the subtest's
// fake clock. Implementations that share a backend must keep subtests apart.
type newCache func(t *testing.T, cfg Config) (Cache, error)

// newFakeClock is a manual clock at a fixed start.
func newFakeClock() *clocktest.Clock {
	return clocktest.New(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
}

// build makes a cache with a fake clock, failing the test on error.
func build(t *testing.T, nc newCache, cfg Config) (Cache, *clocktest.Clock) {
	t.Helper()
	clk := newFakeClock()
	cfg.Now = clk.Now
	c, err := nc(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

// testConformance is the one suite Redis and Memory must both pass.
func testConformance(t *testing.T, nc newCache) {
	t.Run("round trip", func(t *testing.T) { testRoundTrip(t, nc) })
	t.Run("context hash", func(t *testing.T) { testContextHash(t, nc) })
	t.Run("user isolation", func(t *testing.T) { testUserIsolation(t, nc) })
	t.Run("invalid arguments", func(t *testing.T) { testInvalidArguments(t, nc) })
	t.Run("invalid config", func(t *testing.T) { testInvalidConfig(t, nc) })
	t.Run("eviction", func(t *testing.T) { testEviction(t, nc) })
	t.Run("invalidate key", func(t *testing.T) { testInvalidateKey(t, nc) })
	t.Run("invalidate prefix", func(t *testing.T) { testInvalidatePrefix(t, nc) })
	t.Run("stats", func(t *testing.T) { testStats(t, nc) })
	t.Run("precomputed", func(t *testing.T) { testPrecomputed(t, nc) })
}

func sampleSuggestions() []Suggestion {
	return []Suggestion{
		{
			Text:        "func main() {",
			Kind:        "template",
			Score:       0.875,
			ContextUsed: []string{"doc:1", "chat:42"},
			Metadata: map[string]json.RawMessage{
				"big":    json.RawMessage(`12345678901234567890123`),
				"nested": json.RawMessage(`{"a":[1,2.5,null,true],"s":"\u00e9\"\\"}`),
			},
		},
		{Text: "日本語 ✓", Score: 0},
	}
}

func testRoundTrip(t *testing.T, nc newCache) {
	ctx := t.Context()
	c, _ := build(t, nc, Config{})
	want := sampleSuggestions()
	if err := c.Put(ctx, "alice", "k", want, "h", 0.5); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, "alice", "k", "h")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Get (-want +got):\n%s", diff)
	}
	if err := c.Put(ctx, "alice", "empty", nil, "", 0); err != nil {
		t.Fatal(err)
	}
	got, err = c.Get(ctx, "alice", "empty", "")
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Get of nil suggestions = %#v, %v; want an empty slice", got, err)
	}
	if _, err := c.Get(ctx, "alice", "absent", ""); !errors.Is(err, ErrMiss) {
		t.Fatalf("Get of absent = %v, want ErrMiss", err)
	}
}

func testContextHash(t *testing.T, nc newCache) {
	ctx := t.Context()
	c, _ := build(t, nc, Config{})
	if err := c.Put(ctx, "alice", "k", sampleSuggestions(), "h1", 0.5); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		hash    string
		wantHit bool
	}{
		{"same hash", "h1", true},
		{"other hash", "h2", false},
		{"no hash matches any", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Get(ctx, "alice", "k", tt.hash)
			if hit := err == nil; hit != tt.wantHit || (err != nil && !errors.Is(err, ErrMiss)) {
				t.Fatalf("Get with hash %q = %v; want hit %v", tt.hash, err, tt.wantHit)
			}
		})
	}
}

func testUserIsolation(t *testing.T, nc newCache) {
	ctx := t.Context()
	c, _ := build(t, nc, Config{})
	puts := []struct{ user, key, text string }{
		{"alice", "k", "alice's"},
		{"a:b", "c", "a:b's c"},    // must not collide with user "a", key "b:c"
		{"a", "b:c", "a's b:c"},    //
		{"{x}", "k", "{x}'s"},      // a user cannot forge the hash tag
		{"%7Bx%7D", "k", "%7B's"},  // nor collide through escapes
		{"bob%3Aeve", "k", "bob%"}, //
	}
	for _, p := range puts {
		if err := c.Put(ctx, p.user, p.key, []Suggestion{{Text: p.text}}, "", 1); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range puts {
		got, err := c.Get(ctx, p.user, p.key, "")
		if err != nil || len(got) != 1 || got[0].Text != p.text {
			t.Fatalf("Get(%q, %q) = %v, %v; want %q", p.user, p.key, got, err, p.text)
		}
	}
	if _, err := c.Get(ctx, "bob", "k", ""); !errors.Is(err, ErrMiss) {
		t.Fatalf("bob read alice's key: %v", err)
	}
	if _, err := c.Get(ctx, "bob:eve", "k", ""); !errors.Is(err, ErrMiss) {
		t.Fatalf("bob:eve read bob%%3Aeve's key: %v", err)
	}
	if n, err := c.InvalidatePrefix(ctx, "bob", ""); err != nil || n != 0 {
		t.Fatalf("bob's invalidate-all removed %d, %v", n, err)
	}
	if _, err := c.Get(ctx, "alice", "k", ""); err != nil {
		t.Fatalf("alice's key lost: %v", err)
	}
}

func testInvalidArguments(t *testing.T, nc newCache) {
	ctx := t.Context()
	c, _ := build(t, nc, Config{})
	tests := []struct {
		name string
		err  error
	}{
		{"get without user", func() error { _, err := c.Get(ctx, "", "k", ""); return err }()},
		{"get without key", func() error { _, err := c.Get(ctx, "u", "", ""); return err }()},
		{"put without user", c.Put(ctx, "", "k", nil, "", 0)},
		{"put NaN confidence", c.Put(ctx, "u", "k", nil, "", math.NaN())},
		{"put infinite confidence", c.Put(ctx, "u", "k", nil, "", math.Inf(1))},
		{"invalidate without key", func() error { _, err := c.Invalidate(ctx, "u", ""); return err }()},
		{"invalidate prefix without user", func() error { _, err := c.InvalidatePrefix(ctx, "", "p"); return err }()},
		{"precompute bad JSON", c.PutPrecomputed(ctx, "u", "d", json.RawMessage(`{"a":`))},
		{"precompute without doc", c.PutPrecomputed(ctx, "u", "", json.RawMessage(`1`))},
		{"get precomputed without user", func() error { _, err := c.GetPrecomputed(ctx, "", "d"); return err }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, ErrInvalid) {
				t.Fatalf("error = %v, want ErrInvalid", tt.err)
			}
		})
	}
}

func testInvalidConfig(t *testing.T, nc newCache) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"unknown strategy", Config{Strategy: "fifo"}},
		{"negative size", Config{MaxSize: -1}},
		{"negative ttl", Config{TTL: -time.Second}},
		{"sub-millisecond ttl", Config{TTL: time.Microsecond}},
		{"brace in prefix", Config{Prefix: "app{1}:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := nc(t, tt.cfg); !errors.Is(err, ErrInvalid) {
				t.Fatalf("constructor error = %v, want ErrInvalid", err)
			}
		})
	}
}

// step is one action of an eviction scenario. Every put and get first moves
// the clock on by a second, so that accesses are ordered.
type step struct {
	put     string
	conf    float64
	get     string
	times   int // reads for get; default 1
	advance time.Duration
}

func testEviction(t *testing.T, nc newCache) {
	tests := []struct {
		name          string
		cfg           Config
		steps         []step
		wantPresent   []string
		wantAbsent    []string
		wantEvictions int64
	}{
		{
			name:        "lru evicts the least recently used",
			cfg:         Config{Strategy: StrategyLRU, MaxSize: 3},
			steps:       []step{{put: "a"}, {put: "b"}, {put: "c"}, {get: "a"}, {put: "d"}},
			wantPresent: []string{"a", "c", "d"}, wantAbsent: []string{"b"}, wantEvictions: 1,
		},
		{
			name:        "lru never expires",
			cfg:         Config{Strategy: StrategyLRU, TTL: time.Second},
			steps:       []step{{put: "a"}, {advance: 1000 * time.Hour}},
			wantPresent: []string{"a"},
		},
		{
			name:        "overwriting does not evict",
			cfg:         Config{Strategy: StrategyLRU, MaxSize: 2},
			steps:       []step{{put: "a"}, {put: "b"}, {put: "a"}},
			wantPresent: []string{"a", "b"},
		},
		{
			name:        "hybrid evicts the least recently used",
			cfg:         Config{Strategy: StrategyHybrid, MaxSize: 3},
			steps:       []step{{put: "a"}, {put: "b"}, {put: "c"}, {get: "a"}, {put: "d"}},
			wantPresent: []string{"a", "c", "d"}, wantAbsent: []string{"b"}, wantEvictions: 1,
		},
		{
			name:        "hybrid expires after ttl, reads or not",
			cfg:         Config{Strategy: StrategyHybrid, TTL: 10 * time.Second},
			steps:       []step{{put: "a"}, {get: "a"}, {advance: 8 * time.Second}, {put: "b"}},
			wantPresent: []string{"b"}, wantAbsent: []string{"a"},
		},
		{
			name:        "ttl expires after ttl",
			cfg:         Config{Strategy: StrategyTTL, TTL: 10 * time.Second},
			steps:       []step{{put: "a"}, {put: "b"}, {advance: 8 * time.Second}},
			wantPresent: []string{"b"}, wantAbsent: []string{"a"},
		},
		{
			name: "ttl evicts the lowest confidence",
			cfg:  Config{Strategy: StrategyTTL, MaxSize: 3},
			steps: []step{
				{put: "a", conf: 0.9}, {put: "b", conf: 0.1}, {put: "c", conf: 0.5}, {get: "b"},
				{put: "d", conf: 0.7},  // evicts b, read or not
				{put: "e", conf: 0.05}, // evicts c: the entry just put stays
			},
			wantPresent: []string{"a", "d", "e"}, wantAbsent: []string{"b", "c"}, wantEvictions: 2,
		},
		{
			name:        "the entry just put is never evicted",
			cfg:         Config{Strategy: StrategyTTL, MaxSize: 1},
			steps:       []step{{put: "a", conf: 0.9}, {put: "b", conf: 0.1}},
			wantPresent: []string{"b"}, wantAbsent: []string{"a"}, wantEvictions: 1,
		},
		{
			name: "a hot key survives one eviction round",
			cfg:  Config{Strategy: StrategyLRU, MaxSize: 2, HotThreshold: 2},
			steps: []step{
				{put: "a"}, {put: "b"}, {get: "a", times: 3}, {get: "b"},
				{put: "c"}, // a is least recent but hot: spared, b goes
			},
			wantPresent: []string{"a", "c"}, wantAbsent: []string{"b"}, wantEvictions: 1,
		},
		{
			name: "the hot mark is spent when spared",
			cfg:  Config{Strategy: StrategyLRU, MaxSize: 2, HotThreshold: 2},
			steps: []step{
				{put: "a"}, {put: "b"}, {get: "a", times: 3}, {get: "b"},
				{put: "c"}, // spares a
				{put: "d"}, // a is no longer hot
			},
			wantPresent: []string{"c", "d"}, wantAbsent: []string{"a", "b"}, wantEvictions: 2,
		},
		{
			name: "reads up to the threshold do not make a key hot",
			cfg:  Config{Strategy: StrategyLRU, MaxSize: 2, HotThreshold: 2},
			steps: []step{
				{put: "a"}, {put: "b"}, {get: "a", times: 2}, {get: "b"}, {put: "c"},
			},
			wantPresent: []string{"b", "c"}, wantAbsent: []string{"a"}, wantEvictions: 1,
		},
		{
			name: "hot keys are spared in confidence order too",
			cfg:  Config{Strategy: StrategyTTL, MaxSize: 2, HotThreshold: 2},
			steps: []step{
				{put: "a", conf: 0.1}, {put: "b", conf: 0.5}, {get: "a", times: 3}, {put: "c", conf: 0.9},
			},
			wantPresent: []string{"a", "c"}, wantAbsent: []string{"b"}, wantEvictions: 1,
		},
		{
			name: "when every key is hot, eviction still ends",
			cfg:  Config{Strategy: StrategyLRU, MaxSize: 2, HotThreshold: 1},
			steps: []step{
				{put: "a"}, {put: "b"}, {get: "a", times: 2}, {get: "b", times: 2}, {put: "c"},
			},
			wantPresent: []string{"b", "c"}, wantAbsent: []string{"a"}, wantEvictions: 1,
		},
		{
			name: "at most maxHotSpares hot keys are spared per put",
			cfg:  Config{Strategy: StrategyLRU, MaxSize: 10, HotThreshold: 1},
			steps: func() []step {
				var s []step
				keys := []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"}
				for _, k := range keys {
					s = append(s, step{put: k})
				}
				for _, k := range keys {
					s = append(s, step{get: k, times: 2})
				}
				return append(s, step{put: "new"}) // spares k0..k7, evicts k8
			}(),
			wantPresent:   []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k9", "new"},
			wantAbsent:    []string{"k8"},
			wantEvictions: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			c, clk := build(t, nc, tt.cfg)
			for _, s := range tt.steps {
				switch {
				case s.put != "":
					clk.Advance(time.Second)
					if err := c.Put(ctx, "u", s.put, []Suggestion{{Text: s.put}}, "", s.conf); err != nil {
						t.Fatal(err)
					}
				case s.get != "":
					for range max(s.times, 1) {
						clk.Advance(time.Second)
						if _, err := c.Get(ctx, "u", s.get, ""); err != nil {
							t.Fatalf("Get(%s): %v", s.get, err)
						}
					}
				default:
					clk.Advance(s.advance)
				}
			}
			st, err := c.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Evictions != tt.wantEvictions {
				t.Errorf("evictions = %d, want %d", st.Evictions, tt.wantEvictions)
			}
			clk.Advance(time.Second)
			var present, absent []string
			for _, k := range slices.Concat(tt.wantPresent, tt.wantAbsent) {
				_, err := c.Get(ctx, "u", k, "")
				switch {
				case err == nil:
					present = append(present, k)
				case errors.Is(err, ErrMiss):
					absent = append(absent, k)
				default:
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(tt.wantPresent, present); diff != "" {
				t.Errorf("present (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantAbsent, absent); diff != "" {
				t.Errorf("absent (-want +got):\n%s", diff)
			}
		})
	}
}

func testInvalidateKey(t *testing.T, nc newCache) {
	ctx := t.Context()
	c, _ := build(t, nc, Config{})
	for _, k := range []string{"a", "ab", "a*"} {
		if err := c.Put(ctx, "u", k, nil, "", 0); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		key  string
		want int
	}{{"a", 1}, {"a", 0}, {"zzz", 0}, {"a*", 1}}
	for _, tt := range tests {
		if n, err := c.Invalidate(ctx, "u", tt.key); err != nil || n != tt.want {
			t.Fatalf("Invalidate(%q) = %d, %v; want %d", tt.key, n, err, tt.want)
		}
	}
	if _, err := c.Get(ctx, "u", "ab", ""); err != nil {
		t.Fatalf("Invalidate(a) removed ab: %v", err)
	}
	// The key can be put again, and counts as new.
	if err := c.Put(ctx, "u", "a", nil, "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "u", "a", ""); err != nil {
		t.Fatal(err)
	}
}

func testInvalidatePrefix(t *testing.T, nc newCache) {
	keys := []string{
		"user*1", "user*", "user?2", "user[3]", "user[", "userX", "user", "use",
		"user:9", "user%3A9", "{user}", "u\xff", "u\xff\xff", "u\xffa", "v",
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"user*", []string{"user*", "user*1"}},
		{"user?", []string{"user?2"}},
		{"user[", []string{"user[", "user[3]"}},
		{"user:", []string{"user:9"}},
		{"user%", []string{"user%3A9"}},
		{"{", []string{"{user}"}},
		{"u\xff", []string{"u\xff", "u\xff\xff", "u\xffa"}},
		{"*", nil},
		{"user", []string{"user", "user%3A9", "user*", "user*1", "user:9", "user?2", "userX", "user[", "user[3]"}},
		{"", keys},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			ctx := t.Context()
			c, _ := build(t, nc, Config{})
			for _, k := range keys {
				for _, u := range []string{"alice", "bob"} {
					if err := c.Put(ctx, u, k, []Suggestion{{Text: k}}, "", 0); err != nil {
						t.Fatal(err)
					}
				}
			}
			n, err := c.InvalidatePrefix(ctx, "alice", tt.prefix)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(tt.want) {
				t.Errorf("removed %d, want %d", n, len(tt.want))
			}
			var gone []string
			for _, k := range keys {
				if _, err := c.Get(ctx, "alice", k, ""); errors.Is(err, ErrMiss) {
					gone = append(gone, k)
				}
				if _, err := c.Get(ctx, "bob", k, ""); err != nil {
					t.Fatalf("bob's %q: %v", k, err)
				}
			}
			slices.Sort(gone)
			want := slices.Sorted(slices.Values(tt.want))
			if diff := cmp.Diff(want, gone); diff != "" {
				t.Fatalf("removed keys (-want +got):\n%s", diff)
			}
		})
	}
}

func testStats(t *testing.T, nc newCache) {
	ctx := t.Context()
	c, _ := build(t, nc, Config{})
	if got, err := c.Stats(ctx); err != nil || got != (Stats{}) {
		t.Fatalf("Stats of a fresh cache = %+v, %v", got, err)
	}
	if err := c.Put(ctx, "u", "k", nil, "h", 0); err != nil {
		t.Fatal(err)
	}
	for _, g := range []struct{ key, hash string }{{"k", "h"}, {"absent", ""}, {"k", "other"}, {"k", ""}} {
		if _, err := c.Get(ctx, "u", g.key, g.hash); err != nil && !errors.Is(err, ErrMiss) {
			t.Fatal(err)
		}
	}
	got, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{TotalRequests: 4, Hits: 2, Misses: 2, HitRate: 0.5}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Stats (-want +got):\n%s", diff)
	}
}

func testPrecomputed(t *testing.T, nc newCache) {
	ctx := t.Context()
	c, clk := build(t, nc, Config{PrecomputedTTL: time.Minute})
	want := json.RawMessage(`{"summary":"x","n":12345678901234567890}`)
	if err := c.PutPrecomputed(ctx, "alice", "doc:1", want); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetPrecomputed(ctx, "alice", "doc:1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Fatalf("GetPrecomputed (-want +got):\n%s", diff)
	}
	if _, err := c.GetPrecomputed(ctx, "bob", "doc:1"); !errors.Is(err, ErrMiss) {
		t.Fatalf("bob read alice's precomputed context: %v", err)
	}
	clk.Advance(59 * time.Second)
	if _, err := c.GetPrecomputed(ctx, "alice", "doc:1"); err != nil {
		t.Fatalf("expired early: %v", err)
	}
	clk.Advance(time.Second)
	if _, err := c.GetPrecomputed(ctx, "alice", "doc:1"); !errors.Is(err, ErrMiss) {
		t.Fatalf("GetPrecomputed after the TTL = %v, want ErrMiss", err)
	}
}
