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

// Conversation is the triple a message belongs to. Its ids are the decoded
// tokens of the message's subject (see Subject).
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

// ValidateID checks one id: 1-128 bytes of valid UTF-8 without control
// characters (C0, DEL, C1). Dots, spaces, wildcards and any other
// character are allowed: Subject encodes what a subject token cannot hold.
func ValidateID(id string) error {
	if len(id) == 0 || len(id) > MaxIDLen {
		return fmt.Errorf("%w: length %d, want 1-%d bytes", ErrBadID, len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < ' ' || c >= 0x7f {
			return validateRunes(id[i:])
		}
	}
	return nil
}

// validateRunes is ValidateID's rune by rune check, for ids that are not
// plain printable ASCII.
func validateRunes(id string) error {
	for i := 0; i < len(id); {
		r, n := utf8.DecodeRuneInString(id[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			return fmt.Errorf("%w: not valid UTF-8", ErrBadID)
		case unicode.IsControl(r):
			return fmt.Errorf("%w: contains control character %U", ErrBadID, r)
		}
		i += n
	}
	return nil
}

// tokenEscape marks the bytes a subject token holds as %XX: the NATS
// separator and wildcards, the space that ends a subject, and % itself.
var tokenEscape = [256]bool{'.': true, '*': true, '>': true, ' ': true, '%': true}

const upperHex = "0123456789ABCDEF"

// EncodeToken returns id as a subject token: exactly the bytes . * > space
// and % are written %2E %2A %3E %20 %25, everything else stays as it is.
// An id without those bytes is its own token (and nothing is allocated).
func EncodeToken(id string) string {
	n := 0
	for i := 0; i < len(id); i++ {
		if tokenEscape[id[i]] {
			n++
		}
	}
	if n == 0 {
		return id
	}
	b := make([]byte, 0, len(id)+2*n)
	for i := 0; i < len(id); i++ {
		if c := id[i]; tokenEscape[c] {
			b = append(b, '%', upperHex[c>>4], upperHex[c&0xf])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

// DecodeToken is the inverse of EncodeToken. It accepts only the canonical
// form, so that every id has exactly one token: a % must start one of
// %2E %2A %3E %20 %25, uppercase, and none of . * > space may appear as it
// is. Errors wrap ErrBadID. The decoded id is not checked against the
// identifier rules (ValidateID does that). A token without % or those bytes
// is its own id (and nothing is allocated).
func DecodeToken(tok string) (string, error) {
	n := 0
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; tokenEscape[c] {
			if c != '%' {
				return "", fmt.Errorf("%w: token %q holds %q, which must be written %%%02X", ErrBadID, tok, c, c)
			}
			n++
		}
	}
	if n == 0 {
		return tok, nil
	}
	b := make([]byte, 0, max(len(tok)-2*n, 0))
	for i := 0; i < len(tok); i++ {
		if tok[i] != '%' {
			b = append(b, tok[i])
			continue
		}
		if i+3 > len(tok) {
			return "", fmt.Errorf("%w: token %q: %%%s is not %%XX with two hex digits", ErrBadID, tok, tok[i+1:])
		}
		c, ok := unhex(tok[i+1], tok[i+2])
		switch {
		case !ok:
			return "", fmt.Errorf("%w: token %q: %q is not %%XX with two uppercase hex digits", ErrBadID, tok, tok[i:i+3])
		case !tokenEscape[c]:
			return "", fmt.Errorf("%w: token %q: %q encodes a byte that is written as it is; only %%2E %%2A %%3E %%20 %%25 are encoded", ErrBadID, tok, tok[i:i+3])
		}
		b = append(b, c)
		i += 2
	}
	return string(b), nil
}

// unhex reads two uppercase hex digits.
func unhex(hi, lo byte) (byte, bool) {
	h, ok1 := hexDigit(hi)
	l, ok2 := hexDigit(lo)
	return h<<4 | l, ok1 && ok2
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Subject returns "<prefix>.<kind>.<user>.<device>.<agent>", each id
// encoded as a token (EncodeToken).
func (c Conversation) Subject(prefix, kind string) string {
	return prefix + "." + kind + "." + EncodeToken(c.User) + "." + EncodeToken(c.Device) + "." + EncodeToken(c.Agent)
}

// ParseSubject takes the conversation out of a subject
// "<prefix>.<kind>.<user>.<device>.<agent>": it decodes the id tokens
// (DecodeToken) and validates the ids (ValidateID). Errors wrap ErrBadID
// (dead-letter reason bad_id). Even with an error, the conversation holds
// what the subject has: the decoded id where a token decodes, else the
// token as it is, and empty ids when the subject lacks tokens.
func ParseSubject(prefix, kind, subject string) (Conversation, error) {
	rest, ok := cutHead(subject, prefix, kind)
	if !ok {
		return Conversation{}, fmt.Errorf("%w: subject %q does not start with %q", ErrBadID, subject, prefix+"."+kind+".")
	}
	user, rest, ok1 := strings.Cut(rest, ".")
	device, agent, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(agent, ".") {
		return Conversation{}, fmt.Errorf("%w: subject %q has %d id tokens after %q, want 3 (user.device.agent)",
			ErrBadID, subject, strings.Count(subject[len(prefix)+len(kind)+2:], ".")+1, prefix+"."+kind+".")
	}
	var c Conversation
	var errs [3]error
	c.User, errs[0] = parseToken("user", user)
	c.Device, errs[1] = parseToken("device", device)
	c.Agent, errs[2] = parseToken("agent", agent)
	for _, err := range errs {
		if err != nil {
			return c, err
		}
	}
	return c, nil
}

// cutHead returns what follows "<prefix>.<kind>." in subject.
func cutHead(subject, prefix, kind string) (string, bool) {
	n := len(prefix) + len(kind) + 2
	if len(subject) < n || subject[:len(prefix)] != prefix || subject[len(prefix)] != '.' ||
		subject[len(prefix)+1:n-1] != kind || subject[n-1] != '.' {
		return "", false
	}
	return subject[n:], true
}

// parseToken decodes and validates one id token of a subject. On an error
// it returns what it has: the decoded id, or the token when it does not
// decode.
func parseToken(name, tok string) (string, error) {
	id, err := DecodeToken(tok)
	if err != nil {
		return tok, fmt.Errorf("%s id: %w", name, err)
	}
	if err := ValidateID(id); err != nil {
		return id, fmt.Errorf("%s id: %w", name, err)
	}
	return id, nil
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
