package chat

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxIDLen is the longest user, device or agent id, in bytes.
const MaxIDLen = 128

// NotGiven is the id that stands for "not given", as in the original system.
const NotGiven = "_"

// ErrBadID reports an id that breaks the identifier rules.
var ErrBadID = errors.New("chat: bad id")

// Conversation is the triple a message belongs to. Its ids are the tokens of
// the message's subject.
type Conversation struct {
	User, Device, Agent string
}

// String returns the conversation's tag (see Tag).
func (c Conversation) String() string { return c.Tag() }

// Validate checks the three ids against the identifier rules.
func (c Conversation) Validate() error {
	for _, f := range [...]struct{ name, id string }{{"user", c.User}, {"device", c.Device}, {"agent", c.Agent}} {
		if err := ValidateID(f.id); err != nil {
			return fmt.Errorf("%s id: %w", f.name, err)
		}
	}
	return nil
}

// ValidateID checks one id: 1-128 bytes of UTF-8, no whitespace or control
// characters, none of the NATS wildcards or separator (. * >).
func ValidateID(id string) error {
	if len(id) == 0 || len(id) > MaxIDLen {
		return fmt.Errorf("%w: length %d, want 1-%d bytes", ErrBadID, len(id), MaxIDLen)
	}
	if !utf8.ValidString(id) {
		return fmt.Errorf("%w: not valid UTF-8", ErrBadID)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c == '.' || c == '*' || c == '>' || c >= 0x7f {
			return validateRunes(id[i:])
		}
	}
	return nil
}

// validateRunes is ValidateID's rune by rune check, for ids that are not
// plain printable ASCII.
func validateRunes(id string) error {
	for _, r := range id {
		switch {
		case r == '.' || r == '*' || r == '>':
			return fmt.Errorf("%w: contains %q", ErrBadID, r)
		case unicode.IsSpace(r) || unicode.IsControl(r):
			return fmt.Errorf("%w: contains whitespace or control character %U", ErrBadID, r)
		}
	}
	return nil
}

// Subject returns "<prefix>.<kind>.<user>.<device>.<agent>".
func (c Conversation) Subject(prefix, kind string) string {
	return prefix + "." + kind + "." + c.User + "." + c.Device + "." + c.Agent
}

// ParseSubject takes the conversation out of a subject
// "<prefix>.<kind>.<user>.<device>.<agent>" and validates its ids.
func ParseSubject(prefix, kind, subject string) (Conversation, error) {
	head := prefix + "." + kind + "."
	rest, ok := strings.CutPrefix(subject, head)
	if !ok {
		return Conversation{}, fmt.Errorf("%w: subject %q does not start with %q", ErrBadID, subject, head)
	}
	user, rest, ok1 := strings.Cut(rest, ".")
	device, agent, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(agent, ".") {
		return Conversation{}, fmt.Errorf("%w: subject %q has %d id tokens after %q, want 3 (user.device.agent)",
			ErrBadID, subject, strings.Count(subject[len(head):], ".")+1, head)
	}
	c := Conversation{User: user, Device: device, Agent: agent}
	return c, c.Validate()
}

// Tag is the conversation's escaped form "user:device:agent", unique per
// triple. It names the conversation inside Redis keys (between braces, so a
// conversation's keys share a Redis Cluster slot) and in batch ids.
func (c Conversation) Tag() string {
	return EscapeID(c.User) + ":" + EscapeID(c.Device) + ":" + EscapeID(c.Agent)
}

// ParseTag is the inverse of Tag.
func ParseTag(tag string) (Conversation, error) {
	parts := strings.Split(tag, ":")
	if len(parts) != 3 {
		return Conversation{}, fmt.Errorf("%w: tag %q has %d parts, want 3", ErrBadID, tag, len(parts))
	}
	var ids [3]string
	for i, p := range parts {
		id, err := UnescapeID(p)
		if err != nil {
			return Conversation{}, fmt.Errorf("%w: tag %q: %v", ErrBadID, tag, err)
		}
		ids[i] = id
	}
	return Conversation{User: ids[0], Device: ids[1], Agent: ids[2]}, nil
}

// EscapeID escapes the characters that would let two ids share a key:
// % -> %25, : -> %3A, { -> %7B, } -> %7D. Other ids stay as they are.
func EscapeID(id string) string {
	plain := true
	for i := 0; i < len(id) && plain; i++ {
		plain = id[i] != '%' && id[i] != ':' && id[i] != '{' && id[i] != '}'
	}
	if plain {
		return id
	}
	var b strings.Builder
	b.Grow(len(id) + 8)
	for i := 0; i < len(id); i++ {
		switch ch := id[i]; ch {
		case '%':
			b.WriteString("%25")
		case ':':
			b.WriteString("%3A")
		case '{':
			b.WriteString("%7B")
		case '}':
			b.WriteString("%7D")
		default:
			b.WriteByte(ch)
		}
	}
	return b.String()
}

// UnescapeID is the inverse of EscapeID. It rejects any escape EscapeID
// would not produce, so that every id has exactly one escaped form.
func UnescapeID(s string) (string, error) {
	if strings.ContainsAny(s, ":{}") {
		return "", fmt.Errorf("unescaped separator in %q", s)
	}
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+3 > len(s) {
			return "", fmt.Errorf("truncated escape in %q", s)
		}
		switch s[i+1 : i+3] {
		case "25":
			b.WriteByte('%')
		case "3A":
			b.WriteByte(':')
		case "7B":
			b.WriteByte('{')
		case "7D":
			b.WriteByte('}')
		default:
			return "", fmt.Errorf("unknown escape %q in %q", s[i:i+3], s)
		}
		i += 2
	}
	return b.String(), nil
}
