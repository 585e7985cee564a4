package verify

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/opencontext/chatbuf/chat"
)

const testBufferSize = 2

func TestCheck(t *testing.T) {
	// A short duplicate window lets a test republish a batch under its id.
	e := newEnv(t, 100*time.Millisecond)
	manual, size, age := chat.TriggerManual, chat.TriggerSize, chat.TriggerAge

	tests := []struct {
		name  string
		ok    bool // Report.OK(): the run kept the guarantees
		convs int
		build func(f *fixture)
		want  func(f *fixture) Report
	}{{
		name:  "good batches, with and without message_id, another run ignored",
		ok:    true,
		convs: 2,
		build: func(f *fixture) {
			for n := range 6 {
				f.send(n%2, n%2 == 0) // conversation 1 without message_id
			}
			f.batch(0, 1, size, 0, 2)
			f.batch(1, 7, size, 1, 3)
			f.batch(0, 2, manual, 4)
			f.batch(1, 9, age, 5)

			other := newFixture(f.t, f.e, 1)
			other.sendN(3, true)
			other.batch(0, 1, size, 0, 1)
			other.batch(0, 1, size, 2) // malformed, and not of this run
		},
		want: func(f *fixture) Report {
			return Report{Published: 6, Delivered: 6, Batches: 4,
				BatchesByReason: map[string]int{"size": 2, "manual": 1, "age": 1},
				Latency:         Latency{Count: 6}, SizeLatency: Latency{Count: 4}}
		},
	}, {
		name:  "a lost message",
		ok:    false,
		convs: 1,
		build: func(f *fixture) {
			f.sendN(3, true)
			f.batch(0, 1, size, 0, 1)
		},
		want: func(f *fixture) Report {
			return Report{Published: 3, Delivered: 2, Lost: 1, Batches: 1,
				BatchesByReason: map[string]int{"size": 1},
				Latency:         Latency{Count: 2}, SizeLatency: Latency{Count: 2},
				LostSample: []string{f.rec.Marker(2) + " in " + f.convs[0].Tag()}, TimedOut: true}
		},
	}, {
		name:  "a message in two batch ids",
		ok:    false,
		convs: 1,
		build: func(f *fixture) {
			f.sendN(2, true)
			f.batch(0, 1, manual, 0, 1)
			f.batch(0, 2, manual, 1)
		},
		want: func(f *fixture) Report {
			return Report{Published: 2, Delivered: 2, Duplicated: 1, Batches: 2,
				BatchesByReason: map[string]int{"manual": 2}, Latency: Latency{Count: 2}}
		},
	}, {
		name:  "a message in another conversation's batch",
		ok:    false,
		convs: 2,
		build: func(f *fixture) {
			f.sendN(2, true)
			f.batch(0, 1, manual, 0, 1)
		},
		want: func(f *fixture) Report {
			return Report{Published: 2, Delivered: 2, Misplaced: 1, Batches: 1,
				BatchesByReason: map[string]int{"manual": 1}, Latency: Latency{Count: 2}}
		},
	}, {
		name:  "a malformed batch",
		ok:    false,
		convs: 1,
		build: func(f *fixture) {
			f.sendN(2, true)
			data := edit(f.t, f.encode(0, 1, manual, 0, 1), func(b map[string]any) {
				b["source"] = "x"
				b["object_id"] = "other"
				b["content_format"] = "md"
				b["device_id"] = "_"
				b["user_id"] = "someone"
				b["message_count"] = 3
				b["roles"] = []string{"user", "assistant"}
				b["create_time"] = "2026-01-02T03:04:05+02:00"
				delete(b["messages"].([]any)[1].(map[string]any), "received_at")
				delete(b["messages"].([]any)[1].(map[string]any), "message_id")
			})
			f.publish(0, "wrong", data)
		},
		want: func(f *fixture) Report {
			where := fmt.Sprintf("batch %q (stream seq %d): ", chat.BatchID(f.convs[0], 1), f.batchSeqs[0])
			return Report{Published: 2, Delivered: 2, Batches: 1, Malformed: 1,
				BatchesByReason: map[string]int{"manual": 1}, Latency: Latency{Count: 2},
				Problems: []string{
					where + `Nats-Msg-Id "wrong" differs from batch_id`,
					where + `source "x", want "chat_log"`,
					where + `object_id "other" differs from batch_id`,
					where + `content_format "md", want "text"`,
					where + `device_id is "_", want null for an id not given`,
					where + fmt.Sprintf("ids %q/\"_\"/\"a\" differ from the subject's %q/\"d\"/\"a\"", "someone", f.convs[0].User),
					where + "message_count 3, but 2 messages",
					where + `roles ["user" "assistant"], want ["assistant" "user"]`,
					where + fmt.Sprintf("additional_info %+v differs from the batch's own fields", chat.AdditionalInfo{MessageCount: 2,
						Roles: []string{"assistant", "user"}, BatchID: chat.BatchID(f.convs[0], 1), Reason: manual, FencingToken: 1}),
					where + fmt.Sprintf("content_text[1] differs from message seq %d", f.sent[1].Seq),
					where + "create_time 2026-01-02T03:04:05+02:00 is not in UTC",
					where + fmt.Sprintf("message seq %d: received_at is missing", f.sent[1].Seq),
					where + fmt.Sprintf("message %s: message_id \"\", published with %q", f.rec.Marker(1), f.sent[1].MessageID),
				}}
		},
	}, {
		name:  "batch sizes against the buffer size",
		ok:    false,
		convs: 1,
		build: func(f *fixture) {
			f.sendN(4, true)
			f.batch(0, 1, size, 0)
			f.batch(0, 2, manual, 1, 2, 3)
		},
		want: func(f *fixture) Report {
			return Report{Published: 4, Delivered: 4, Batches: 2, Malformed: 2,
				BatchesByReason: map[string]int{"size": 1, "manual": 1},
				Latency:         Latency{Count: 4}, SizeLatency: Latency{Count: 1},
				Problems: []string{
					fmt.Sprintf("batch %q (stream seq %d): size batch of 1 messages, want exactly 2", chat.BatchID(f.convs[0], 1), f.batchSeqs[0]),
					fmt.Sprintf("batch %q (stream seq %d): 3 messages, more than the buffer size 2", chat.BatchID(f.convs[0], 2), f.batchSeqs[1]),
				}}
		},
	}, {
		name:  "a batch redelivered under its id",
		ok:    true,
		convs: 1,
		build: func(f *fixture) {
			f.sendN(2, true)
			data := f.batch(0, 1, manual, 0, 1)
			f.publish(0, chat.BatchID(f.convs[0], 1), data)
		},
		want: func(f *fixture) Report {
			return Report{Published: 2, Delivered: 2, Batches: 1, RedeliveredBatches: 1,
				BatchesByReason: map[string]int{"manual": 1}, Latency: Latency{Count: 2}}
		},
	}, {
		name:  "a batch id reused by a different batch",
		ok:    false,
		convs: 1,
		build: func(f *fixture) {
			f.sendN(2, true)
			f.batch(0, 1, manual, 0)
			f.publish(0, chat.BatchID(f.convs[0], 1), f.encode(0, 1, manual, 1))
		},
		want: func(f *fixture) Report {
			id := chat.BatchID(f.convs[0], 1)
			return Report{Published: 2, Delivered: 2, Batches: 2, Malformed: 1,
				BatchesByReason: map[string]int{"manual": 2}, Latency: Latency{Count: 2},
				Problems: []string{
					fmt.Sprintf("batch %q (stream seq %d): batch_id already used by a different batch", id, f.batchSeqs[1]),
					fmt.Sprintf("batch %q (stream seq %d): fencing_token 1 not above 1 of an earlier batch of the conversation", id, f.batchSeqs[1]),
				}}
		},
	}, {
		name:  "fencing token going back",
		ok:    false,
		convs: 1,
		build: func(f *fixture) {
			f.sendN(2, true)
			f.batch(0, 5, manual, 0)
			f.batch(0, 4, manual, 1)
		},
		want: func(f *fixture) Report {
			return Report{Published: 2, Delivered: 2, Batches: 2, Malformed: 1,
				BatchesByReason: map[string]int{"manual": 2}, Latency: Latency{Count: 2},
				Problems: []string{fmt.Sprintf("batch %q (stream seq %d): fencing_token 4 not above 5 of an earlier batch of the conversation",
					chat.BatchID(f.convs[0], 4), f.batchSeqs[1])}}
		},
	}, {
		name:  "order across batches and within a batch",
		ok:    false,
		convs: 1,
		build: func(f *fixture) {
			f.sendN(6, true)
			f.batch(0, 1, manual, 1, 2)
			f.batch(0, 2, manual, 0, 3) // 2 -> 0 goes back
			f.publish(0, chat.BatchID(f.convs[0], 3), edit(f.t, f.encode(0, 3, manual, 4, 5), func(b map[string]any) {
				ms := b["messages"].([]any)
				slices.Reverse(ms)
				var text []any
				if err := json.Unmarshal([]byte(b["content_text"].(string)), &text); err != nil {
					f.t.Fatal(err)
				}
				slices.Reverse(text)
				reversed, _ := json.Marshal(text)
				b["content_text"] = string(reversed)
			}))
		},
		want: func(f *fixture) Report {
			return Report{Published: 6, Delivered: 6, Batches: 3, OutOfOrder: 1, UnorderedInBatch: 1, Malformed: 1,
				BatchesByReason: map[string]int{"manual": 3}, Latency: Latency{Count: 6},
				Problems: []string{
					fmt.Sprintf("out of order: batch %q (manual, 2 messages, seqs %d..%d) after seq %d of an earlier batch of %s",
						chat.BatchID(f.convs[0], 2), f.sent[0].Seq, f.sent[3].Seq, f.sent[2].Seq, f.convs[0]),
					fmt.Sprintf("batch %q (stream seq %d): messages not in seq order: seq %d after %d",
						chat.BatchID(f.convs[0], 3), f.batchSeqs[2], f.sent[4].Seq, f.sent[5].Seq)}}
		},
	}, {
		name:  "dead letters and a copy the producer did not record",
		ok:    true,
		convs: 1,
		build: func(f *fixture) {
			f.sendN(3, false)
			f.deadLetter(1, chat.ReasonInvalid)
			f.deadLetter(1, chat.ReasonInvalid) // at-least-once: the same dead letter again
			// The producer retried message 2 without a message_id: CHAT_IN
			// holds a second copy the recorder does not know.
			ack, err := f.e.js.Publish(f.t.Context(), f.e.cfg.In(f.convs[0]), f.bodies[2])
			if err != nil {
				f.t.Fatal(err)
			}
			f.msgs = append(f.msgs, f.msgs[2])
			f.sent = append(f.sent, Sent{Seq: ack.Sequence})
			f.batch(0, 1, size, 0, 2)
			f.batch(0, 2, manual, 3)
		},
		want: func(f *fixture) Report {
			return Report{Published: 3, Delivered: 2, Unexpected: 1, DeadLettered: 1, Dead: map[string]int{"invalid": 1},
				Batches: 2, BatchesByReason: map[string]int{"size": 1, "manual": 1},
				Latency: Latency{Count: 2}, SizeLatency: Latency{Count: 2}}
		},
	}, {
		name:  "a message both dead-lettered and batched",
		ok:    false,
		convs: 1,
		build: func(f *fixture) {
			f.sendN(2, true)
			f.deadLetter(1, "store_rejected")
			f.batch(0, 1, manual, 0, 1)
		},
		want: func(f *fixture) Report {
			return Report{Published: 2, Delivered: 2, Duplicated: 1, DeadLettered: 1, Dead: map[string]int{"store_rejected": 1},
				Batches: 1, BatchesByReason: map[string]int{"manual": 1}, Latency: Latency{Count: 2}}
		},
	}, {
		name:  "not a batch",
		ok:    false,
		convs: 1,
		build: func(f *fixture) {
			f.sendN(1, true)
			f.batch(0, 1, manual, 0)
			f.publish(0, "junk", []byte("["))
		},
		want: func(f *fixture) Report {
			return Report{Published: 1, Delivered: 1, Batches: 1, Malformed: 1,
				BatchesByReason: map[string]int{"manual": 1}, Latency: Latency{Count: 1},
				Problems: []string{fmt.Sprintf("stream seq %d: not a batch: unexpected end of JSON input", f.batchSeqs[1])}}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, e, tt.convs)
			tt.build(f)
			got := f.check(t.Context(), Options{BufferSize: testBufferSize})

			want := tt.want(f)
			want.Run = f.rec.Run()
			if want.Dead == nil {
				want.Dead = map[string]int{}
			}
			if diff := cmp.Diff(want, *got, cmpopts.IgnoreFields(Latency{}, "P50MS", "P99MS", "MaxMS")); diff != "" {
				t.Errorf("report (-want +got):\n%s", diff)
			}
			if got.OK() != tt.ok {
				t.Errorf("OK() = %v, want %v", got.OK(), tt.ok)
			}
			if _, err := json.Marshal(got); err != nil {
				t.Errorf("report does not marshal: %v", err)
			}
		})
	}
}

func TestCheckLatency(t *testing.T) {
	e := newEnv(t, 0)
	f := newFixture(t, e, 1)
	f.sendN(2, true)
	time.Sleep(20 * time.Millisecond)
	f.batch(0, 1, chat.TriggerSize, 0, 1)
	got := f.check(t.Context(), Options{BufferSize: testBufferSize})
	if got.Latency.Count != 2 || got.Latency.P50MS < 20 || got.Latency.P99MS < got.Latency.P50MS || got.SizeLatency != got.Latency {
		t.Errorf("latency %+v, size latency %+v: want 2 samples of at least 20ms, equal", got.Latency, got.SizeLatency)
	}
}
