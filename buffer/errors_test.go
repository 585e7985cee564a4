package buffer_test

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/internal/redistest"
)

// Replies from a real Redis, classified: only WRONGTYPE belongs to one
// conversation; everything else, including replies not recognised and no
// reply at all, concerns the store as a whole.
func TestErrorClassification(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	if err := rdb.Set(ctx, "str", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	wrongType := rdb.RPush(ctx, "str", "y").Err()
	unknown := rdb.Do(ctx, "NOSUCHCOMMAND").Err()
	noScript := rdb.EvalSha(ctx, "0000000000000000000000000000000000000000", nil).Err()
	_, dialErr := net.Dial("tcp", "127.0.0.1:1")
	tests := []struct {
		name        string
		err         error
		storeWide   bool
		kind        string
		unreachable bool
	}{
		{"WRONGTYPE", wrongType, false, "other", false},
		{"wrapped WRONGTYPE", fmt.Errorf("append: %w", wrongType), false, "other", false},
		{"unknown command", unknown, true, "other", false},
		{"NOSCRIPT", noScript, true, "noscript", false},
		{"no reply", dialErr, true, "unreachable", true},
		{"closed client", redis.ErrClosed, true, "unreachable", true},
		{"not replicated", fmt.Errorf("x: %w", buffer.ErrNotReplicated), true, "not_replicated", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatal("no error to classify")
			}
			if got := buffer.StoreWide(tt.err); got != tt.storeWide {
				t.Errorf("StoreWide(%v) = %v, want %v", tt.err, got, tt.storeWide)
			}
			if tt.storeWide {
				if got := buffer.RefusalKind(tt.err); got != tt.kind {
					t.Errorf("RefusalKind(%v) = %q, want %q", tt.err, got, tt.kind)
				}
			}
			if got := buffer.Unreachable(tt.err); got != tt.unreachable {
				t.Errorf("Unreachable(%v) = %v, want %v", tt.err, got, tt.unreachable)
			}
		})
	}
	if buffer.StoreWide(nil) || buffer.Unreachable(nil) {
		t.Error("nil classified as an error")
	}
}
