package cache

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/internal/redistest"
)

func TestRedisConformance(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	var n atomic.Int64
	testConformance(t, func(t *testing.T) (Cache, func(time.Duration)) {
		// A prefix per subtest keeps them apart on the one server.
		return NewRedis(client, Config{Prefix: fmt.Sprintf("t%d:", n.Add(1))}), time.Sleep
	})
}

func TestRedisPrefix(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	tests := []struct {
		name    string
		prefix  string
		wantKey string
	}{
		{name: "default", prefix: "", wantKey: "opencontext:k"},
		{name: "custom", prefix: "app:", wantKey: "app:k"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			c := NewRedis(client, Config{Prefix: tt.prefix})
			must[bool](t)(c.Set(ctx, "k", tt.name, SetOptions{}))
			got, err := client.Get(ctx, tt.wantKey).Result()
			if err != nil || got != tt.name {
				t.Fatalf("raw GET %s = %q, %v; want %q", tt.wantKey, got, err, tt.name)
			}
			must[bool](t)(c.TryLock(ctx, "job", "me", time.Minute))
			if n := client.Exists(ctx, tt.wantKey[:len(tt.wantKey)-1]+"lock:job").Val(); n != 1 {
				t.Fatal("the lock is not stored under the prefix")
			}
		})
	}
}

func TestRedisUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	c := NewRedis(srv.Client(t), Config{})
	srv.Stop()
	_, err := c.Get(t.Context(), "k")
	wantErr(t, err, ErrUnavailable)
	if err := c.Ping(t.Context()); err == nil {
		t.Fatal("Ping of a stopped server succeeded")
	}
}
