package chat_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/opencontext/chatbuf/chat"
)

// keySet is every key Keys builds for one conversation.
type keySet struct {
	Prefix, Buffer, Inflight, Meta, Dedupe, Lock, Fence, Due string
}

func keysOf(k chat.Keys, c chat.Conversation) keySet {
	return keySet{
		Prefix:   k.Prefix(),
		Buffer:   k.Buffer(c),
		Inflight: k.Inflight(c),
		Meta:     k.Meta(c),
		Dedupe:   k.Dedupe(c),
		Lock:     k.Lock(c),
		Fence:    k.Fence(c),
		Due:      k.Due(),
	}
}

func TestKeys(t *testing.T) {
	long := strings.Repeat("x", chat.MaxIDLen)
	tests := []struct {
		name string
		keys chat.Keys
		conv chat.Conversation
		want keySet
	}{
		{
			name: "plain ids",
			keys: chat.NewKeys(""),
			conv: chat.Conversation{User: "u", Device: "d", Agent: "a"},
			want: keySet{
				Prefix:   "opencontext:",
				Buffer:   "opencontext:chat:buffer:{u:d:a}",
				Inflight: "opencontext:chat:inflight:{u:d:a}",
				Meta:     "opencontext:chat:meta:{u:d:a}",
				Dedupe:   "opencontext:chat:dedupe:{u:d:a}",
				Lock:     "opencontext:lock:chat:flush:{u:d:a}",
				Fence:    "opencontext:lock:chat:fence:{u:d:a}",
				Due:      "opencontext:chat:due",
			},
		},
		{
			name: "default prefix spelled out",
			keys: chat.NewKeys(chat.DefaultKeyPrefix),
			conv: chat.Conversation{User: "alice", Device: "phone", Agent: "bot"},
			want: keySet{
				Prefix:   "opencontext:",
				Buffer:   "opencontext:chat:buffer:{alice:phone:bot}",
				Inflight: "opencontext:chat:inflight:{alice:phone:bot}",
				Meta:     "opencontext:chat:meta:{alice:phone:bot}",
				Dedupe:   "opencontext:chat:dedupe:{alice:phone:bot}",
				Lock:     "opencontext:lock:chat:flush:{alice:phone:bot}",
				Fence:    "opencontext:lock:chat:fence:{alice:phone:bot}",
				Due:      "opencontext:chat:due",
			},
		},
		{
			name: "not given ids",
			keys: chat.NewKeys(""),
			conv: chat.Conversation{User: "_", Device: "_", Agent: "_"},
			want: keySet{
				Prefix:   "opencontext:",
				Buffer:   "opencontext:chat:buffer:{_:_:_}",
				Inflight: "opencontext:chat:inflight:{_:_:_}",
				Meta:     "opencontext:chat:meta:{_:_:_}",
				Dedupe:   "opencontext:chat:dedupe:{_:_:_}",
				Lock:     "opencontext:lock:chat:flush:{_:_:_}",
				Fence:    "opencontext:lock:chat:fence:{_:_:_}",
				Due:      "opencontext:chat:due",
			},
		},
		{
			name: "colon in user",
			keys: chat.NewKeys(""),
			conv: chat.Conversation{User: "a:b", Device: "c", Agent: "d"},
			want: keySet{
				Prefix:   "opencontext:",
				Buffer:   "opencontext:chat:buffer:{a%3Ab:c:d}",
				Inflight: "opencontext:chat:inflight:{a%3Ab:c:d}",
				Meta:     "opencontext:chat:meta:{a%3Ab:c:d}",
				Dedupe:   "opencontext:chat:dedupe:{a%3Ab:c:d}",
				Lock:     "opencontext:lock:chat:flush:{a%3Ab:c:d}",
				Fence:    "opencontext:lock:chat:fence:{a%3Ab:c:d}",
				Due:      "opencontext:chat:due",
			},
		},
		{
			name: "colon in device",
			keys: chat.NewKeys(""),
			conv: chat.Conversation{User: "a", Device: "b:c", Agent: "d"},
			want: keySet{
				Prefix:   "opencontext:",
				Buffer:   "opencontext:chat:buffer:{a:b%3Ac:d}",
				Inflight: "opencontext:chat:inflight:{a:b%3Ac:d}",
				Meta:     "opencontext:chat:meta:{a:b%3Ac:d}",
				Dedupe:   "opencontext:chat:dedupe:{a:b%3Ac:d}",
				Lock:     "opencontext:lock:chat:flush:{a:b%3Ac:d}",
				Fence:    "opencontext:lock:chat:fence:{a:b%3Ac:d}",
				Due:      "opencontext:chat:due",
			},
		},
		{
			name: "braces and percent",
			keys: chat.NewKeys(""),
			conv: chat.Conversation{User: "{u}", Device: "100%", Agent: "%7B}"},
			want: keySet{
				Prefix:   "opencontext:",
				Buffer:   "opencontext:chat:buffer:{%7Bu%7D:100%25:%257B%7D}",
				Inflight: "opencontext:chat:inflight:{%7Bu%7D:100%25:%257B%7D}",
				Meta:     "opencontext:chat:meta:{%7Bu%7D:100%25:%257B%7D}",
				Dedupe:   "opencontext:chat:dedupe:{%7Bu%7D:100%25:%257B%7D}",
				Lock:     "opencontext:lock:chat:flush:{%7Bu%7D:100%25:%257B%7D}",
				Fence:    "opencontext:lock:chat:fence:{%7Bu%7D:100%25:%257B%7D}",
				Due:      "opencontext:chat:due",
			},
		},
		{
			name: "every special character in one id",
			keys: chat.NewKeys(""),
			conv: chat.Conversation{User: "%{a:b}%", Device: "}{", Agent: "::"},
			want: keySet{
				Prefix:   "opencontext:",
				Buffer:   "opencontext:chat:buffer:{%25%7Ba%3Ab%7D%25:%7D%7B:%3A%3A}",
				Inflight: "opencontext:chat:inflight:{%25%7Ba%3Ab%7D%25:%7D%7B:%3A%3A}",
				Meta:     "opencontext:chat:meta:{%25%7Ba%3Ab%7D%25:%7D%7B:%3A%3A}",
				Dedupe:   "opencontext:chat:dedupe:{%25%7Ba%3Ab%7D%25:%7D%7B:%3A%3A}",
				Lock:     "opencontext:lock:chat:flush:{%25%7Ba%3Ab%7D%25:%7D%7B:%3A%3A}",
				Fence:    "opencontext:lock:chat:fence:{%25%7Ba%3Ab%7D%25:%7D%7B:%3A%3A}",
				Due:      "opencontext:chat:due",
			},
		},
		{
			name: "non-ASCII and underscore",
			keys: chat.NewKeys(""),
			conv: chat.Conversation{User: "ü-ser", Device: "_", Agent: "機器人"},
			want: keySet{
				Prefix:   "opencontext:",
				Buffer:   "opencontext:chat:buffer:{ü-ser:_:機器人}",
				Inflight: "opencontext:chat:inflight:{ü-ser:_:機器人}",
				Meta:     "opencontext:chat:meta:{ü-ser:_:機器人}",
				Dedupe:   "opencontext:chat:dedupe:{ü-ser:_:機器人}",
				Lock:     "opencontext:lock:chat:flush:{ü-ser:_:機器人}",
				Fence:    "opencontext:lock:chat:fence:{ü-ser:_:機器人}",
				Due:      "opencontext:chat:due",
			},
		},
		{
			name: "128-byte id",
			keys: chat.NewKeys(""),
			conv: chat.Conversation{User: long, Device: "d", Agent: "a"},
			want: keySet{
				Prefix:   "opencontext:",
				Buffer:   "opencontext:chat:buffer:{" + long + ":d:a}",
				Inflight: "opencontext:chat:inflight:{" + long + ":d:a}",
				Meta:     "opencontext:chat:meta:{" + long + ":d:a}",
				Dedupe:   "opencontext:chat:dedupe:{" + long + ":d:a}",
				Lock:     "opencontext:lock:chat:flush:{" + long + ":d:a}",
				Fence:    "opencontext:lock:chat:fence:{" + long + ":d:a}",
				Due:      "opencontext:chat:due",
			},
		},
		{
			name: "custom prefix",
			keys: chat.NewKeys("myapp:"),
			conv: chat.Conversation{User: "a:b", Device: "c", Agent: "d"},
			want: keySet{
				Prefix:   "myapp:",
				Buffer:   "myapp:chat:buffer:{a%3Ab:c:d}",
				Inflight: "myapp:chat:inflight:{a%3Ab:c:d}",
				Meta:     "myapp:chat:meta:{a%3Ab:c:d}",
				Dedupe:   "myapp:chat:dedupe:{a%3Ab:c:d}",
				Lock:     "myapp:lock:chat:flush:{a%3Ab:c:d}",
				Fence:    "myapp:lock:chat:fence:{a%3Ab:c:d}",
				Due:      "myapp:chat:due",
			},
		},
		{
			name: "zero Keys keeps an empty prefix",
			keys: chat.Keys{},
			conv: chat.Conversation{User: "u", Device: "d", Agent: "a"},
			want: keySet{
				Buffer:   "chat:buffer:{u:d:a}",
				Inflight: "chat:inflight:{u:d:a}",
				Meta:     "chat:meta:{u:d:a}",
				Dedupe:   "chat:dedupe:{u:d:a}",
				Lock:     "lock:chat:flush:{u:d:a}",
				Fence:    "lock:chat:fence:{u:d:a}",
				Due:      "chat:due",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, keysOf(tt.keys, tt.conv)); diff != "" {
				t.Errorf("keys of %#v (-want +got):\n%s", tt.conv, diff)
			}
		})
	}
}

