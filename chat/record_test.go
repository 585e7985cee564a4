package chat_test

import (
	"bytes"
	"encoding/json"
	"strconv"
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
			want: `1764151200123 0 1017 0 185 96 user {"seq":1017,"role":"user","content":"hi","received_at":"2025-11-26T10:00:00.123Z","metadata":{}}` +
				`{\"role\": \"user\", \"content\": \"hi\", \"timestamp\": \"2025-11-26T10:00:00.123Z\"}`,
		},
		{
			name: "all fields",
			msg: chat.Message{
				Role: "assistant", Content: json.RawMessage(`[{"type":"text","text":"a b"}]`), MessageID: "m1",
				Timestamp: "2026-11-26T11:00:00+01:00", Metadata: json.RawMessage(`{"n": 1.10}`),
			},
			seq: 7,
			want: `1764151200123 0 7 0 318 191 assistant {"message_id":"m1","seq":7,"role":"assistant","content":[{"type":"text","text":"a b"}],"timestamp":"2026-11-26T11:00:00+01:00","received_at":"2025-11-26T10:00:00.123Z","metadata":{"n": 1.10}}` +
				`{\"role\": \"assistant\", \"content\": [{\"type\":\"text\",\"text\":\"a b\"}], \"timestamp\": \"2026-11-26T11:00:00+01:00\"}`,
		},
		{
			name: "message_id that needs escaping",
			msg:  chat.Message{Role: "tool", Content: json.RawMessage(`"x"`), MessageID: "q\"\\ü\n"},
			seq:  1<<64 - 1,
			want: `1764151200123 0 18446744073709551615 0 224 136 tool {"message_id":"q\"\\ü\n","seq":18446744073709551615,"role":"tool","content":"x","received_at":"2025-11-26T10:00:00.123Z","metadata":{}}` +
				`{\"role\": \"tool\", \"content\": \"x\", \"timestamp\": \"2025-11-26T10:00:00.123Z\"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := chat.NewRecord(&tt.msg, 0, tt.seq, false, at)
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
			if !bytes.HasSuffix(raw, append(r.JSON[:len(r.JSON):len(r.JSON)], r.Text...)) {
				t.Errorf("JSON and text parts %q %q are not the record's tail", r.JSON, r.Text)
			}
			var entry chat.TextEntry
			if err := json.Unmarshal([]byte(`"`+string(r.Text)+`"`), new(string)); err != nil {
				t.Errorf("text part is not the inside of a JSON string: %v", err)
			} else if s := unquote(t, r.Text); json.Unmarshal([]byte(s), &entry) != nil || entry.Role != tt.msg.Role {
				t.Errorf("text part %q does not decode to an entry of role %q", s, tt.msg.Role)
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

const traceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// A record keeps its origin in extras that leave the batch's parts, and so
// its cost, as they are without them.
func TestNewRecordFromKeepsOrigin(t *testing.T) {
	at := time.UnixMilli(1764151200123)
	m := chat.Message{Role: "user", Content: json.RawMessage(`"hi"`), MessageID: "m1"}
	plain, err := chat.ParseRecord(chat.NewRecord(&m, 9, 1017, true, at))
	if err != nil {
		t.Fatal(err)
	}
	if plain.StoredMS != 0 || plain.TraceParent != nil {
		t.Errorf("record without origin: stored %d, traceparent %q; want none", plain.StoredMS, plain.TraceParent)
	}
	for _, tt := range []struct {
		name   string
		origin chat.Origin
		extras string
	}{
		{"stored", chat.Origin{Stored: at.Add(-1500 * time.Millisecond)}, "w1500 "},
		{"stored after receipt (clock skew)", chat.Origin{Stored: at.Add(20 * time.Millisecond)}, "w-20 "},
		{"traceparent", chat.Origin{TraceParent: traceParent}, "t" + traceParent + " "},
		{"both", chat.Origin{Stored: at.Add(-3 * time.Millisecond), TraceParent: traceParent}, "w3 t" + traceParent + " "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			raw := chat.NewRecordFrom(&m, 9, 1017, true, at, tt.origin)
			if want := "1764151200123 9 1017 1 " + strconv.Itoa(plain.Cost) + " " + strconv.Itoa(len(plain.JSON)) + " user " + tt.extras + "{"; !strings.HasPrefix(string(raw), want) {
				t.Errorf("record %q, want it to start with %q", raw, want)
			}
			r, err := chat.ParseRecord(raw)
			if err != nil {
				t.Fatalf("ParseRecord: %v", err)
			}
			var stored int64
			if !tt.origin.Stored.IsZero() {
				stored = tt.origin.Stored.UnixMilli()
			}
			if r.StoredMS != stored || string(r.TraceParent) != tt.origin.TraceParent {
				t.Errorf("origin = stored %d, traceparent %q; want %d, %q", r.StoredMS, r.TraceParent, stored, tt.origin.TraceParent)
			}
			if r.Cost != plain.Cost || !bytes.Equal(r.JSON, plain.JSON) || !bytes.Equal(r.Text, plain.Text) ||
				r.ReceivedMS != plain.ReceivedMS || r.Epoch != 9 || r.Seq != 1017 || !r.End || r.Role != "user" {
				t.Errorf("record with origin %+v differs from the one without %+v beyond its origin", r, plain)
			}
		})
	}
}

// Extras a reader does not know are skipped: a later field does not make
// a record unreadable.
func TestParseRecordSkipsUnknownExtras(t *testing.T) {
	r, err := chat.ParseRecord([]byte("123 0 1 0 5 2 user zfuture w3 {}"))
	if err != nil {
		t.Fatal(err)
	}
	if r.StoredMS != 120 || string(r.JSON) != "{}" {
		t.Errorf("record = stored %d, JSON %q; want 120, {}", r.StoredMS, r.JSON)
	}
}

func TestParseRecordRejects(t *testing.T) {
	for _, tt := range []struct{ name, rec string }{
		{"empty", ""},
		{"no spaces", "123"},
		{"time only", "123 "},
		{"old header", "123 1 user {}"},
		{"bad time", "x 0 1 0 5 2 user {}"},
		{"time overflow", "99999999999999999999 0 1 0 5 2 user {}"},
		{"bad epoch", "1 x 1 0 5 2 user {}"},
		{"no role field", "123 0 1 0 5 2"},
		{"bad seq", "123 0 -1 0 5 2 user {}"},
		{"seq overflow", "123 0 18446744073709551616 0 5 2 user {}"},
		{"bad end flag", "123 0 1 2 5 2 user {}"},
		{"cost not matching", "123 0 1 0 6 2 user {}"},
		{"JSON longer than the record", "123 0 1 0 12 9 user {}"},
		{"no JSON", "123 0 1 0 5 2 user"},
		{"empty JSON", "123 0 1 0 3 0 user "},
		{"JSON not an object", "123 0 1 0 5 2 user []"},
		{"double space before JSON", "123 0 1 0 5 2 user  {}"},
		{"extra without a value", "123 0 1 0 5 2 user w {}"},
		{"extra not a letter", "123 0 1 0 5 2 user 9 {}"},
		{"extra in capitals", "123 0 1 0 5 2 user W5 {}"},
		{"bad wait", "123 0 1 0 5 2 user wx {}"},
		{"extras without JSON", "123 0 1 0 5 2 user w5 "},
		{"JSON longer than the record after extras", "123 0 1 0 12 9 user t1 {}"},
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
	f.Add(chat.NewRecord(&m, 0, 42, false, time.UnixMilli(1764151200123)))
	f.Add(chat.NewRecord(&chat.Message{Role: "tool", Content: json.RawMessage(`[]`)}, 0, 1<<64-1, false, time.UnixMilli(-1)))
	f.Add(chat.NewRecordFrom(&m, 0, 42, false, time.UnixMilli(1764151200123), chat.Origin{Stored: time.UnixMilli(1764151200000), TraceParent: traceParent}))
	for _, s := range []string{"", " ", "   ", "1 2 3 {", "1 2  {", "-1 0 x {}", "+1 +2 r {}", "1 2 r{}", strings.Repeat("9", 40) + " 1 r {}",
		"1 0 1 0 5 2 r {}", "1 0 1 1 7 2 r {}ab", "-1 -1 1 0 5 2 r {}"} {
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
		tail := append(r.JSON[:len(r.JSON):len(r.JSON)], r.Text...)
		if !bytes.HasSuffix(b, tail) {
			t.Fatalf("ParseRecord(%q): JSON and text parts %q are not the record's tail", b, tail)
		}
		if strings.Contains(r.Role, " ") {
			t.Fatalf("ParseRecord(%q): role %q holds a space", b, r.Role)
		}
		if r.Cost != len(r.JSON)+len(r.Text)+3 {
			t.Fatalf("ParseRecord(%q): cost %d, parts %d and %d", b, r.Cost, len(r.JSON), len(r.Text))
		}
		// The header fields are the seven space-separated tokens in front,
		// then the extras: a lowercase letter and a value each.
		header := b[:len(b)-len(tail)]
		tokens := bytes.Split(bytes.TrimSuffix(header, []byte(" ")), []byte(" "))
		if len(tokens) < 7 || header[len(header)-1] != ' ' {
			t.Fatalf("ParseRecord(%q): header %q has %d tokens, want at least 7", b, header, len(tokens))
		}
		for _, x := range tokens[7:] {
			if len(x) < 2 || x[0] < 'a' || x[0] > 'z' {
				t.Fatalf("ParseRecord(%q): extra %q is not a lowercase letter and a value", b, x)
			}
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
		r, err := chat.ParseRecord(chat.NewRecord(&m, 0, uint64(i), false, at))
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

// unquote reads a record's text part as the JSON string it is the inside of.
func unquote(tb testing.TB, text []byte) string {
	tb.Helper()
	var s string
	if err := json.Unmarshal([]byte(`"`+string(text)+`"`), &s); err != nil {
		tb.Fatalf("text part %q: %v", text, err)
	}
	return s
}

func TestRecordOrderAndEnd(t *testing.T) {
	m := chat.Message{Role: "user", Content: json.RawMessage(`"hi"`)}
	at := time.UnixMilli(1764151200123)
	parse := func(epoch int64, seq uint64, end bool) chat.Record {
		r, err := chat.ParseRecord(chat.NewRecord(&m, epoch, seq, end, at))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := parse(1764000000000, 7, true); r.Epoch != 1764000000000 || r.Seq != 7 || !r.End {
		t.Errorf("header = epoch %d seq %d end %v, want 1764000000000 7 true", r.Epoch, r.Seq, r.End)
	}
	if parse(5, 7, false).End {
		t.Error("end flag set on a record made without it")
	}
	for _, tt := range []struct {
		a, b chat.Record
		less bool
	}{
		{parse(1, 9, false), parse(2, 1, false), true}, // a recreated stream comes after
		{parse(2, 1, false), parse(1, 9, false), false},
		{parse(1, 1, false), parse(1, 2, false), true},
		{parse(1, 2, false), parse(1, 2, false), false},
	} {
		if got := tt.a.Less(tt.b); got != tt.less {
			t.Errorf("(%d,%d).Less(%d,%d) = %v, want %v", tt.a.Epoch, tt.a.Seq, tt.b.Epoch, tt.b.Seq, got, tt.less)
		}
	}
}
