package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultMaxMessageBytes is the default limit on a message body.
const DefaultMaxMessageBytes = 65536

// MaxMessageIDLen is the longest message_id, in bytes.
const MaxMessageIDLen = 128

// Reason names why a message is dead-lettered. The order of the constants is
// the order in which the checks run.
type Reason string

const (
	ReasonTooLarge   Reason = "too_large"
	ReasonBadID      Reason = "bad_id"
	ReasonBadJSON    Reason = "bad_json"
	ReasonInvalid    Reason = "invalid"
	ReasonIDMismatch Reason = "id_mismatch"
)

// Error is a message rejected by Decode, with the dead-letter reason.
type Error struct {
	Reason Reason
	Msg    string
}

func (e *Error) Error() string { return "chat: " + string(e.Reason) + ": " + e.Msg }

func reject(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Msg: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the dead-letter reason of an error from Decode or
// ParseSubject, and false for any other error.
func ReasonOf(err error) (Reason, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason, true
	}
	if errors.Is(err, ErrBadID) {
		return ReasonBadID, true
	}
	return "", false
}

// Roles lists the roles a message may have: OpenAI's.
var Roles = []string{"user", "assistant", "system", "tool", "developer", "function"}

var roles = func() map[string]bool {
	m := make(map[string]bool, len(Roles))
	for _, r := range Roles {
		m[r] = true
	}
	return m
}()

// Message is a validated chat message. Content and Metadata are the
// producer's JSON, verbatim.
type Message struct {
	Role      string
	Content   json.RawMessage // a JSON string or array
	MessageID string          // "" when not given
	Timestamp string          // RFC 3339, "" when not given
	Metadata  json.RawMessage // a JSON object, nil when not given
}

// DedupeKey is the key under which the message is deduplicated: its
// message_id, or else its place in CHAT_IN: the stream sequence and the time
// the stream stored it (unix ns). Both are the same on every redelivery;
// the stored time tells the message apart from one that got the same
// sequence after CHAT_IN was deleted and created again or restored.
func (m *Message) DedupeKey(seq uint64, storedNS int64) string {
	if m.MessageID != "" {
		return "m:" + m.MessageID
	}
	return "s:" + StreamIdentity(seq, storedNS)
}

// StreamIdentity is a CHAT_IN message's identity without its message_id:
// "<seq>:<stored unix ns>", unique across recreations of the stream.
func StreamIdentity(seq uint64, storedNS int64) string {
	return strconv.FormatUint(seq, 10) + ":" + strconv.FormatInt(storedNS, 10)
}

// wireMessage holds the body's members by their exact names. It is filled
// from a map rather than by json.Unmarshal into tagged fields, which would
// match names case-insensitively ("Role", "USER_ID"): the contract's fields
// are case-sensitive, and every other member is unknown and ignored.
type wireMessage struct {
	Role, Content, MessageID, Timestamp, Metadata json.RawMessage
	UserID, DeviceID, AgentID                     json.RawMessage
}

