package chat_test

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/opencontext/chatbuf/chat"
)

func TestValidateID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"plain", "alice", true},
		{"not given", "_", true},
		{"one byte", "a", true},
		{"128 bytes", strings.Repeat("x", 128), true},
		{"128 bytes of two-byte runes", strings.Repeat("ü", 64), true},
		{"non-ASCII", "ü-ser", true},
		{"redis specials", "%{a:b}%", true},
		{"quote and backslash", `q"u\o`, true},
		{"dot", "a.b", true},
		{"email", "alice.smith@example.com", true},
		{"star", "*", true},
		{"greater than", "a>", true},
		{"space", "a b", true},
		{"all five subject bytes", ". * > %", true},
		{"no-break space", "a\u00a0b", true},
		{"ideographic space", "a\u3000b", true},
		{"line separator (not a control character)", "a\u2028b", true},
		{"U+FFFD written out", "a\ufffd", true},
		{"emoji", "\U0001F600", true},
		{"empty", "", false},
		{"129 bytes", strings.Repeat("x", 129), false},
		{"130 bytes of two-byte runes", strings.Repeat("ü", 65), false},
		{"tab", "a\tb", false},
		{"newline", "a\n", false},
		{"carriage return", "\ra", false},
		{"NUL", "a\x00", false},
		{"escape", "\x1b[0m", false},
		{"DEL", "a\x7f", false},
		{"C1 control", "a\u0085", false},
		{"C1 control after non-ASCII", "ü\u009f", false},
		{"invalid UTF-8", "a\xffb", false},
		{"truncated UTF-8", "\xc3", false},
		{"surrogate half in UTF-8", "\xed\xa0\x80", false},
		{"overlong UTF-8", "\xc0\xaf", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := chat.ValidateID(tt.id)
			if tt.ok {
				if err != nil {
					t.Errorf("ValidateID(%q) = %v, want nil", tt.id, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateID(%q) = nil, want an error", tt.id)
			}
			if !errors.Is(err, chat.ErrBadID) {
				t.Errorf("ValidateID(%q) = %v, not ErrBadID", tt.id, err)
			}
		})
	}
}

func TestConversationValidateNamesTheField(t *testing.T) {
	tests := []struct {
		name string
		conv chat.Conversation
		want string // "" for valid
	}{
		{"valid", chat.Conversation{User: "u", Device: "d", Agent: "a"}, ""},
		{"bad user", chat.Conversation{User: "", Device: "d", Agent: "a"}, "user id"},
		{"valid with dots and spaces", chat.Conversation{User: "a.b@c.d", Device: "my phone", Agent: "*>"}, ""},
		{"bad device", chat.Conversation{User: "u", Device: "d\nx", Agent: "a"}, "device id"},
		{"bad agent", chat.Conversation{User: "u", Device: "d", Agent: "a\x7f"}, "agent id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.conv.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Errorf("Validate() = nil, want an error naming %q", tt.want)
			case tt.want != "" && (!errors.Is(err, chat.ErrBadID) || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want ErrBadID naming %q", err, tt.want)
			}
		})
	}
}

func TestSubject(t *testing.T) {
	tests := []struct {
		name         string
		conv         chat.Conversation
		prefix, kind string
		want         string
	}{
		{"plain in", chat.Conversation{User: "ü-ser", Device: "a:b", Agent: "_"}, "opencontext.chat", "in", "opencontext.chat.in.ü-ser.a:b._"},
		{"plain flushed", chat.Conversation{User: "ü-ser", Device: "a:b", Agent: "_"}, "opencontext.chat", "flushed", "opencontext.chat.flushed.ü-ser.a:b._"},
		{"plain flush", chat.Conversation{User: "ü-ser", Device: "a:b", Agent: "_"}, "opencontext.chat", "flush", "opencontext.chat.flush.ü-ser.a:b._"},
		{"one-token prefix", chat.Conversation{User: "u", Device: "d", Agent: "a"}, "p", "in", "p.in.u.d.a"},
		{"email", chat.Conversation{User: "alice.b@example.com", Device: "phone", Agent: "bot"}, "P", "in", "P.in.alice%2Eb@example%2Ecom.phone.bot"},
		{"every encoded byte", chat.Conversation{User: ".", Device: "* >", Agent: "100%"}, "P", "flushed", "P.flushed.%2E.%2A%20%3E.100%25"},
		{"encoded in flush", chat.Conversation{User: "a b", Device: "d", Agent: "a"}, "P", "flush", "P.flush.a%20b.d.a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.conv.Subject(tt.prefix, tt.kind); got != tt.want {
				t.Errorf("Subject(%q, %q) = %q, want %q", tt.prefix, tt.kind, got, tt.want)
			}
		})
	}
}