// TestKeysSeparateTriples checks that triples whose plain joins collide get
// different keys in every key kind.
func TestKeysSeparateTriples(t *testing.T) {
	k := chat.NewKeys("")
	pairs := []struct {
		name string
		a, b chat.Conversation
	}{
		{"colon moves between user and device", chat.Conversation{User: "a:b", Device: "c", Agent: "d"}, chat.Conversation{User: "a", Device: "b:c", Agent: "d"}},
		{"colon moves between device and agent", chat.Conversation{User: "a", Device: "b:c", Agent: "d"}, chat.Conversation{User: "a", Device: "b", Agent: "c:d"}},
		{"escape-looking id against its character", chat.Conversation{User: "%3A", Device: "d", Agent: "a"}, chat.Conversation{User: ":", Device: "d", Agent: "a"}},
		{"escaped percent against percent", chat.Conversation{User: "%25", Device: "d", Agent: "a"}, chat.Conversation{User: "%", Device: "d", Agent: "a"}},
		{"brace closes the hash tag early", chat.Conversation{User: "u}x", Device: "d", Agent: "a"}, chat.Conversation{User: "u", Device: "d", Agent: "a"}},
	}
	for _, p := range pairs {
		t.Run(p.name, func(t *testing.T) {
			ka, kb := keysOf(k, p.a), keysOf(k, p.b)
			for _, f := range []struct{ kind, a, b string }{
				{"Buffer", ka.Buffer, kb.Buffer},
				{"Inflight", ka.Inflight, kb.Inflight},
				{"Meta", ka.Meta, kb.Meta},
				{"Dedupe", ka.Dedupe, kb.Dedupe},
				{"Lock", ka.Lock, kb.Lock},
				{"Fence", ka.Fence, kb.Fence},
				{"Tag", p.a.Tag(), p.b.Tag()},
				{"BatchID", chat.BatchID(p.a, 1), chat.BatchID(p.b, 1)},
			} {
				if f.a == f.b {
					t.Errorf("%s: %#v and %#v share %q", f.kind, p.a, p.b, f.a)
				}
			}
		})
	}
}

