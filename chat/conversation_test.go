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
		{"empty", "", false},
		{"129 bytes", strings.Repeat("x", 129), false},
		{"130 bytes of two-byte runes", strings.Repeat("ü", 65), false},
		{"dot", "a.b", false},
		{"star", "*", false},
		{"greater than", "a>", false},
		{"space", "a b", false},
		{"tab", "a\tb", false},
		{"newline", "a\n", false},
		{"carriage return", "\ra", false},
		{"NUL", "a\x00", false},
		{"DEL", "a\x7f", false},
		{"C1 control", "a\u0085", false},
		{"no-break space", "a\u00a0b", false},
		{"ideographic space", "a\u3000b", false},
		{"line separator", "a\u2028b", false},
		{"invalid UTF-8", "a\xffb", false},
		{"truncated UTF-8", "\xc3", false},
		{"surrogate half in UTF-8", "\xed\xa0\x80", false},
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
		{"bad device", chat.Conversation{User: "u", Device: "d.x", Agent: "a"}, "device id"},
		{"bad agent", chat.Conversation{User: "u", Device: "d", Agent: "a b"}, "agent id"},
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
	c := chat.Conversation{User: "ü-ser", Device: "a:b", Agent: "_"}
	for _, tt := range []struct {
		prefix, kind, want string
	}{
		{"opencontext.chat", "in", "opencontext.chat.in.ü-ser.a:b._"},
		{"opencontext.chat", "flushed", "opencontext.chat.flushed.ü-ser.a:b._"},
		{"opencontext.chat", "flush", "opencontext.chat.flush.ü-ser.a:b._"},
		{"p", "in", "p.in.ü-ser.a:b._"},
	} {
		if got := c.Subject(tt.prefix, tt.kind); got != tt.want {
			t.Errorf("Subject(%q, %q) = %q, want %q", tt.prefix, tt.kind, got, tt.want)
		}
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
			subject: "opencontext.chat.in.a:b.{c}.50%",
			want:    chat.Conversation{User: "a:b", Device: "{c}", Agent: "50%"},
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
		{name: "wildcard greater than", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.d.>", wantErr: true},
		{name: "space in id", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u x.d.a", wantErr: true},
		{name: "control in id", prefix: "opencontext.chat", kind: "in", subject: "opencontext.chat.in.u.d\x01.a", wantErr: true},
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
	return !strings.ContainsFunc(id, func(r rune) bool {
		return r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r)
	})
}

func FuzzValidateID(f *testing.F) {
	for _, id := range []string{
		"alice", "_", "ü-ser", "%{a:b}%", "", "a.b", "*", ">", "a b", "\x00", "\xff",
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
		// An accepted id is a single subject token, and survives the
		// subject and tag round trips.
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
