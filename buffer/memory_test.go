package buffer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/clocktest"
)

// The memory store forgets idle conversations' dedupe keys, and then the
// conversations, once the dedupe window has passed: its maps do not grow
// with every conversation ever seen.
func TestMemoryForgetsIdleConversations(t *testing.T) {
	ctx := context.Background()
	clock := clocktest.New(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
	const window = time.Hour
	m := buffer.NewMemory(buffer.Config{DedupeWindow: window, Now: clock.Now})
	const n = 500
	for i := range n {
		c := chat.Conversation{User: fmt.Sprintf("u%d", i), Device: "d", Agent: "a"}
		it := item(c, uint64(i+1), fmt.Sprintf("m%d", i), clock.Now())
		if _, err := m.AppendBatch(ctx, []buffer.Item{it}); err != nil {
			t.Fatal(err)
		}
		b, err := m.Claim(ctx, c, 1, buffer.ClaimOptions{Max: 10, Min: 1})
		if err != nil || len(b.Records) != 1 {
			t.Fatalf("claim %s: %d records, %v", c, len(b.Records), err)
		}
		if _, err := m.Commit(ctx, c, 1, b.Token, uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if convs, keys := m.Size(); convs != n || keys != n {
		t.Fatalf("after %d flushed conversations: %d conversations, %d dedupe keys kept; want %d of each (within the window)", n, convs, keys, n)
	}
	// Within the window a key is still a duplicate.
	c0 := chat.Conversation{User: "u0", Device: "d", Agent: "a"}
	res, err := m.AppendBatch(ctx, []buffer.Item{item(c0, 1, "m0", clock.Now())})
	if err != nil || !res[0].Dup {
		t.Fatalf("republished within the window: %+v, %v; want a duplicate", res, err)
	}

	clock.Advance(window + time.Second)
	// A sweep (Due) alone, without appends, forgets them.
	if _, err := m.Due(ctx, clock.Now(), 10); err != nil {
		t.Fatal(err)
	}
	if convs, keys := m.Size(); convs != 0 || keys != 0 {
		t.Errorf("after the dedupe window: %d conversations, %d dedupe keys kept; want none", convs, keys)
	}
}