func TestEscapeID(t *testing.T) {
	tests := []struct {
		name, id, want string
	}{
		{"plain", "alice", "alice"},
		{"not given", "_", "_"},
		{"non-ASCII", "ü-ser", "ü-ser"},
		{"colon", "a:b", "a%3Ab"},
		{"percent", "100%", "100%25"},
		{"open brace", "{", "%7B"},
		{"close brace", "}", "%7D"},
		{"escape-looking", "%3A", "%253A"},
		{"all", "%:{}", "%25%3A%7B%7D"},
		{"non-ASCII next to escapes", "ü:{ß}", "ü%3A%7Bß%7D"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := chat.EscapeID(tt.id)
			if got != tt.want {
				t.Errorf("EscapeID(%q) = %q, want %q", tt.id, got, tt.want)
			}
			back, err := chat.UnescapeID(got)
			if err != nil {
				t.Fatalf("UnescapeID(%q): %v", got, err)
			}
			if back != tt.id {
				t.Errorf("UnescapeID(EscapeID(%q)) = %q", tt.id, back)
			}
		})
	}
}

func TestUnescapeIDRejectsNonCanonical(t *testing.T) {
	for _, s := range []string{
		"%3a",    // lower-case hex: EscapeID writes %3A
		"%7b",    // lower-case hex
		"%7d",    // lower-case hex
		"%41",    // an escape of a character EscapeID leaves alone
		"%2",     // truncated
		"a%",     // truncated at the end
		"%25%",   // a good escape, then a truncated one
		"%%25",   // a bare percent
		"a:b",    // a raw separator
		"{a",     // a raw brace
		"a}",     // a raw brace
		"%zz",    // not hex
		"%3A:%3", // separator and truncation
	} {
		t.Run(s, func(t *testing.T) {
			if got, err := chat.UnescapeID(s); err == nil {
				t.Errorf("UnescapeID(%q) = %q, want an error", s, got)
			}
		})
	}
}

