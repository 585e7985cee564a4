package chat_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opencontext/chatbuf/chat"
)

// alice is the conversation most tests decode messages for.
var alice = chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}

// decodeReasons are the dead-letter reasons Decode may give (bad_id belongs
// to the subject and is ParseSubject's).
var decodeReasons = map[chat.Reason]bool{
	chat.ReasonTooLarge:   true,
	chat.ReasonBadJSON:    true,
	chat.ReasonInvalid:    true,
	chat.ReasonIDMismatch: true,
}

// jsonValue decodes raw into a generic value, numbers kept as their text, so
// two documents compare equal exactly when they are JSON-equal (numbers
// compared by their literal).
func jsonValue(raw []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// jsonDiff returns "" when want and got are JSON-equal, else a (-want +got)
// diff.
func jsonDiff(tb testing.TB, want, got []byte) string {
	tb.Helper()
	w, err := jsonValue(want)
	if err != nil {
		tb.Fatalf("want %q is not JSON: %v", want, err)
	}
	g, err := jsonValue(got)
	if err != nil {
		tb.Fatalf("got %q is not JSON: %v", got, err)
	}
	return cmp.Diff(w, g)
}

// mustDecode decodes body for alice and fails the test on a rejection.
func mustDecode(tb testing.TB, body string) chat.Message {
	tb.Helper()
	m, err := chat.Decode([]byte(body), alice, 0)
	if err != nil {
		tb.Fatalf("Decode(%q): %v", body, err)
	}
	return m
}

// mustRecord builds and parses the record of m.
func mustRecord(tb testing.TB, m chat.Message, seq uint64, at time.Time) chat.Record {
	tb.Helper()
	raw := chat.NewRecord(&m, 0, seq, false, at)
	r, err := chat.ParseRecord(raw)
	if err != nil {
		tb.Fatalf("ParseRecord(NewRecord(...)) = %v; record %q", err, raw)
	}
	return r
}

// fields splits a JSON object into its members.
func fields(tb testing.TB, raw []byte) map[string]json.RawMessage {
	tb.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		tb.Fatalf("%q is not a JSON object: %v", raw, err)
	}
	return m
}
