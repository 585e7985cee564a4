package completion

import (
	"strings"
	"testing"
)

func TestKeys(t *testing.T) {
	k := newKeys("opencontext:")
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"entry", k.entry("alice", "def foo"), "opencontext:completion:cache:{alice}:def foo"},
		{"entry escapes user and key", k.entry("a:b{c}%", "x:{y}"), "opencontext:completion:cache:{a%3Ab%7Bc%7D%25}:x%3A%7By%7D"},
		{"entry prefix", k.entryPrefix("alice"), "opencontext:completion:cache:{alice}:"},
		{"access order", k.accessOrder("alice"), "opencontext:completion:access_order:{alice}"},
		{"hot keys", k.hotKeys("alice"), "opencontext:completion:hot_keys:{alice}"},
		{"confidence order", k.confidenceOrder("alice"), "opencontext:completion:confidence_order:{alice}"},
		{"expiry order", k.expiryOrder("alice"), "opencontext:completion:expiry_order:{alice}"},
		{"key index", k.keyIndex("alice"), "opencontext:completion:key_index:{alice}"},
		{"stat", k.stat(statHits), "opencontext:completion:stats:hits"},
		{"precomputed", k.precomputed("alice", "doc:1"), "opencontext:completion:precomputed:{alice}:doc%3A1"},
		{"user with braces", k.hotKeys("{bob}"), "opencontext:completion:hot_keys:{%7Bbob%7D}"},
		{"custom prefix", newKeys("app:").stat(statMisses), "app:completion:stats:misses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("key = %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestEscape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice", "alice"},
		{"", ""},
		{"%", "%25"},
		{":", "%3A"},
		{"{", "%7B"},
		{"}", "%7D"},
		{"%3A", "%253A"},
		{"a:b", "a%3Ab"},
		{"日本*?[", "日本*?["},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := escape(tt.in); got != tt.want {
				t.Fatalf("escape(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestLexRange(t *testing.T) {
	tests := []struct {
		name, prefix, wantLo, wantHi string
	}{
		{"empty", "", "[", "+"},
		{"plain", "ab", "[ab", "(ac"},
		{"glob characters are data", "a*?[", "[a*?[", "(a*?\\"},
		{"trailing 0xff", "a\xff", "[a\xff", "(b"},
		{"only 0xff", "\xff\xff", "[\xff\xff", "+"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lo, hi := lexRange(tt.prefix)
			if lo != tt.wantLo || hi != tt.wantHi {
				t.Fatalf("lexRange(%q) = %q, %q; want %q, %q", tt.prefix, lo, hi, tt.wantLo, tt.wantHi)
			}
		})
	}
}

// inLexRange applies ZRANGEBYLEX's bounds to s.
func inLexRange(s, lo, hi string) bool {
	if s < lo[1:] {
		return false
	}
	switch hi[0] {
	case '+':
		return true
	case '(':
		return s < hi[1:]
	}
	return s <= hi[1:]
}

// Escaping keeps ids apart and keeps prefixes: what prefix invalidation and
// user isolation rely on.
func FuzzEscape(f *testing.F) {
	for _, s := range [][2]string{{"a", "a:b"}, {"%", "%25"}, {"{x}", "x"}, {"a\xff", "a\xff\xff"}, {"", "k"}, {"u*", "u*1"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ea, eb := escape(a), escape(b)
		if (ea == eb) != (a == b) {
			t.Fatalf("escape(%q) = %q, escape(%q) = %q", a, ea, b, eb)
		}
		if strings.ContainsAny(ea, ":{}") {
			t.Fatalf("escape(%q) = %q keeps a separator", a, ea)
		}
		lo, hi := lexRange(ea)
		if got, want := inLexRange(eb, lo, hi), strings.HasPrefix(b, a); got != want {
			t.Fatalf("%q in lexRange(escape(%q)) = %v, want %v", b, a, got, want)
		}
	})
}