func TestEncodeDecodeToken(t *testing.T) {
	tests := []struct {
		name, id, token string
	}{
		{"plain", "alice", "alice"},
		{"not given", "_", "_"},
		{"dot", "a.b", "a%2Eb"},
		{"star", "*", "%2A"},
		{"greater than", "a>", "a%3E"},
		{"space", "my phone", "my%20phone"},
		{"percent", "100%", "100%25"},
		{"percent that looks like an escape", "%2E", "%252E"},
		{"all five", ".*> %", "%2E%2A%3E%20%25"},
		{"runs of one byte", "..  %%", "%2E%2E%20%20%25%25"},
		{"email", "alice.smith@example.com", "alice%2Esmith@example%2Ecom"},
		{"colon needs no encoding", "a:b", "a:b"},
		{"redis specials stay", "{a:b}", "{a:b}"},
		{"non-ASCII stays", "ü-ser.名前", "ü-ser%2E名前"},
		{"no-break space stays", "a\u00a0b", "a\u00a0b"},
		{"hash, slash, dollar stay", "#/$-_~", "#/$-_~"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := chat.EncodeToken(tt.id); got != tt.token {
				t.Errorf("EncodeToken(%q) = %q, want %q", tt.id, got, tt.token)
			}
			got, err := chat.DecodeToken(tt.token)
			if err != nil || got != tt.id {
				t.Errorf("DecodeToken(%q) = %q, %v; want %q", tt.token, got, err, tt.id)
			}
		})
	}
}

func TestDecodeTokenRejects(t *testing.T) {
	tests := []struct {
		name, token string
	}{
		{"lone percent", "%"},
		{"percent at the end", "abc%"},
		{"one hex digit", "%2"},
		{"one hex digit at the end", "a%2"},
		{"lowercase hex", "%2e"},
		{"lowercase second digit", "a%3e"},
		{"lowercase first digit", "%2a"},
		{"needless colon", "%3A"},
		{"needless letter", "%41"},
		{"needless underscore", "%5F"},
		{"needless non-ASCII byte", "%C3%BC"},
		{"not hex", "%ZZ"},
		{"half hex", "%2G"},
		{"sign", "%+2"},
		{"percent then valid", "%%25"},
		{"raw star", "*"},
		{"raw greater than", "a>b"},
		{"raw space", "a b"},
		{"raw dot", "a.b"},
		{"good escape then bad", "%2E%2e"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chat.DecodeToken(tt.token)
			if err == nil {
				t.Fatalf("DecodeToken(%q) = %q, want an error", tt.token, got)
			}
			if !errors.Is(err, chat.ErrBadID) {
				t.Errorf("DecodeToken(%q) = %v, not ErrBadID", tt.token, err)
			}
		})
	}
}

