package chat_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/chat"
)

func TestNewRecord(t *testing.T) {
	at := time.Date(2025, 11, 26, 11, 0, 0, 123_456_789, time.FixedZone("CET", 3600))
	tests := []struct {
		name string
		msg  chat.Message
		seq  uint64
		want string
	}{
		{
			name: "minimal",
			msg:  chat.Message{Role: "user", Content: json.RawMessage(`"hi"`)},
			seq:  1017,
			want: `1764151200123 1017 user {"seq":1017,"role":"user","content":"hi","received_at":"2025-11-26T10:00:00.123Z","metadata":{}}`,
		},
		{
			name: "all fields",
			msg: chat.Message{
				Role: "assistant", Content: json.RawMessage(`[{"type":"text","text":"a b"}]`), MessageID: "m1",
				Timestamp: "2026-11-26T11:00:00+01:00", Metadata: json.RawMessage(`{"n": 1.10}`),
			},
			seq:  7,
			want: `1764151200123 7 assistant {"message_id":"m1","seq":7,"role":"assistant","content":[{"type":"text","text":"a b"}],"timestamp":"2026-11-26T11:00:00+01:00","received_at":"2025-11-26T10:00:00.123Z","metadata":{"n": 1.10}}`,
		},
		{
			name: "message_id that needs escaping",
			msg:  chat.Message{Role: "tool", Content: json.RawMessage(`"x"`), MessageID: "q\"\\ü\n"},
			seq:  1<<64 - 1,
			want: `1764151200123 18446744073709551615 tool {"message_id":"q\"\\ü\n","seq":18446744073709551615,"role":"tool","content":"x","received_at":"2025-11-26T10:00:00.123Z","metadata":{}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := chat.NewRecord(&tt.msg, tt.seq, at)
			if string(raw) != tt.want {
				t.Errorf("NewRecord =\n%s\nwant\n%s", raw, tt.want)
			}
			r, err := chat.ParseRecord(raw)
			if err != nil {
				t.Fatalf("ParseRecord: %v", err)
			}
			if r.ReceivedMS != at.UnixMilli() || r.Seq != tt.seq || r.Role != tt.msg.Role {
				t.Errorf("header = %d %d %q, want %d %d %q", r.ReceivedMS, r.Seq, r.Role, at.UnixMilli(), tt.seq, tt.msg.Role)
			}
			if !json.Valid(r.JSON) {
				t.Errorf("JSON part is not valid JSON: %s", r.JSON)
			}
			if !bytes.HasSuffix(raw, r.JSON) {
				t.Errorf("JSON part %q is not the record's tail", r.JSON)
			}
		})
	}
}

func TestNewRecordMessageIDIsJSONEqual(t *testing.T) {
	// The message_id goes through a decode and an encode; what comes out must
	// be JSON-equal to what went in, for escapes and non-ASCII alike.
	for _, id := range []string{`m1`, `\u00fc`, `ü`, `\"q\"`, `a\\b`, `\n\t\u0001`, `\ud83d\ude00`, `\u2028`, `<&>`} {
		t.Run(id, func(t *testing.T) {
			in := `"` + id + `"`
			m := mustDecode(t, `{"role":"user","content":"hi","message_id":`+in+`}`)
			r := mustRecord(t, m, 1, time.UnixMilli(0))
			out := fields(t, r.JSON)["message_id"]
			if diff := jsonDiff(t, []byte(in), out); diff != "" {
				t.Errorf("message_id (-body +record):\n%s", diff)
			}
		})
	}
}

func TestParseRecordRejects(t *testing.T) {
	for _, tt := range []struct{ name, rec string }{
		{"empty", ""},
		{"no spaces", "123"},
		{"time only", "123 "},
		{"bad time", "x 1 user {}"},
		{"time overflow", "99999999999999999999 1 user {}"},
		{"no role field", "123 1"},
		{"bad seq", "123 -1 user {}"},
		{"seq overflow", "123 18446744073709551616 user {}"},
		{"no JSON", "123 1 user"},
		{"empty JSON", "123 1 user "},
		{"JSON not an object", "123 1 user []"},
		{"double space before JSON", "123 1 user  {}"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if r, err := chat.ParseRecord([]byte(tt.rec)); err == nil {
				t.Errorf("ParseRecord(%q) = %+v, want an error", tt.rec, r)
			}
		})
	}
}

func FuzzParseRecord(f *testing.F) {
	m := chat.Message{Role: "user", Content: json.RawMessage(`"hi"`), MessageID: "m1", Metadata: json.RawMessage(`{"a":1}`)}
	f.Add(chat.NewRecord(&m, 42, time.UnixMilli(1764151200123)))
	f.Add(chat.NewRecord(&chat.Message{Role: "tool", Content: json.RawMessage(`[]`)}, 1<<64-1, time.UnixMilli(-1)))
	for _, s := range []string{"", " ", "   ", "1 2 3 {", "1 2  {", "-1 0 x {}", "+1 +2 r {}", "1 2 r{}", strings.Repeat("9", 40) + " 1 r {}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := chat.ParseRecord(b)
		if err != nil {
			return
		}
		if len(r.JSON) == 0 || r.JSON[0] != '{' {
			t.Fatalf("ParseRecord(%q): JSON part %q does not start with {", b, r.JSON)
		}
		if !bytes.HasSuffix(b, r.JSON) {
			t.Fatalf("ParseRecord(%q): JSON part %q is not the record's tail", b, r.JSON)
		}
		if strings.Contains(r.Role, " ") {
			t.Fatalf("ParseRecord(%q): role %q holds a space", b, r.Role)
		}
		// The header fields are the three space-separated tokens in front.
		header := b[:len(b)-len(r.JSON)]
		if got := bytes.Count(header, []byte(" ")); got != 3 {
			t.Fatalf("ParseRecord(%q): header %q has %d spaces, want 3", b, header, got)
		}
	})
}

// Records of different receive times, interleaved, each carry their own
// received_at (the formatted time is cached by millisecond).
func TestNewRecordReceivedAtInterleaved(t *testing.T) {
	m := chat.Message{Role: "user", Content: json.RawMessage(`"hi"`)}
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, ms := range []int64{0, 1, 1, 0, 999, 1000, 0} {
		at := base.Add(time.Duration(ms) * time.Millisecond)
		r, err := chat.ParseRecord(chat.NewRecord(&m, uint64(i), at))
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			ReceivedAt string `json:"received_at"`
		}
		if err := json.Unmarshal(r.JSON, &got); err != nil {
			t.Fatal(err)
		}
		if want := at.Format(time.RFC3339Nano); got.ReceivedAt != want {
			t.Errorf("record %d: received_at %q, want %q", i, got.ReceivedAt, want)
		}
	}
}
