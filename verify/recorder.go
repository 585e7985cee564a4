// Package verify checks a load end to end: it records what a load published
// (Recorder), reads CHAT_FLUSHED and CHAT_DEAD back, and reports loss,
// duplicates, misplacement, order, contract violations and latency (Check).
//
// Messages are identified by a marker at the start of their content string,
// "<run>/<n> ...", so messages published without message_id are identified
// too, and batches of other runs are ignored.
package verify

import (
	"crypto/rand"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontext/chatbuf/chat"
)

// Sent is one message a load published and got a PubAck for.
type Sent struct {
	Marker       string // "<run>/<n>", the start of the message's content
	Conversation chat.Conversation
	MessageID    string    // "" when published without message_id
	Seq          uint64    // the PubAck's CHAT_IN stream sequence
	Published    time.Time // when the publish was sent
}

// Recorder records the messages of one run. It is safe for concurrent use.
type Recorder struct {
	run string

	mu    sync.Mutex
	sent  map[string]Sent // by marker
	convs []chat.Conversation
	known map[chat.Conversation]bool
}

// NewRunID returns a fresh run id: 10 lowercase letters and digits, valid
// inside any id and subject token.
func NewRunID() string {
	return strings.ToLower(rand.Text()[:10])
}

// NewRecorder returns an empty recorder for the run with the given id. The
// id must not contain "/" or whitespace.
func NewRecorder(run string) *Recorder {
	return &Recorder{run: run, sent: make(map[string]Sent), known: make(map[chat.Conversation]bool)}
}

// Run returns the run id.
func (r *Recorder) Run() string { return r.run }

// Marker returns the marker of the run's n-th message, "<run>/<n>".
func (r *Recorder) Marker(n int) string { return r.run + "/" + strconv.Itoa(n) }

// Content returns a content string of about size bytes (at least the
// marker and a space) that starts with the marker of the n-th message.
func (r *Recorder) Content(n, size int) string {
	m := r.Marker(n) + " "
	if size <= len(m) {
		return m
	}
	return m + strings.Repeat("x", size-len(m))
}

// Add records an accepted message. Adding a marker again replaces it.
func (r *Recorder) Add(s Sent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent[s.Marker] = s
	if !r.known[s.Conversation] {
		r.known[s.Conversation] = true
		r.convs = append(r.convs, s.Conversation)
	}
}

// Len returns the number of messages recorded.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sent)
}

// Conversations returns the conversations of the recorded messages, in the
// order they were first seen.
func (r *Recorder) Conversations() []chat.Conversation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]chat.Conversation(nil), r.convs...)
}

// snapshot returns a copy of the recorded messages and conversations.
func (r *Recorder) snapshot() (map[string]Sent, map[chat.Conversation]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sent := make(map[string]Sent, len(r.sent))
	for k, v := range r.sent {
		sent[k] = v
	}
	convs := make(map[chat.Conversation]bool, len(r.known))
	for k := range r.known {
		convs[k] = true
	}
	return sent, convs
}

// markerIn returns the run's marker at the start of a JSON content value
// (a string starting "<run>/<digits>"), or "" when there is none.
func markerIn(run string, content []byte) string {
	head := `"` + run + "/"
	if len(content) <= len(head) || string(content[:len(head)]) != head {
		return ""
	}
	return digitsAfter(content[1:], len(head)-1)
}

// digitsAfter returns b[:i+k] where k digits follow b[:i]; "" when none do.
func digitsAfter(b []byte, i int) string {
	j := i
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	if j == i {
		return ""
	}
	return string(b[:j])
}
