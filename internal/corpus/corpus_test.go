package corpus

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"github.com/opencontext/chatbuf/chat"
)

func TestRepositoryCorpusDecodes(t *testing.T) {
	convs, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range convs {
		subject := c.Conv.Subject("opencontext.chat", "in")
		if back, err := chat.ParseSubject("opencontext.chat", "in", subject); err != nil || back != c.Conv {
			t.Errorf("%s: subject %q names %+v (%v), want %+v", c.Name, subject, back, err, c.Conv)
		}
		for i, m := range c.Messages {
			if len(m) > chat.DefaultMaxMessageBytes {
				t.Errorf("%s message %d: %d bytes, over the default limit %d", c.Name, i+1, len(m), chat.DefaultMaxMessageBytes)
			}
			if _, err := chat.Decode(m, c.Conv, 0); err != nil {
				t.Errorf("%s message %d: %v", c.Name, i+1, err)
			}
		}
	}
}

// TestRepositoryCorpusCovers checks that the corpus holds what it is for.
func TestRepositoryCorpusCovers(t *testing.T) {
	convs, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	var text, ids strings.Builder
	longest, parts := 0, 0
	for _, c := range convs {
		ids.WriteString(c.Conv.User + c.Conv.Device + c.Conv.Agent)
		for _, m := range c.Messages {
			text.Write(m)
			longest = max(longest, len(m))
			if strings.Contains(string(m), `"content":[`) {
				parts++
			}
		}
	}
	has := func(s string, f func(rune) bool) bool { return strings.IndexFunc(s, f) >= 0 }
	for _, x := range []struct {
		what string
		ok   bool
	}{
		{"Han characters", has(text.String(), func(r rune) bool { return unicode.Is(unicode.Han, r) })},
		{"Hiragana or Katakana", has(text.String(), func(r rune) bool { return unicode.In(r, unicode.Hiragana, unicode.Katakana) })},
		{"Hangul", has(text.String(), func(r rune) bool { return unicode.Is(unicode.Hangul, r) })},
		{"Arabic", has(text.String(), func(r rune) bool { return unicode.Is(unicode.Arabic, r) })},
		{"Hebrew", has(text.String(), func(r rune) bool { return unicode.Is(unicode.Hebrew, r) })},
		{"Cyrillic", has(text.String(), func(r rune) bool { return unicode.Is(unicode.Cyrillic, r) })},
		{"emoji", has(text.String(), func(r rune) bool { return r >= 0x1F300 && r <= 0x1FAFF })},
		{"a zero-width joiner sequence", strings.Contains(text.String(), "\u200d")},
		{"content-part arrays", parts >= 3},
		{"a message near 60 KB", longest >= 58_000},
		{"an id with '.'", strings.Contains(ids.String(), ".")},
		{"an id with '@'", strings.Contains(ids.String(), "@")},
		{"an id with ':'", strings.Contains(ids.String(), ":")},
		{"an id with a space", strings.Contains(ids.String(), " ")},
		{"an id with '%'", strings.Contains(ids.String(), "%")},
		{"an id with '*' or '>'", strings.ContainsAny(ids.String(), "*>")},
		{"a non-ASCII id", has(ids.String(), func(r rune) bool { return r > unicode.MaxASCII })},
	} {
		if !x.ok {
			t.Errorf("the corpus has no %s", x.what)
		}
	}
}

func TestLoadRejectsMalformedFiles(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"message not an object", `{"user":"u","device":"d","agent":"a","messages":["hi"]}`, "not a JSON object"},
		{"unknown field", `{"user":"u","device":"d","agent":"a","subject":"x","messages":[{}]}`, "unknown field"},
		{"missing id", `{"user":"u","device":"","agent":"a","messages":[{}]}`, "required"},
		{"no messages", `{"user":"u","device":"d","agent":"a","messages":[]}`, "no messages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "c.json"), []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := Load(t.TempDir()); err == nil {
		t.Fatal("Load of an empty directory: no error")
	}
}