func TestTag(t *testing.T) {
	tests := []struct {
		name string
		conv chat.Conversation
		want string
	}{
		{"plain", chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}, "alice:phone:bot"},
		{"hostile", chat.Conversation{User: "a:b", Device: "{d}", Agent: "50%"}, "a%3Ab:%7Bd%7D:50%25"},
		{"non-ASCII", chat.Conversation{User: "ü-ser", Device: "_", Agent: "_"}, "ü-ser:_:_"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.conv.Tag(); got != tt.want {
				t.Errorf("Tag() = %q, want %q", got, tt.want)
			}
			if got := tt.conv.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			back, err := chat.ParseTag(tt.want)
			if err != nil {
				t.Fatalf("ParseTag(%q): %v", tt.want, err)
			}
			if diff := cmp.Diff(tt.conv, back); diff != "" {
				t.Errorf("ParseTag(%q) (-want +got):\n%s", tt.want, diff)
			}
		})
	}
}

func TestParseTagRejects(t *testing.T) {
	for _, tag := range []string{
		"",
		"a:b",
		"a:b:c:d",
		"a%3a:b:c",
		"a:b%41:c",
		"a:b:c%2",
		"{a}:b:c",
	} {
		t.Run(tag, func(t *testing.T) {
			c, err := chat.ParseTag(tag)
			if err == nil {
				t.Fatalf("ParseTag(%q) = %#v, want an error", tag, c)
			}
			if r, ok := chat.ReasonOf(err); !ok || r != chat.ReasonBadID {
				t.Errorf("ReasonOf(%v) = %q, %v; want bad_id", err, r, ok)
			}
		})
	}
}

func FuzzKeysDistinct(f *testing.F) {
	f.Add("a:b", "c", "d", "a", "b:c", "d")
	f.Add("a", "b:c", "d", "a", "b", "c:d")
	f.Add("%3A", "d", "a", ":", "d", "a")
	f.Add("%25", "d", "a", "%", "d", "a")
	f.Add("{u}", "d", "a", "u", "d", "a")
	f.Add("ü-ser", "_", "_", "ü-ser", "_", "_")
	f.Add("alice", "phone", "bot", "alice", "phone", "bot")
	f.Add(strings.Repeat("x", 128), "d", "a", strings.Repeat("x", 127), "d", "a")
	keys := chat.NewKeys("")
	f.Fuzz(func(t *testing.T, u1, d1, a1, u2, d2, a2 string) {
		c1 := chat.Conversation{User: u1, Device: d1, Agent: a1}
		c2 := chat.Conversation{User: u2, Device: d2, Agent: a2}
		b1, b2 := keys.Buffer(c1), keys.Buffer(c2)
		t1, t2 := c1.Tag(), c2.Tag()
		if (c1 == c2) != (b1 == b2) {
			t.Errorf("%#v and %#v: Buffer keys %q and %q", c1, c2, b1, b2)
		}
		if (c1 == c2) != (t1 == t2) {
			t.Errorf("%#v and %#v: Tags %q and %q", c1, c2, t1, t2)
		}
		if (c1 == c2) != (chat.BatchID(c1, 7) == chat.BatchID(c2, 7)) {
			t.Errorf("%#v and %#v: batch ids %q and %q", c1, c2, chat.BatchID(c1, 7), chat.BatchID(c2, 7))
		}
		for _, c := range []chat.Conversation{c1, c2} {
			// The key's hash tag, the part between the first { and the
			// next }, is the whole tag, so a conversation's keys share a
			// Redis Cluster slot.
			key := keys.Buffer(c)
			open := strings.IndexByte(key, '{')
			end := strings.IndexByte(key[open+1:], '}')
			if open < 0 || end < 0 || key[open+1:open+1+end] != c.Tag() || open+1+end != len(key)-1 {
				t.Errorf("Buffer(%#v) = %q: hash tag is not the conversation's tag %q", c, key, c.Tag())
			}
			if strings.Count(c.Tag(), ":") != 2 {
				t.Errorf("Tag(%#v) = %q has %d colons, want 2", c, c.Tag(), strings.Count(c.Tag(), ":"))
			}
			// ParseTag inverts Tag for every triple; the contract needs it
			// for valid ids, and it holds for all.
			back, err := chat.ParseTag(c.Tag())
			if err != nil {
				t.Errorf("ParseTag(Tag(%#v)): %v", c, err)
			} else if back != c {
				t.Errorf("ParseTag(Tag(%#v)) = %#v", c, back)
			}
		}
	})
}
