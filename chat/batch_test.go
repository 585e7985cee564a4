package chat_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opencontext/chatbuf/chat"
)

func TestBatchID(t *testing.T) {
	tests := []struct {
		name  string
		conv  chat.Conversation
		token int64
		want  string
	}{
		{"contract example", chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}, 42, "alice:phone:bot#42"},
		{"hostile ids", chat.Conversation{User: "a:b", Device: "{d}", Agent: "5%"}, 1, "a%3Ab:%7Bd%7D:5%25#1"},
		{"hash in an id", chat.Conversation{User: "a#1", Device: "d", Agent: "a"}, 2, "a#1:d:a#2"},
		{"large token", chat.Conversation{User: "u", Device: "d", Agent: "a"}, 1<<63 - 1, "u:d:a#9223372036854775807"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := chat.BatchID(tt.conv, tt.token); got != tt.want {
				t.Errorf("BatchID = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTriggerValid(t *testing.T) {
	for _, tt := range []struct {
		t    chat.Trigger
		want bool
	}{
		{chat.TriggerSize, true}, {chat.TriggerAge, true}, {chat.TriggerManual, true},
		{chat.TriggerIdle, true}, {chat.TriggerBytes, true}, {chat.TriggerEnd, true},
		{"", false}, {"Size", false}, {"sweep", false},
	} {
		if got := tt.t.Valid(); got != tt.want {
			t.Errorf("Trigger(%q).Valid() = %v, want %v", tt.t, got, tt.want)
		}
	}
}

// batchInput is one message of a batch under test: its body, its CHAT_IN
// sequence and its receive time.
type batchInput struct {
	body string
	seq  uint64
	at   time.Time
}

func TestEncodeBatch(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	created := time.Date(2025, 11, 26, 11, 0, 5, 0, cet)
	// Given out of CHAT_IN order on purpose.
	inputs := []batchInput{
		{`{"role":"user","content":"third","metadata":{"n": 12345678901234567890, "f": 1.10}}`, 1020, time.Date(2025, 11, 26, 11, 0, 3, 0, cet)},
		{`{"role":"user","content":"hi","message_id":"m1","timestamp":"2025-11-26T10:59:59+01:00"}`, 1017, time.Date(2025, 11, 26, 11, 0, 0, 250_000_000, cet)},
		{`{"role":"system","content":"be brief","message_id":"m3"}`, 1019, time.Date(2025, 11, 26, 11, 0, 2, 0, cet)},
		{`{"role":"assistant","content":[{"type":"text","text":"hello"}]}`, 1018, time.Date(2025, 11, 26, 11, 0, 1, 0, cet)},
	}
	convs := []struct {
		name string
		conv chat.Conversation
		id   string
	}{
		{"plain ids", chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}, "alice:phone:bot#42"},
		{"hostile ids", chat.Conversation{User: `a:b"\`, Device: "{ü}", Agent: "_"}, `a%3Ab"\:%7Bü%7D:_#42`},
	}
	for _, cv := range convs {
		t.Run(cv.name, func(t *testing.T) {
			records := make([]chat.Record, len(inputs))
			for i, in := range inputs {
				m, err := chat.Decode([]byte(in.body), cv.conv, 0)
				if err != nil {
					t.Fatalf("Decode(%s): %v", in.body, err)
				}
				records[i] = mustRecord(t, m, in.seq, in.at)
			}
			raw := chat.EncodeBatch(cv.conv, 42, chat.TriggerSize, created, records)
			if !json.Valid(raw) {
				t.Fatalf("batch is not valid JSON: %s", raw)
			}

			var got chat.Batch
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatalf("batch does not decode as a chat.Batch: %v\n%s", err, raw)
			}
			roles := []string{"assistant", "system", "user"}
			want := chat.Batch{
				BatchID:       cv.id,
				ObjectID:      cv.id,
				Source:        "chat_log",
				ContentFormat: "text",
				UserID:        cv.conv.User,
				DeviceID:      cv.conv.Device,
				AgentID:       cv.conv.Agent,
				Reason:        chat.TriggerSize,
				FencingToken:  42,
				CreateTime:    created,
				MessageCount:  4,
				Roles:         roles,
				ContentText: `[{"role": "user", "content": "hi", "timestamp": "2025-11-26T10:59:59+01:00"}, ` +
					`{"role": "assistant", "content": [{"type":"text","text":"hello"}], "timestamp": "2025-11-26T10:00:01Z"}, ` +
					`{"role": "system", "content": "be brief", "timestamp": "2025-11-26T10:00:02Z"}, ` +
					`{"role": "user", "content": "third", "timestamp": "2025-11-26T10:00:03Z"}]`,
				AdditionalInfo: chat.AdditionalInfo{MessageCount: 4, Roles: roles, BatchID: cv.id, Reason: chat.TriggerSize, FencingToken: 42},
				Messages: []chat.BatchMessage{
					{MessageID: "m1", Seq: 1017, Role: "user", Content: json.RawMessage(`"hi"`), Timestamp: "2025-11-26T10:59:59+01:00", ReceivedAt: inputs[1].at, Metadata: json.RawMessage(`{}`)},
					{Seq: 1018, Role: "assistant", Content: json.RawMessage(`[{"type":"text","text":"hello"}]`), ReceivedAt: inputs[3].at, Metadata: json.RawMessage(`{}`)},
					{MessageID: "m3", Seq: 1019, Role: "system", Content: json.RawMessage(`"be brief"`), ReceivedAt: inputs[2].at, Metadata: json.RawMessage(`{}`)},
					{Seq: 1020, Role: "user", Content: json.RawMessage(`"third"`), ReceivedAt: inputs[0].at, Metadata: json.RawMessage(`{"n": 12345678901234567890, "f": 1.10}`)},
				},
			}
			// cmp compares time.Time with its Equal method: the same instant
			// in any zone. The zone on the wire is checked below.
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("batch (-want +got):\n%s", diff)
			}

			// The wire form, field by field.
			top := fields(t, raw)
			keys := []string{"batch_id", "object_id", "source", "content_format", "user_id", "device_id", "agent_id", "reason",
				"fencing_token", "create_time", "message_count", "roles", "content_text", "additional_info", "messages"}
			for _, k := range keys {
				if _, ok := top[k]; !ok {
					t.Errorf("batch has no %q", k)
				}
			}
			if len(top) != len(keys) {
				t.Errorf("batch has %d fields, want %d: %s", len(top), len(keys), raw)
			}
			if cv.conv.Agent == chat.NotGiven && string(top["agent_id"]) != "null" {
				t.Errorf("agent_id not given = %s, want null", top["agent_id"])
			}
			var text []chat.TextEntry
			if err := json.Unmarshal([]byte(got.ContentText), &text); err != nil || len(text) != 4 {
				t.Errorf("content_text is not a JSON array of 4 entries (%v): %s", err, got.ContentText)
			}
			if n := len(raw); n > chat.BatchOverhead(cv.conv)+sumCost(records) {
				t.Errorf("batch is %d bytes, above BatchOverhead + costs = %d", n, chat.BatchOverhead(cv.conv)+sumCost(records))
			}
			for k, want := range map[string]string{
				"source":        `"chat_log"`,
				"reason":        `"size"`,
				"fencing_token": `42`,
				"message_count": `4`,
				"roles":         `["assistant","system","user"]`,
				"create_time":   `"2025-11-26T10:00:05Z"`,
			} {
				if got := string(top[k]); got != want {
					t.Errorf("%s = %s, want %s", k, got, want)
				}
			}
			var msgs []map[string]json.RawMessage
			if err := json.Unmarshal(top["messages"], &msgs); err != nil {
				t.Fatalf("messages: %v", err)
			}
			wantAt := []string{`"2025-11-26T10:00:00.25Z"`, `"2025-11-26T10:00:01Z"`, `"2025-11-26T10:00:02Z"`, `"2025-11-26T10:00:03Z"`}
			for i, msg := range msgs {
				if got := string(msg["received_at"]); got != wantAt[i] {
					t.Errorf("messages[%d].received_at = %s, want %s", i, got, wantAt[i])
				}
				if _, has := msg["message_id"]; has != (want.Messages[i].MessageID != "") {
					t.Errorf("messages[%d] has message_id %v: %s", i, has, msg["message_id"])
				}
				if _, has := msg["timestamp"]; has != (want.Messages[i].Timestamp != "") {
					t.Errorf("messages[%d] has timestamp %v: %s", i, has, msg["timestamp"])
				}
			}
		})
	}
}

func TestEncodeBatchTimesInUTC(t *testing.T) {
	zones := []*time.Location{time.UTC, time.FixedZone("east", 14*3600), time.FixedZone("west", -(9*3600 + 30*60))}
	for _, loc := range zones {
		t.Run(loc.String(), func(t *testing.T) {
			at := time.Date(2025, 1, 2, 3, 4, 5, 678_000_000, loc)
			r := mustRecord(t, mustDecode(t, `{"role":"user","content":"x"}`), 1, at)
			raw := chat.EncodeBatch(alice, 1, chat.TriggerAge, at, []chat.Record{r})
			top := fields(t, raw)
			var msgs []map[string]json.RawMessage
			if err := json.Unmarshal(top["messages"], &msgs); err != nil || len(msgs) != 1 {
				t.Fatalf("messages = %s: %v", top["messages"], err)
			}
			for name, v := range map[string]json.RawMessage{"create_time": top["create_time"], "received_at": msgs[0]["received_at"]} {
				var s string
				if err := json.Unmarshal(v, &s); err != nil {
					t.Fatalf("%s = %s: %v", name, v, err)
				}
				got, err := time.Parse(time.RFC3339, s)
				if err != nil {
					t.Errorf("%s = %q is not RFC 3339: %v", name, s, err)
					continue
				}
				if !strings.HasSuffix(s, "Z") || got.Location() != time.UTC {
					t.Errorf("%s = %q is not in UTC", name, s)
				}
				if !got.Equal(at) {
					t.Errorf("%s = %v, want %v", name, got, at)
				}
			}
		})
	}
}

func TestEncodeBatchRolesAndOrder(t *testing.T) {
	tests := []struct {
		name      string
		roles     []string // in the order the records are given
		seqs      []uint64
		wantRoles []string
		wantSeqs  []uint64
	}{
		{"one message", []string{"user"}, []uint64{5}, []string{"user"}, []uint64{5}},
		{"one role many times", []string{"user", "user", "user"}, []uint64{3, 1, 2}, []string{"user"}, []uint64{1, 2, 3}},
		{"every role, reversed", []string{"user", "tool", "system", "assistant"}, []uint64{40, 30, 20, 10}, []string{"assistant", "system", "tool", "user"}, []uint64{10, 20, 30, 40}},
		{"interleaved", []string{"tool", "user", "tool", "assistant"}, []uint64{9, 1, 1 << 40, 2}, []string{"assistant", "tool", "user"}, []uint64{1, 2, 9, 1 << 40}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			records := make([]chat.Record, len(tt.roles))
			for i, role := range tt.roles {
				records[i] = mustRecord(t, mustDecode(t, `{"role":"`+role+`","content":"x"}`), tt.seqs[i], time.UnixMilli(int64(i)))
			}
			var got chat.Batch
			if err := json.Unmarshal(chat.EncodeBatch(alice, 3, chat.TriggerManual, time.UnixMilli(0), records), &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantRoles, got.Roles); diff != "" {
				t.Errorf("roles (-want +got):\n%s", diff)
			}
			var seqs []uint64
			for _, m := range got.Messages {
				seqs = append(seqs, m.Seq)
			}
			if diff := cmp.Diff(tt.wantSeqs, seqs); diff != "" {
				t.Errorf("message seqs (-want +got):\n%s", diff)
			}
			if got.MessageCount != len(tt.roles) || got.Reason != chat.TriggerManual || got.FencingToken != 3 {
				t.Errorf("message_count %d reason %q fencing_token %d, want %d manual 3", got.MessageCount, got.Reason, got.FencingToken, len(tt.roles))
			}
		})
	}
}

func TestEncodeBatchLargeTokenExact(t *testing.T) {
	const token = 1<<53 + 1 // not representable as a float64
	r := mustRecord(t, mustDecode(t, `{"role":"user","content":"x"}`), 1, time.UnixMilli(0))
	raw := chat.EncodeBatch(alice, token, chat.TriggerSize, time.UnixMilli(0), []chat.Record{r})
	top := fields(t, raw)
	if got := string(top["fencing_token"]); got != "9007199254740993" {
		t.Errorf("fencing_token = %s, want 9007199254740993", got)
	}
	if got := string(top["batch_id"]); got != `"alice:phone:bot#9007199254740993"` {
		t.Errorf("batch_id = %s", got)
	}
}

func sumCost(rs []chat.Record) int {
	n := 0
	for _, r := range rs {
		n += r.Cost
	}
	return n
}

// The byte bound holds for every record shape that stresses escaping, and
// WorstBatchBytes bounds a batch of one message of the largest body for the
// conversations with the longest escaped ids.
func TestBatchBytesBound(t *testing.T) {
	bodies := []string{
		`{"role":"user","content":"x"}`,
		`{"role":"user","content":"` + strings.Repeat(`\"`, 2000) + `","timestamp":"2025-11-26T10:59:59.123456789+01:00"}`,
		`{"role":"tool","content":[` + strings.Repeat(`{"t":"\n"},`+"\n\t", 300) + `{}],"metadata":{"a":"` + strings.Repeat("é", 500) + `"}}`,
		`{"role":"assistant","content":"` + strings.Repeat(`<&>\u0001`, 400) + `","message_id":"` + strings.Repeat(`\"`, 64) + `"}`,
	}
	convs := []chat.Conversation{
		alice,
		{User: strings.Repeat("%", 128), Device: strings.Repeat(`"`, 128), Agent: chat.NotGiven},
		{User: strings.Repeat(`\\`, 64), Device: strings.Repeat("é", 64), Agent: strings.Repeat(":", 128)},
	}
	for _, c := range convs {
		var records []chat.Record
		for i, body := range bodies {
			m, err := chat.Decode([]byte(body), c, 0)
			if err != nil {
				t.Fatalf("Decode(%.60s): %v", body, err)
			}
			// With every extra: they stay out of the batch and its cost.
			r, err := chat.ParseRecord(chat.NewRecordFrom(&m, 0, uint64(i+1), false, time.UnixMilli(int64(i)),
				chat.Origin{Stored: time.UnixMilli(-1 << 40), TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}))
			if err != nil {
				t.Fatal(err)
			}
			if r.Cost > chat.MaxRecordCost(len(body)) {
				t.Errorf("record of a %d-byte body costs %d, above MaxRecordCost %d", len(body), r.Cost, chat.MaxRecordCost(len(body)))
			}
			records = append(records, r)
			one := chat.EncodeBatch(c, 1<<63-1, chat.TriggerManual, time.Now(), []chat.Record{r})
			if len(one) > chat.WorstBatchBytes(len(body)) {
				t.Errorf("batch of one %d-byte body is %d bytes, above WorstBatchBytes %d", len(body), len(one), chat.WorstBatchBytes(len(body)))
			}
			if !json.Valid(one) {
				t.Fatalf("batch is not valid JSON: %.200s", one)
			}
		}
		raw := chat.EncodeBatch(c, 1<<63-1, chat.TriggerManual, time.Now(), records)
		if bound := chat.BatchOverhead(c) + sumCost(records); len(raw) > bound {
			t.Errorf("%v: batch is %d bytes, above its bound %d", c, len(raw), bound)
		}
		var b chat.Batch
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatalf("batch does not decode: %v", err)
		}
		var text []chat.TextEntry
		if err := json.Unmarshal([]byte(b.ContentText), &text); err != nil || len(text) != len(bodies) {
			t.Fatalf("content_text does not decode into %d entries: %v", len(bodies), err)
		}
		for i, e := range text {
			if diff := jsonDiff(t, b.Messages[i].Content, e.Content); diff != "" {
				t.Errorf("content_text[%d].content differs from messages[%d].content:\n%s", i, i, diff)
			}
			if e.Role != b.Messages[i].Role {
				t.Errorf("content_text[%d].role = %q, want %q", i, e.Role, b.Messages[i].Role)
			}
		}
		if b.Conversation() != c {
			t.Errorf("batch conversation = %v, want %v", b.Conversation(), c)
		}
	}
}
