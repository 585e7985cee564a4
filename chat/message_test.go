package chat_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/opencontext/chatbuf/chat"
)

// TestDecodeRejects covers every rejection in the contract, with the reason
// it must give. Rows are grouped in the contract's check order.
func TestDecodeRejects(t *testing.T) {
	long := strings.Repeat("m", chat.MaxMessageIDLen+1)
	tests := []struct {
		name     string
		body     string
		maxBytes int
		want     chat.Reason
	}{
		// too_large: checked first, whatever the body holds.
		{name: "valid body over the limit", body: `{"role":"user","content":"hello there"}`, maxBytes: 32, want: chat.ReasonTooLarge},
		{name: "over-long invalid JSON is too_large", body: strings.Repeat("{", 100), maxBytes: 64, want: chat.ReasonTooLarge},
		{name: "over-long invalid UTF-8 is too_large", body: strings.Repeat("\xff", 100), maxBytes: 64, want: chat.ReasonTooLarge},
		{name: "over-long id mismatch is too_large", body: `{"role":"user","content":"hi","user_id":"mallory"}`, maxBytes: 40, want: chat.ReasonTooLarge},
		{name: "one byte over the default limit", body: `{"role":"user","content":"` + strings.Repeat("a", chat.DefaultMaxMessageBytes-27) + `"}`, maxBytes: 0, want: chat.ReasonTooLarge},
		{name: "negative limit means the default", body: `{"role":"user","content":"` + strings.Repeat("a", chat.DefaultMaxMessageBytes-27) + `"}`, maxBytes: -1, want: chat.ReasonTooLarge},

		// bad_json
		{name: "invalid UTF-8 in a string", body: "{\"role\":\"user\",\"content\":\"\xff\"}", want: chat.ReasonBadJSON},
		{name: "invalid UTF-8 in a key", body: "{\"role\":\"user\",\"content\":\"hi\",\"\xc3\":1}", want: chat.ReasonBadJSON},
		{name: "overlong UTF-8 encoding", body: "{\"role\":\"user\",\"content\":\"\xc0\xaf\"}", want: chat.ReasonBadJSON},
		{name: "UTF-8 surrogate half", body: "{\"role\":\"user\",\"content\":\"\xed\xa0\x80\"}", want: chat.ReasonBadJSON},
		{name: "invalid UTF-8 with an invalid role", body: "{\"role\":\"\xff\"}", want: chat.ReasonBadJSON},
		{name: "truncated JSON", body: `{"role":"user","content":"hi"`, want: chat.ReasonBadJSON},
		{name: "truncated string", body: `{"role":"user","content":"hi`, want: chat.ReasonBadJSON},
		{name: "trailing garbage", body: `{"role":"user","content":"hi"} x`, want: chat.ReasonBadJSON},
		{name: "two objects", body: `{"role":"user","content":"hi"}{}`, want: chat.ReasonBadJSON},
		{name: "trailing comma", body: `{"role":"user","content":"hi",}`, want: chat.ReasonBadJSON},
		{name: "single quotes", body: `{'role':'user','content':'hi'}`, want: chat.ReasonBadJSON},
		{name: "empty body", body: ``, want: chat.ReasonBadJSON},
		{name: "whitespace only", body: " \n\t", want: chat.ReasonBadJSON},
		{name: "byte order mark", body: "\ufeff{\"role\":\"user\",\"content\":\"hi\"}", want: chat.ReasonBadJSON},
		{name: "bad escape", body: `{"role":"user","content":"\q"}`, want: chat.ReasonBadJSON},
		{name: "bare control character in a string", body: "{\"role\":\"user\",\"content\":\"a\nb\"}", want: chat.ReasonBadJSON},
		{name: "bad_json before a wrong-type body", body: `[1,2`, want: chat.ReasonBadJSON},

		// invalid: valid JSON that is not an acceptable message.
		{name: "array body", body: `[{"role":"user","content":"hi"}]`, want: chat.ReasonInvalid},
		{name: "string body", body: `"hi"`, want: chat.ReasonInvalid},
		{name: "number body", body: `42`, want: chat.ReasonInvalid},
		{name: "boolean body", body: `true`, want: chat.ReasonInvalid},
		{name: "null body", body: `null`, want: chat.ReasonInvalid},
		{name: "empty object", body: `{}`, want: chat.ReasonInvalid},
		{name: "missing role", body: `{"content":"hi"}`, want: chat.ReasonInvalid},
		{name: "null role", body: `{"role":null,"content":"hi"}`, want: chat.ReasonInvalid},
		{name: "role 5", body: `{"role":5,"content":"hi"}`, want: chat.ReasonInvalid},
		{name: "role an array", body: `{"role":["user"],"content":"hi"}`, want: chat.ReasonInvalid},
		{name: "unknown role", body: `{"role":"admin","content":"hi"}`, want: chat.ReasonInvalid},
		{name: "role in capitals", body: `{"role":"User","content":"hi"}`, want: chat.ReasonInvalid},
		{name: "empty role", body: `{"role":"","content":"hi"}`, want: chat.ReasonInvalid},
		{name: "missing content", body: `{"role":"user"}`, want: chat.ReasonInvalid},
		{name: "null content", body: `{"role":"user","content":null}`, want: chat.ReasonInvalid},
		{name: "content a number", body: `{"role":"user","content":42}`, want: chat.ReasonInvalid},
		{name: "content an object", body: `{"role":"user","content":{"text":"hi"}}`, want: chat.ReasonInvalid},
		{name: "content a boolean", body: `{"role":"user","content":true}`, want: chat.ReasonInvalid},
		{name: "message_id over 128 bytes", body: `{"role":"user","content":"hi","message_id":"` + long + `"}`, want: chat.ReasonInvalid},
		{name: "message_id over 128 bytes once unescaped", body: `{"role":"user","content":"hi","message_id":"` + strings.Repeat(`\u00fc`, 65) + `"}`, want: chat.ReasonInvalid},
		{name: "message_id a number", body: `{"role":"user","content":"hi","message_id":17}`, want: chat.ReasonInvalid},
		{name: "message_id an object", body: `{"role":"user","content":"hi","message_id":{}}`, want: chat.ReasonInvalid},
		{name: "metadata an array", body: `{"role":"user","content":"hi","metadata":[1,2]}`, want: chat.ReasonInvalid},
		{name: "metadata a string", body: `{"role":"user","content":"hi","metadata":"{}"}`, want: chat.ReasonInvalid},
		{name: "metadata a number", body: `{"role":"user","content":"hi","metadata":0}`, want: chat.ReasonInvalid},
		{name: "timestamp not RFC 3339", body: `{"role":"user","content":"hi","timestamp":"yesterday"}`, want: chat.ReasonInvalid},
		{name: "timestamp a date only", body: `{"role":"user","content":"hi","timestamp":"2026-11-26"}`, want: chat.ReasonInvalid},
		{name: "timestamp without zone", body: `{"role":"user","content":"hi","timestamp":"2026-11-26T10:00:00"}`, want: chat.ReasonInvalid},
		{name: "timestamp a number", body: `{"role":"user","content":"hi","timestamp":1764151200}`, want: chat.ReasonInvalid},
		{name: "user_id a number", body: `{"role":"user","content":"hi","user_id":7}`, want: chat.ReasonInvalid},
		{name: "agent_id an array", body: `{"role":"user","content":"hi","agent_id":["bot"]}`, want: chat.ReasonInvalid},
		{name: "invalid before id_mismatch", body: `{"role":"admin","content":"hi","user_id":"mallory"}`, want: chat.ReasonInvalid},
		{name: "a later id of the wrong type before an earlier mismatch", body: `{"role":"user","content":"hi","user_id":"mallory","device_id":5}`, want: chat.ReasonInvalid},
		{name: "a capitalised key is not the field", body: `{"Role":"user","content":"hi"}`, want: chat.ReasonInvalid},
		{name: "an upper-case key is not the field", body: `{"role":"user","CONTENT":"hi"}`, want: chat.ReasonInvalid},

		// id_mismatch
		{name: "user_id differs", body: `{"role":"user","content":"hi","user_id":"mallory"}`, want: chat.ReasonIDMismatch},
		{name: "device_id differs", body: `{"role":"user","content":"hi","device_id":"laptop"}`, want: chat.ReasonIDMismatch},
		{name: "agent_id differs", body: `{"role":"user","content":"hi","agent_id":"other"}`, want: chat.ReasonIDMismatch},
		{name: "user_id differs in case", body: `{"role":"user","content":"hi","user_id":"Alice"}`, want: chat.ReasonIDMismatch},
		{name: "empty user_id is not absent", body: `{"role":"user","content":"hi","user_id":""}`, want: chat.ReasonIDMismatch},
		{name: "not-given id differs from a given one", body: `{"role":"user","content":"hi","user_id":"_"}`, want: chat.ReasonIDMismatch},
		{name: "one id matches, another differs", body: `{"role":"user","content":"hi","user_id":"alice","agent_id":"other"}`, want: chat.ReasonIDMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := chat.Decode([]byte(tt.body), alice, tt.maxBytes)
			if err == nil {
				t.Fatalf("Decode(%.80q) accepted it (role %q, content %.40q), want %s", tt.body, m.Role, m.Content, tt.want)
			}
			got, ok := chat.ReasonOf(err)
			if !ok || got != tt.want {
				t.Fatalf("Decode(%.80q): ReasonOf(%v) = %q, %v; want %q", tt.body, err, got, ok, tt.want)
			}
			var e *chat.Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode error %T is not a *chat.Error", err)
			}
			if e.Msg == "" {
				t.Errorf("Decode error has no message")
			}
			if want := "chat: " + string(tt.want) + ": "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("Error() = %q, want prefix %q", err.Error(), want)
			}
			if m.Role != "" || m.Content != nil || m.MessageID != "" || m.Timestamp != "" || m.Metadata != nil {
				t.Errorf("rejected Decode returned a non-zero message: role %q, content %.40q", m.Role, m.Content)
			}
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	id128 := strings.Repeat("m", chat.MaxMessageIDLen)
	tests := []struct {
		name     string
		body     string
		maxBytes int
		want     chat.Message
	}{
		{
			name: "minimal",
			body: `{"role":"user","content":"hi"}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`"hi"`)},
		},
		{
			name: "every role: assistant",
			body: `{"role":"assistant","content":"hi"}`,
			want: chat.Message{Role: "assistant", Content: json.RawMessage(`"hi"`)},
		},
		{
			name: "every role: system",
			body: `{"role":"system","content":"hi"}`,
			want: chat.Message{Role: "system", Content: json.RawMessage(`"hi"`)},
		},
		{
			name: "every role: tool",
			body: `{"role":"tool","content":"hi"}`,
			want: chat.Message{Role: "tool", Content: json.RawMessage(`"hi"`)},
		},
		{
			name: "every role: developer",
			body: `{"role":"developer","content":"hi"}`,
			want: chat.Message{Role: "developer", Content: json.RawMessage(`"hi"`)},
		},
		{
			name: "every role: function",
			body: `{"role":"function","content":"hi"}`,
			want: chat.Message{Role: "function", Content: json.RawMessage(`"hi"`)},
		},
		{
			name: "all fields",
			body: `{"role":"user","content":"hi","message_id":"m1","timestamp":"2026-11-26T10:00:00.123+01:00","metadata":{"k":"v"},"user_id":"alice","device_id":"phone","agent_id":"bot"}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`"hi"`), MessageID: "m1", Timestamp: "2026-11-26T10:00:00.123+01:00", Metadata: json.RawMessage(`{"k":"v"}`)},
		},
		{
			name: "body ids equal to the subject's",
			body: `{"user_id":"alice","device_id":"phone","agent_id":"bot","role":"user","content":"hi"}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`"hi"`)},
		},
		{
			name: "body id with escapes equal to the subject's",
			body: `{"role":"user","content":"hi","user_id":"\u0061lice"}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`"hi"`)},
		},
		{
			name: "unknown top-level fields ignored",
			body: `{"role":"user","content":"hi","extra":{"deep":[1,{"x":null}]},"tags":["a"],"n":1e400,"Role":"admin","USER_ID":"mallory","Content":5}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`"hi"`)},
		},
		{
			name: "null optional fields treated as absent",
			body: `{"role":"user","content":"hi","message_id":null,"timestamp":null,"metadata":null,"user_id":null,"device_id":null,"agent_id":null}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`"hi"`)},
		},
		{
			name: "content as an array of parts, verbatim",
			body: `{"role":"user","content":[{"type":"text","text":"hi"}, {"type":"image_url","image_url":{"url":"https://x/y.png"}}]}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`[{"type":"text","text":"hi"}, {"type":"image_url","image_url":{"url":"https://x/y.png"}}]`)},
		},
		{
			name: "empty content string and empty parts",
			body: `{"role":"tool","content":[]}`,
			want: chat.Message{Role: "tool", Content: json.RawMessage(`[]`)},
		},
		{
			name: "content escapes kept verbatim",
			body: `{"role":"user","content":"\u00fc \"q\" \\ \n \ud83d\ude00"}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`"\u00fc \"q\" \\ \n \ud83d\ude00"`)},
		},
		{
			name: "numbers kept exactly",
			body: `{"role":"user","content":"hi","metadata":{"n": 12345678901234567890, "f": 1.10, "e": 1E+2, "neg": -0.0}}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`"hi"`), Metadata: json.RawMessage(`{"n": 12345678901234567890, "f": 1.10, "e": 1E+2, "neg": -0.0}`)},
		},
		{
			name: "whitespace around the object",
			body: " \n{ \"role\" : \"user\" , \"content\" : \"hi\" }\n ",
			want: chat.Message{Role: "user", Content: json.RawMessage(`"hi"`)},
		},
		{
			name: "message_id of 128 bytes",
			body: `{"role":"user","content":"hi","message_id":"` + id128 + `"}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`"hi"`), MessageID: id128},
		},
		{
			name: "message_id unescaped",
			body: `{"role":"user","content":"hi","message_id":"m\u00fc\"1"}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`"hi"`), MessageID: `mü"1`},
		},
		{
			name: "timestamp in UTC",
			body: `{"role":"user","content":"hi","timestamp":"2026-11-26T10:00:00Z"}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`"hi"`), Timestamp: "2026-11-26T10:00:00Z"},
		},
		{
			name: "empty metadata object",
			body: `{"role":"user","content":"hi","metadata":{}}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`"hi"`), Metadata: json.RawMessage(`{}`)},
		},
		{
			name: "duplicate key: the last one wins",
			body: `{"role":"admin","role":"user","content":"hi"}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`"hi"`)},
		},
		{
			name:     "exactly at the limit",
			body:     `{"role":"user","content":"hi"}`,
			maxBytes: len(`{"role":"user","content":"hi"}`),
			want:     chat.Message{Role: "user", Content: json.RawMessage(`"hi"`)},
		},
		{
			name: "exactly at the default limit",
			body: `{"role":"user","content":"` + strings.Repeat("a", chat.DefaultMaxMessageBytes-28) + `"}`,
			want: chat.Message{Role: "user", Content: json.RawMessage(`"` + strings.Repeat("a", chat.DefaultMaxMessageBytes-28) + `"`)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chat.Decode([]byte(tt.body), alice, tt.maxBytes)
			if err != nil {
				t.Fatalf("Decode(%.80q): %v", tt.body, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decode(%.80q) (-want +got):\n%s", tt.body, diff)
			}
		})
	}
}

// TestDecodeKeepsNumbersInRecord follows numbers and content parts from the
// body to the record's JSON, byte for byte.
func TestDecodeKeepsNumbersInRecord(t *testing.T) {
	const (
		content  = `[{"type":"text","text":"total: 1.10"}, {"type":"data","value":12345678901234567890}]`
		metadata = `{"n": 12345678901234567890, "f": 1.10, "big": 1e999, "tiny": 4.9e-325}`
	)
	m := mustDecode(t, `{"role":"assistant","content":`+content+`,"metadata":`+metadata+`}`)
	r := mustRecord(t, m, 9, time.UnixMilli(1764151200000))
	for _, want := range []string{`"content":` + content, `"metadata":` + metadata} {
		if !bytes.Contains(r.JSON, []byte(want)) {
			t.Errorf("record JSON %s does not hold %s verbatim", r.JSON, want)
		}
	}
	if !json.Valid(r.JSON) {
		t.Errorf("record JSON is not valid JSON: %s", r.JSON)
	}
}

func TestDecodeIDMismatchErrorIsShort(t *testing.T) {
	long := strings.Repeat("ü", 500)
	_, err := chat.Decode([]byte(`{"role":"user","content":"hi","user_id":"`+long+`"}`), alice, 0)
	if r, _ := chat.ReasonOf(err); r != chat.ReasonIDMismatch {
		t.Fatalf("Decode: %v, want id_mismatch", err)
	}
	// The dead-letter publisher cuts Chatbuf-Error to 256 bytes; Decode
	// keeps the body's id from making the text unbounded, and cuts it on a
	// rune boundary.
	if msg := err.Error(); len(msg) > 300 || !utf8.ValidString(msg) {
		t.Errorf("error is %d bytes (valid UTF-8: %v): %q", len(msg), utf8.ValidString(msg), msg)
	}
}

func TestReasonOf(t *testing.T) {
	_, decodeErr := chat.Decode([]byte(`{}`), alice, 0)
	_, subjectErr := chat.ParseSubject("opencontext.chat", "in", "opencontext.chat.in.a.b")
	tests := []struct {
		name   string
		err    error
		want   chat.Reason
		wantOK bool
	}{
		{"decode error", decodeErr, chat.ReasonInvalid, true},
		{"wrapped decode error", fmt.Errorf("worker: %w", decodeErr), chat.ReasonInvalid, true},
		{"subject error", subjectErr, chat.ReasonBadID, true},
		{"ErrBadID", chat.ErrBadID, chat.ReasonBadID, true},
		{"ValidateID error", chat.ValidateID(""), chat.ReasonBadID, true},
		{"an Error value", &chat.Error{Reason: chat.ReasonTooLarge, Msg: "x"}, chat.ReasonTooLarge, true},
		{"other error", errors.New("boom"), "", false},
		{"nil", nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := chat.ReasonOf(tt.err)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ReasonOf(%v) = %q, %v; want %q, %v", tt.err, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestDedupeKey(t *testing.T) {
	tests := []struct {
		name string
		msg  chat.Message
		seq  uint64
		ns   int64
		want string
	}{
		{"message_id", chat.Message{MessageID: "m1"}, 5, 7, "m:m1"},
		{"message_id that looks like a sequence", chat.Message{MessageID: "5"}, 5, 7, "m:5"},
		{"no message_id", chat.Message{}, 5, 1764000000123456789, "s:5:1764000000123456789"},
		{"largest sequence", chat.Message{}, 1<<64 - 1, 1, "s:18446744073709551615:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.msg.DedupeKey(tt.seq, tt.ns); got != tt.want {
				t.Errorf("DedupeKey(%d, %d) = %q, want %q", tt.seq, tt.ns, got, tt.want)
			}
		})
	}
}

// The same sequence in a stream created again is another message.
func TestDedupeKeyStreamRecreated(t *testing.T) {
	var m chat.Message
	if a, b := m.DedupeKey(1, 1764000000000000000), m.DedupeKey(1, 1764000000000000001); a == b {
		t.Fatalf("sequence 1 of two streams share the dedupe key %q", a)
	}
}

// fuzzMaxBytes is the body limit FuzzDecode uses, small enough for the
// fuzzer to reach.
const fuzzMaxBytes = 512

func FuzzDecode(f *testing.F) {
	for _, body := range []string{
		`{"role":"user","content":"hi"}`,
		`{"role":"assistant","content":[{"type":"text","text":"hi"}],"message_id":"m1","timestamp":"2026-11-26T10:00:00Z","metadata":{"n":12345678901234567890,"f":1.10}}`,
		`{"role":"user","content":"hi","user_id":"alice","device_id":"phone","agent_id":"bot"}`,
		`{"role":"user","content":"hi","user_id":"mallory"}`,
		`{"role":"user","content":"hi","message_id":null,"timestamp":null,"metadata":null}`,
		`{"Role":"user","content":"hi","USER_ID":"x"}`,
		`{"role":"tool","content":"\u00fc\ud800","message_id":"\ud83d\ude00"}`,
		`{"role":"user","content":42}`,
		`{"role":"user","content":"hi","metadata":[]}`,
		`{"role":"user","content":"hi","timestamp":"2026-11-26"}`,
		`[1,2]`, `"s"`, `null`, `{}`, ``, `{"role":"user"`, "{\"role\":\"\xff\"}",
		strings.Repeat("[", fuzzMaxBytes+1),
	} {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := chat.Decode(body, alice, fuzzMaxBytes)
		if err != nil {
			checkRejection(t, body, err)
			return
		}
		if len(body) > fuzzMaxBytes || !utf8.Valid(body) || !json.Valid(body) {
			t.Fatalf("Decode accepted a body that is too large or not JSON: %q", body)
		}
		in := fields(t, body)
		for _, k := range []string{"role", "content"} {
			if v, ok := in[k]; !ok || string(v) == "null" {
				t.Fatalf("Decode accepted %q without a %q member (keys are case-sensitive)", body, k)
			}
		}
		at := time.UnixMilli(1764151200123)
		raw := chat.NewRecord(&m, 0, 42, false, at)
		r, err := chat.ParseRecord(raw)
		if err != nil {
			t.Fatalf("ParseRecord(%q): %v", raw, err)
		}
		if r.Seq != 42 || r.ReceivedMS != at.UnixMilli() || r.Role != m.Role {
			t.Fatalf("record header = %d %d %q, want 42 %d %q", r.Seq, r.ReceivedMS, r.Role, at.UnixMilli(), m.Role)
		}
		if !json.Valid(r.JSON) {
			t.Fatalf("record JSON is not valid: %q", r.JSON)
		}
		out := fields(t, r.JSON)
		if diff := jsonDiff(t, in["role"], out["role"]); diff != "" {
			t.Errorf("role (-body +record):\n%s", diff)
		}
		if diff := jsonDiff(t, in["content"], out["content"]); diff != "" {
			t.Errorf("content (-body +record):\n%s", diff)
		}
		wantMeta := in["metadata"]
		if wantMeta == nil || string(wantMeta) == "null" {
			wantMeta = json.RawMessage(`{}`)
		}
		if diff := jsonDiff(t, wantMeta, out["metadata"]); diff != "" {
			t.Errorf("metadata (-body +record):\n%s", diff)
		}
		for _, k := range []string{"message_id", "timestamp"} {
			v, ok := in[k]
			switch {
			case !ok || string(v) == "null" || string(v) == `""`:
				if _, has := out[k]; has {
					t.Errorf("record has %s %s, body had %s", k, out[k], v)
				}
			default:
				if diff := jsonDiff(t, v, out[k]); diff != "" {
					t.Errorf("%s (-body +record):\n%s", k, diff)
				}
			}
		}
		for k, want := range map[string]string{"user_id": alice.User, "device_id": alice.Device, "agent_id": alice.Agent} {
			if v, ok := in[k]; ok && string(v) != "null" {
				var s string
				if err := json.Unmarshal(v, &s); err != nil || s != want {
					t.Errorf("accepted %s %s for subject id %q", k, v, want)
				}
			}
		}
		var bm chat.BatchMessage
		if err := json.Unmarshal(r.JSON, &bm); err != nil {
			t.Fatalf("record JSON does not decode as a BatchMessage: %v", err)
		}
		if bm.Seq != 42 || !bm.ReceivedAt.Equal(at) || bm.MessageID != m.MessageID || bm.Role != m.Role {
			t.Errorf("BatchMessage = %+v, want seq 42, received %v, message_id %q, role %q", bm, at, m.MessageID, m.Role)
		}
	})
}

// checkRejection checks a Decode rejection against what can be told of the
// body from outside: the reason is a contract reason, and the first failing
// check in the contract's order.
func checkRejection(t *testing.T, body []byte, err error) {
	t.Helper()
	r, ok := chat.ReasonOf(err)
	if !ok || !decodeReasons[r] {
		t.Fatalf("Decode(%q): ReasonOf(%v) = %q, %v", body, err, r, ok)
	}
	var want chat.Reason
	switch {
	case len(body) > fuzzMaxBytes:
		want = chat.ReasonTooLarge
	case !utf8.Valid(body) || !json.Valid(body):
		want = chat.ReasonBadJSON
	case bytes.TrimLeft(body, " \t\r\n")[0] != '{':
		want = chat.ReasonInvalid
	}
	if want != "" && r != want {
		t.Fatalf("Decode(%q) = %v, want reason %q", body, err, want)
	}
	if want == "" && (r == chat.ReasonTooLarge || r == chat.ReasonBadJSON) {
		t.Fatalf("Decode(%q) = %v for a JSON object within the limit", body, err)
	}
	if r != chat.ReasonIDMismatch {
		return
	}
	// id_mismatch needs a body id, under its exact name, that is a string
	// other than the subject's; and no body id of the wrong type.
	in := fields(t, body)
	mismatch := false
	for k, subject := range map[string]string{"user_id": alice.User, "device_id": alice.Device, "agent_id": alice.Agent} {
		v, ok := in[k]
		if !ok || string(v) == "null" {
			continue
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			t.Fatalf("Decode(%q) = %v, but %s %s is not a string (invalid comes first)", body, err, k, v)
		}
		mismatch = mismatch || s != subject
	}
	if !mismatch {
		t.Fatalf("Decode(%q) = %v, but every body id matches the subject", body, err)
	}
}
