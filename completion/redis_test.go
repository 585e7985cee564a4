package completion

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/internal/redistest"
)

// redisCaches returns a newCache that gives every subtest its own prefix
// (hence its own keys and stats) on one redis-server.
func redisCaches(t *testing.T, client *redis.Client) newCache {
	var n atomic.Int64
	return func(t *testing.T, cfg Config) (Cache, error) {
		if cfg.Prefix == "" {
			cfg.Prefix = fmt.Sprintf("t%d:", n.Add(1))
		}
		return NewRedis(client, cfg)
	}
}

func TestRedisConformance(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	if err := client.ConfigResetStat(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	testConformance(t, redisCaches(t, client))

	// Nothing in the whole suite walked the keyspace.
	info, err := client.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"cmdstat_keys:", "cmdstat_scan:", "cmdstat_zscan:", "cmdstat_hscan:", "cmdstat_sscan:"} {
		if strings.Contains(info, cmd) {
			t.Errorf("the suite ran %s\n%s", strings.TrimSuffix(cmd, ":"), info)
		}
	}
	if !strings.Contains(info, "cmdstat_evalsha:") {
		t.Errorf("no EVALSHA in the command stats: is INFO commandstats working?\n%s", info)
	}
}

func TestRedisKeyLayout(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	tests := []struct {
		name    string
		cfg     Config
		wantTTL bool // keys carry a TTL of at most Config.TTL
	}{
		{name: "hybrid", cfg: Config{TTL: time.Minute}, wantTTL: true},
		{name: "ttl", cfg: Config{Strategy: StrategyTTL, TTL: time.Minute}, wantTTL: true},
		{name: "lru", cfg: Config{Strategy: StrategyLRU, TTL: time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			if err := client.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			c, err := NewRedis(client, tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Put(ctx, "al:ice", "k{1}", nil, "", 0.5); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Get(ctx, "al:ice", "k{1}", ""); err != nil {
				t.Fatal(err)
			}
			if err := c.PutPrecomputed(ctx, "al:ice", "d", []byte(`1`)); err != nil {
				t.Fatal(err)
			}
			user := []string{
				"opencontext:completion:cache:{al%3Aice}:k%7B1%7D",
				"opencontext:completion:access_order:{al%3Aice}",
				"opencontext:completion:hot_keys:{al%3Aice}",
				"opencontext:completion:confidence_order:{al%3Aice}",
				"opencontext:completion:expiry_order:{al%3Aice}",
				"opencontext:completion:key_index:{al%3Aice}",
			}
			if !tt.wantTTL {
				user = append(user[:4], user[5]) // lru keeps no expiry order
			}
			want := append(append([]string{}, user...),
				"opencontext:completion:precomputed:{al%3Aice}:d",
				"opencontext:completion:stats:total_requests",
				"opencontext:completion:stats:hits",
			)
			got, err := client.Keys(ctx, "*").Result() // test only: inspect the layout
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
				t.Fatalf("keys (-want +got):\n%s", diff)
			}
			for _, k := range user {
				d := client.PTTL(ctx, k).Val()
				if tt.wantTTL && (d <= 0 || d > time.Minute) {
					t.Errorf("PTTL %s = %v, want in (0, 1m]", k, d)
				}
				if !tt.wantTTL && d != -1 {
					t.Errorf("PTTL %s = %v, want none", k, d)
				}
			}
			if d := client.PTTL(ctx, "opencontext:completion:precomputed:{al%3Aice}:d").Val(); d <= 59*time.Minute || d > time.Hour {
				t.Errorf("precomputed PTTL = %v, want about 1h", d)
			}
		})
	}
}

// Two instances on one Redis serve each other's entries and share stats.
func TestRedisInstancesShareEntriesAndStats(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	a, err := NewRedis(srv.Client(t), Config{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewRedis(srv.Client(t), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Put(ctx, "alice", "k", sampleSuggestions(), "", 0.5); err != nil {
		t.Fatal(err)
	}
	got, err := b.Get(ctx, "alice", "k", "")
	if err != nil {
		t.Fatalf("b does not see a's entry: %v", err)
	}
	if diff := cmp.Diff(sampleSuggestions(), got); diff != "" {
		t.Fatalf("b's Get (-want +got):\n%s", diff)
	}
	if _, err := a.Get(ctx, "bob", "k", ""); err == nil {
		t.Fatal("bob got alice's entry")
	}
	want := Stats{TotalRequests: 2, Hits: 1, Misses: 1, HitRate: 0.5}
	for name, c := range map[string]*Redis{"a": a, "b": b} {
		st, err := c.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, st); diff != "" {
			t.Errorf("%s.Stats (-want +got):\n%s", name, diff)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	srv := redistest.Start(b)
	c, err := NewRedis(srv.Client(b), Config{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	for i := range 100 {
		if err := c.Put(ctx, "alice", fmt.Sprint(i), sampleSuggestions(), "h", 0.5); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.Get(ctx, "alice", fmt.Sprint(i%100), "h"); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkPut puts into a full cache: every Put also evicts one entry.
func BenchmarkPut(b *testing.B) {
	srv := redistest.Start(b)
	c, err := NewRedis(srv.Client(b), Config{MaxSize: 1000})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	s := sampleSuggestions()
	for i := range 1000 {
		if err := c.Put(ctx, "alice", fmt.Sprint(i), s, "h", 0.5); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 1000
	for b.Loop() {
		if err := c.Put(ctx, "alice", fmt.Sprint(i), s, "h", 0.5); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