func TestParseSubject(t *testing.T) {
	long := strings.Repeat("y", chat.MaxIDLen)
	tests := []struct {
		name    string
		prefix  string
		kind    string
		subject string
		want    chat.Conversation
		wantErr bool
	}{
		{
			name:   "default prefix with a dot",
			prefix: "opencontext.chat", kind: "in",
			subject: "opencontext.chat.in.alice.phone.bot",
			want:    chat.Conversation{User: "alice", Device: "phone", Agent: "bot"},
		},
		{
			name:   "flush kind",
			prefix: "opencontext.chat", kind: "flush",
			subject: "opencontext.chat.flush.alice.phone.bot",
			want:    chat.Conversation{User: "alice", Device: "phone", Agent: "bot"},
		},
		{
			name:   "prefix with three dots",
			prefix: "a.b.c.d", kind: "in",
			subject: "a.b.c.d.in.u.d.a",
			want:    chat.Conversation{User: "u", Device: "d", Agent: "a"},
		},
		{
			name:   "one-token prefix",
			prefix: "chat", kind: "in",
			subject: "chat.in.u.d.a",
			want:    chat.Conversation{User: "u", Device: "d", Agent: "a"},
		},
		{
			name:   "hostile but valid ids",
			prefix: "opencontext.chat", kind: "in",
			subject: "opencontext.chat.in.a:b.{c}.50%25",
			want:    chat.Conversation{User: "a:b", Device: "{c}", Agent: "50%"},
		},
		{
			name:   "encoded dot",
			prefix: "P", kind: "in",
			subject: "P.in.alice%2Eb.phone.bot",
			want:    chat.Conversation{User: "alice.b", Device: "phone", Agent: "bot"},
		},
		{
			name:   "every encoded byte, one per id",
			prefix: "opencontext.chat", kind: "flushed",
			subject: "opencontext.chat.flushed.%2A.%3E%20%3E.%25%2E",
			want:    chat.Conversation{User: "*", Device: "> >", Agent: "%."},
		},
		{
			name:   "email, spaces and non-ASCII",
			prefix: "opencontext.chat", kind: "flush",
			subject: "opencontext.chat.flush.bob@example%2Eorg.Bob's%20iPhone.名前%20ü",
			want:    chat.Conversation{User: "bob@example.org", Device: "Bob's iPhone", Agent: "名前 ü"},
		},
		{
			name:   "not given and non-ASCII",
			prefix: "opencontext.chat", kind: "in",
			subject: "opencontext.chat.in.ü-ser._._",
			want:    chat.Conversation{User: "ü-ser", Device: "_", Agent: "_"},
		},
		{
			name:   "128-byte id",
			prefix: "opencontext.chat", kind: "in",
			subject: "opencontext.chat.in." + long + ".d.a",
			want:    chat.Conversation{User: long, Device: "d", Agent: "a"},
		},
		{
			name:   "128-byte id of encoded bytes (384-byte token)",
			prefix: "opencontext.chat", kind: "in",
			subject: "opencontext.chat.in." + strings.Repeat("%2E", chat.MaxIDLen) + ".d.a",
			want:    chat.Conversation{User: strings.Repeat(".", chat.MaxIDLen), Device: "d", Agent: "a"},
		},
		{name: "wrong prefix", prefix: "opencontext.chat", kind: "in", subject: "other.chat.in.u.d.a", wantErr: true},
		{name: "prefix without its last token", prefix: "opencontext.chat", kind: "in", subject: "opencontext.in.u.d.a", wantErr: true},
		{name: "wrong kind", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.flushed.u.d.a", wantErr: true},
		{name: "kind prefix of another", prefix: "opencontext.chat", kind: "flush", subject: "opencontext.chat.flushed.u.d.a", wantErr: true},
		{name: "two tokens", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.d", wantErr: true},
		{name: "one token", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u", wantErr: true},
		{name: "four tokens", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.d.a.x", wantErr: true},
		{name: "nothing after the kind", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.", wantErr: true},
		{name: "no dot after the kind", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in", wantErr: true},
		{name: "empty token", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u..a", wantErr: true},
		{name: "trailing dot", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.d.", wantErr: true},
		{name: "wildcard star", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.*.a", wantErr: true},
		{name: "star inside a token", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.d*x.a", wantErr: true},
		{name: "lone percent", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.50%.d.a", wantErr: true},
		{name: "one hex digit", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.d%2.a", wantErr: true},
		{name: "lowercase hex", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.alice%2eb.d.a", wantErr: true},
		{name: "needless colon", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.a%3Ab.d.a", wantErr: true},
		{name: "needless letter", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.d.%41", wantErr: true},
		{name: "not hex", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.%ZZ.a", wantErr: true},
		{name: "encoded control character", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.d.a%0A", wantErr: true},
		{name: "decoded id over 128 bytes", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in." + strings.Repeat("%2E", chat.MaxIDLen+1) + ".d.a", wantErr: true},
		{name: "decoded id empty", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u..a", wantErr: true},
		{name: "wildcard greater than", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.d.>", wantErr: true},
		{name: "space in id", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u x.d.a", wantErr: true},
		{name: "control in id", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.d\x01.a", wantErr: true},
		{name: "DEL in id", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.d.a\x7f", wantErr: true},
		{name: "C1 control in id", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u\u0085.d.a", wantErr: true},
		{name: "invalid UTF-8 id", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.\xff.d.a", wantErr: true},
		{name: "129-byte id", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.d." + long + "z", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chat.ParseSubject(tt.prefix, tt.kind, tt.subject)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseSubject(%q) = %#v, want an error", tt.subject, got)
				}
				if !errors.Is(err, chat.ErrBadID) {
					t.Errorf("ParseSubject(%q) = %v, not ErrBadID", tt.subject, err)
				}
				if r, ok := chat.ReasonOf(err); !ok || r != chat.ReasonBadID {
					t.Errorf("ReasonOf(%v) = %q, %v; want bad_id", err, r, ok)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSubject(%q): %v", tt.subject, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseSubject(%q) (-want +got):\n%s", tt.subject, diff)
			}
			if back := got.Subject(tt.prefix, tt.kind); back != tt.subject {
				t.Errorf("Subject() = %q, want %q", back, tt.subject)
			}
		})
	}
}

// idOK is the identifier rule written out independently of ValidateID.
func idOK(id string) bool {
	if len(id) < 1 || len(id) > 128 || !utf8.ValidString(id) {
		return false
	}
	return !strings.ContainsFunc(id, unicode.IsControl)
}

func FuzzValidateID(f *testing.F) {
	for _, id := range []string{
		"alice", "_", "ü-ser", "%{a:b}%", "", "a.b", "*", ">", "a b", "\x00", "\xff", "a@b.c",
		"a\u00a0", "a\u0085", strings.Repeat("x", 128), strings.Repeat("x", 129), strings.Repeat("ü", 64),
	} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := chat.ValidateID(id)
		if want := idOK(id); (err == nil) != want {
			t.Fatalf("ValidateID(%q) = %v, rules say ok=%v", id, err, want)
		}
		if err != nil {
			if !errors.Is(err, chat.ErrBadID) {
				t.Fatalf("ValidateID(%q) = %v, not ErrBadID", id, err)
			}
			return
		}
		// An accepted id survives the subject and tag round trips.
		c := chat.Conversation{User: id, Device: id, Agent: id}
		got, err := chat.ParseSubject("opencontext.chat", "in", c.Subject("opencontext.chat", "in"))
		if err != nil || got != c {
			t.Fatalf("ParseSubject(Subject(%#v)) = %#v, %v", c, got, err)
		}
		if got, err := chat.ParseTag(c.Tag()); err != nil || got != c {
			t.Fatalf("ParseTag(Tag(%#v)) = %#v, %v", c, got, err)
		}
	})
}

// subjectTokenBytes are the bytes a subject token never holds as they are.
const subjectTokenBytes = ".*> "

func FuzzSubjectRoundTrip(f *testing.F) {
	for _, s := range []string{
		"alice", "_", "alice.b", "a@b.c", "my phone", "* >", "100%", "%2E", "%252E", "a:b", "{x}", "ü-ser",
		"名前", "\u00a0", "\u2028", "\t", "\x7f", "\u0085", "\xff", "", "%", "%2", "%2e", "%3A", "%41", "%ZZ",
		"a.b.c", "u.d.a", "u.d.a.x", "u..a", strings.Repeat(".", 128), strings.Repeat(".", 129), strings.Repeat("%2E", 128),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Any subject: ParseSubject does not panic, and a subject it
		// accepts is the one subject of its conversation.
		for _, subject := range []string{"P.in." + s, "P.in." + s + ".d.a", "P.in.u." + s + ".a", "P.in.u.d." + s} {
			c, err := chat.ParseSubject("P", "in", subject)
			if err != nil {
				if !errors.Is(err, chat.ErrBadID) {
					t.Fatalf("ParseSubject(%q) = %v, not ErrBadID", subject, err)
				}
				continue
			}
			if back := c.Subject("P", "in"); back != subject {
				t.Fatalf("ParseSubject(%q) = %#v, whose subject is %q: two subjects for one conversation", subject, c, back)
			}
		}
		// Any token: one that decodes is the encoding of its id.
		if id, err := chat.DecodeToken(s); err == nil {
			if back := chat.EncodeToken(id); back != s {
				t.Fatalf("DecodeToken(%q) = %q, which encodes as %q", s, id, back)
			}
		} else if !errors.Is(err, chat.ErrBadID) {
			t.Fatalf("DecodeToken(%q) = %v, not ErrBadID", s, err)
		}
		// Any id: encoded, it is one token without the bytes a token
		// cannot hold, and it decodes to itself.
		tok := chat.EncodeToken(s)
		if strings.ContainsAny(tok, subjectTokenBytes) {
			t.Fatalf("EncodeToken(%q) = %q, holds one of %q", s, tok, subjectTokenBytes)
		}
		if got, err := chat.DecodeToken(tok); err != nil || got != s {
			t.Fatalf("DecodeToken(EncodeToken(%q)) = %q, %v", s, got, err)
		}
		// Any id valid by the rules: it survives the subject round trip in
		// every position and kind.
		if !idOK(s) {
			return
		}
		for _, c := range []chat.Conversation{{User: s, Device: "d", Agent: "a"}, {User: "u", Device: s, Agent: "a"}, {User: "u", Device: "d", Agent: s}, {User: s, Device: s, Agent: s}} {
			for _, kind := range []string{"in", "flushed", "flush"} {
				subject := c.Subject("opencontext.chat", kind)
				got, err := chat.ParseSubject("opencontext.chat", kind, subject)
				if err != nil || got != c {
					t.Fatalf("ParseSubject(%q) = %#v, %v; want %#v", subject, got, err, c)
				}
			}
		}
	})
}