// Decode validates a message body received for conversation c (taken from
// the subject, already validated). maxBytes <= 0 means
// DefaultMaxMessageBytes. The checks run in the contract's order: too_large,
// bad_json, invalid, id_mismatch (bad_id belongs to the subject and is
// checked by ParseSubject before). Rejections are *Error values.
func Decode(body []byte, c Conversation, maxBytes int) (Message, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxMessageBytes
	}
	if len(body) > maxBytes {
		return Message{}, reject(ReasonTooLarge, "body is %d bytes, limit %d", len(body), maxBytes)
	}
	if !utf8.Valid(body) {
		return Message{}, reject(ReasonBadJSON, "body is not valid UTF-8")
	}
	if !json.Valid(body) {
		var v any
		err := json.Unmarshal(body, &v) // only for its message
		return Message{}, reject(ReasonBadJSON, "%v", err)
	}
	w, err := members(body)
	if err != nil {
		return Message{}, err
	}

	var m Message
	if m.Role, err = requiredString("role", w.Role); err != nil {
		return Message{}, err
	}
	if !roles[m.Role] {
		return Message{}, reject(ReasonInvalid, "unknown role %q, want user, assistant, system, tool, developer or function", m.Role)
	}
	switch {
	case isNull(w.Content):
		return Message{}, reject(ReasonInvalid, "content is missing")
	case w.Content[0] == '"' || w.Content[0] == '[':
		m.Content = w.Content
	default:
		return Message{}, reject(ReasonInvalid, "content must be a string or an array of parts")
	}
	if m.MessageID, err = optionalString("message_id", w.MessageID); err != nil {
		return Message{}, err
	}
	if len(m.MessageID) > MaxMessageIDLen {
		return Message{}, reject(ReasonInvalid, "message_id is %d bytes, limit %d", len(m.MessageID), MaxMessageIDLen)
	}
	if m.Timestamp, err = optionalString("timestamp", w.Timestamp); err != nil {
		return Message{}, err
	}
	if m.Timestamp != "" {
		if _, err := time.Parse(time.RFC3339Nano, m.Timestamp); err != nil {
			return Message{}, reject(ReasonInvalid, "timestamp %q is not RFC 3339", m.Timestamp)
		}
	}
	if !isNull(w.Metadata) {
		if w.Metadata[0] != '{' {
			return Message{}, reject(ReasonInvalid, "metadata must be a JSON object")
		}
		m.Metadata = w.Metadata
	}

	bodyIDs := [...]struct {
		name string
		raw  json.RawMessage
		want string
		id   string
	}{{"user_id", w.UserID, c.User, ""}, {"device_id", w.DeviceID, c.Device, ""}, {"agent_id", w.AgentID, c.Agent, ""}}
	// Every type check (invalid) runs before any comparison (id_mismatch).
	for i := range bodyIDs {
		if bodyIDs[i].id, err = optionalString(bodyIDs[i].name, bodyIDs[i].raw); err != nil {
			return Message{}, err
		}
	}
	for _, f := range bodyIDs {
		if !isNull(f.raw) && f.id != f.want {
			return Message{}, reject(ReasonIDMismatch, "%s %q in the body differs from %q in the subject", f.name, truncate(f.id, 140), f.want)
		}
	}
	return m, nil
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

func requiredString(name string, raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", reject(ReasonInvalid, "%s is missing", name)
	}
	return optionalString(name, raw)
}

func optionalString(name string, raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	if raw[0] != '"' {
		return "", reject(ReasonInvalid, "%s must be a string", name)
	}
	if plain(raw) {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", reject(ReasonInvalid, "%s: %v", name, err)
	}
	return s, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// members picks the contract's fields out of body, a JSON text that
// json.Valid accepted, by their exact (case-sensitive) names; the last of
// duplicate names wins and other members are ignored. A body that is not an
// object is invalid.
func members(body []byte) (wireMessage, error) {
	var w wireMessage
	i := skipSpace(body, 0)
	if body[i] != '{' {
		kind := map[byte]string{'[': "array", '"': "string", 't': "bool", 'f': "bool", 'n': "null"}[body[i]]
		if kind == "" {
			kind = "number"
		}
		return w, reject(ReasonInvalid, "body is a JSON %s, want an object", kind)
	}
	for i = skipSpace(body, i+1); body[i] != '}'; {
		end := skipString(body, i)
		key := body[i:end]
		i = skipSpace(body, end)
		i = skipSpace(body, i+1) // the colon
		vend := skipValue(body, i)
		name := key[1 : len(key)-1]
		if !plain(key) {
			var s string
			if err := json.Unmarshal(key, &s); err != nil {
				return w, reject(ReasonBadJSON, "member name %s: %v", key, err)
			}
			name = []byte(s)
		}
		if f := w.field(name); f != nil {
			*f = body[i:vend]
		}
		i = skipSpace(body, vend)
		if body[i] == ',' {
			i = skipSpace(body, i+1)
		}
	}
	return w, nil
}

// field returns the member named name, or nil for a member the contract
// does not know.
func (w *wireMessage) field(name []byte) *json.RawMessage {
	switch string(name) { // no allocation: the compiler compares in place
	case "role":
		return &w.Role
	case "content":
		return &w.Content
	case "message_id":
		return &w.MessageID
	case "timestamp":
		return &w.Timestamp
	case "metadata":
		return &w.Metadata
	case "user_id":
		return &w.UserID
	case "device_id":
		return &w.DeviceID
	case "agent_id":
		return &w.AgentID
	}
	return nil
}

// plain reports whether a JSON string literal has no escapes, so that its
// bytes between the quotes are its value.
func plain(lit []byte) bool {
	return bytes.IndexByte(lit, '\\') < 0
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string literal starting at i.
func skipString(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// skipValue returns the index after the JSON value starting at i.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	default:
		for i < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[i])) {
			i++
		}
		return i
	}
}
