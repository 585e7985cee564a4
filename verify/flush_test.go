package verify

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/stream"
)

// startWorker runs a minimal in-memory worker on e: it consumes CHAT_IN,
// publishes size batches, and answers manual flushes, the first one of
// each conversation with "busy".
func startWorker(t *testing.T, e *env, bufferSize int) {
	t.Helper()
	var (
		mu      sync.Mutex
		buffers = map[chat.Conversation][]chat.Record{}
		tokens  = map[chat.Conversation]int64{}
		busy    = map[chat.Conversation]bool{}
	)
	flush := func(c chat.Conversation, reason chat.Trigger) string { // mu held
		tokens[c]++
		id := chat.BatchID(c, tokens[c])
		msg := &nats.Msg{Subject: e.cfg.Flushed(c), Header: nats.Header{},
			Data: chat.EncodeBatch(c, tokens[c], reason, time.Now(), buffers[c])}
		msg.Header.Set(jetstream.MsgIDHeader, id)
		if _, err := e.js.PublishMsg(t.Context(), msg); err != nil {
			t.Errorf("worker: publish batch: %v", err)
		}
		buffers[c] = nil
		return id
	}

	cons, err := e.js.Consumer(t.Context(), e.cfg.InStream, e.cfg.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		c, err := chat.ParseSubject(e.cfg.Prefix, stream.KindIn, m.Subject())
		if err != nil {
			t.Errorf("worker: %v", err)
			return
		}
		msg, err := chat.Decode(m.Data(), c, 0)
		if err != nil {
			t.Errorf("worker: %v", err)
			return
		}
		meta, err := m.Metadata()
		if err != nil {
			t.Errorf("worker: %v", err)
			return
		}
		r, err := chat.ParseRecord(chat.NewRecord(&msg, 0, meta.Sequence.Stream, false, time.Now()))
		if err != nil {
			t.Errorf("worker: %v", err)
			return
		}
		mu.Lock()
		buffers[c] = append(buffers[c], r)
		if len(buffers[c]) == bufferSize {
			flush(c, chat.TriggerSize)
		}
		mu.Unlock()
		if err := m.Ack(); err != nil {
			t.Errorf("worker: ack: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)

	sub, err := e.js.Conn().Subscribe(e.cfg.All(stream.KindFlush), func(m *nats.Msg) {
		c, err := chat.ParseSubject(e.cfg.Prefix, stream.KindFlush, m.Subject)
		if err != nil {
			t.Errorf("worker: %v", err)
			return
		}
		mu.Lock()
		reply := flushReply{OK: true, BatchIDs: []string{}}
		switch {
		case !busy[c]:
			busy[c] = true
			reply = flushReply{Error: "busy"}
		case len(buffers[c]) > 0:
			reply.BatchIDs = append(reply.BatchIDs, flush(c, chat.TriggerManual))
			reply.Batches = 1
		}
		mu.Unlock()
		data, err := json.Marshal(reply)
		if err != nil {
			t.Errorf("worker: %v", err)
			return
		}
		if err := m.Respond(data); err != nil {
			t.Errorf("worker: respond: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sub.Unsubscribe(); err != nil {
			t.Errorf("worker: unsubscribe: %v", err)
		}
	})
}

func TestCheckFlush(t *testing.T) {
	ignoreLatency := cmpopts.IgnoreFields(Latency{}, "P50MS", "P99MS", "MaxMS")
	tests := []struct {
		name   string
		worker bool
		want   Report
	}{{
		name:   "a worker drains and flushes the partial buffer",
		worker: true,
		want: Report{Published: 7, Delivered: 7, Batches: 4, Dead: map[string]int{},
			BatchesByReason: map[string]int{"size": 3, "manual": 1},
			Latency:         Latency{Count: 7}, SizeLatency: Latency{Count: 6},
			Flush: &FlushResult{Drained: true, Requested: 3, Batches: 1}},
	}, {
		name: "no worker: nothing drains, nothing answers",
		want: Report{Published: 7, Lost: 7, TimedOut: true, Dead: map[string]int{}, BatchesByReason: map[string]int{},
			Flush: &FlushResult{Pending: 7, Requested: 3, Failed: 3}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, 0)
			if tt.worker {
				startWorker(t, e, testBufferSize)
			}
			f := newFixture(t, e, 3)
			f.sendN(7, true)
			got := f.check(t.Context(), Options{BufferSize: testBufferSize, Flush: true})

			tt.want.Run = f.rec.Run()
			tt.want.LostSample = got.LostSample
			if got.Flush != nil && len(got.Flush.Errors) != tt.want.Flush.Failed {
				t.Errorf("flush errors %q, want %d", got.Flush.Errors, tt.want.Flush.Failed)
			}
			if diff := cmp.Diff(tt.want, *got, ignoreLatency, cmpopts.IgnoreFields(FlushResult{}, "Errors")); diff != "" {
				t.Errorf("report (-want +got):\n%s", diff)
			}
		})
	}
}
