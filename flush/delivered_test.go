package flush_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/flush"
	"github.com/opencontext/chatbuf/locking"
)

// Each message of a published batch whose record keeps the time CHAT_IN
// stored it is reported once, with the time from then to the PubAck, by
// Flush and by FlushMany alike; a record without it (written before records
// kept it) is not.
func TestDeliveredReportsPublishToBatch(t *testing.T) {
	for _, many := range []bool{false, true} {
		name := map[bool]string{false: "Flush", true: "FlushMany"}[many]
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			store, srv := redisStore(t, nil)
			var mu sync.Mutex
			var got []time.Duration
			f := flush.New(store, locking.NewRedis(srv.Client(t), locking.Config{}), newSink(), flush.Config{BatchSize: 10,
				Hooks: flush.Hooks{Delivered: func(r chat.Trigger, d time.Duration) {
					mu.Lock()
					defer mu.Unlock()
					if r != chat.TriggerManual {
						t.Errorf("reason %s, want manual", r)
					}
					got = append(got, d)
				}}})
			now := time.Now()
			stored := []time.Time{now.Add(-3 * time.Second), now.Add(-2 * time.Second), {}}
			items := make([]buffer.Item, len(stored))
			for i, at := range stored {
				m := chat.Message{Role: "user", Content: []byte(`"hi"`)}
				items[i] = buffer.Item{Conv: alice, Key: m.DedupeKey(uint64(i+1), 1),
					Record: chat.NewRecordFrom(&m, 0, uint64(i+1), false, now, chat.Origin{Stored: at})}
			}
			if _, err := store.AppendBatch(ctx, items); err != nil {
				t.Fatal(err)
			}
			before := time.Now()
			var err error
			if many {
				_, _, err = f.FlushMany(ctx, []chat.Conversation{alice}, chat.TriggerManual)
			} else {
				_, err = f.Flush(ctx, alice, chat.TriggerManual)
			}
			if err != nil {
				t.Fatal(err)
			}
			elapsed := time.Since(before)
			if len(got) != 2 {
				t.Fatalf("reported %d messages (%v), want the 2 whose stored time is kept", len(got), got)
			}
			for i, d := range got {
				low := before.Sub(stored[i]).Truncate(time.Millisecond) - time.Millisecond
				if d < low || d > low+elapsed+2*time.Millisecond {
					t.Errorf("message %d: %v from publish to batch, want %v to %v", i+1, d, low, low+elapsed+2*time.Millisecond)
				}
			}
		})
	}
}
