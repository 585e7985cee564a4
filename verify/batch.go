package verify

import (
	"fmt"
	"slices"
	"time"

	"github.com/opencontext/chatbuf/chat"
)

// batchProblems returns how one batch breaks the contract on its own:
// msgID is its Nats-Msg-Id header, conv the conversation of its subject.
// Rules that span batches (unique batch_id, increasing fencing_token) are
// Check's.
func batchProblems(b *chat.Batch, msgID string, conv chat.Conversation, bufferSize int) []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }

	if b.BatchID == "" {
		add("batch_id is empty")
	}
	if msgID != b.BatchID {
		add("Nats-Msg-Id %q differs from batch_id", msgID)
	}
	if b.Source != "chat_log" {
		add("source %q, want \"chat_log\"", b.Source)
	}
	if got := (chat.Conversation{User: b.UserID, Device: b.DeviceID, Agent: b.AgentID}); got != conv {
		add("ids %q/%q/%q differ from the subject's %q/%q/%q", got.User, got.Device, got.Agent, conv.User, conv.Device, conv.Agent)
	}
	if !b.Reason.Valid() {
		add("reason %q, want size, age or manual", b.Reason)
	}
	n := len(b.Messages)
	switch {
	case b.MessageCount != n:
		add("message_count %d, but %d messages", b.MessageCount, n)
	case n == 0:
		add("no messages")
	case n > bufferSize:
		add("%d messages, more than the buffer size %d", n, bufferSize)
	case b.Reason == chat.TriggerSize && n != bufferSize:
		add("size batch of %d messages, want exactly %d", n, bufferSize)
	}
	if want := roles(b.Messages); !slices.Equal(b.Roles, want) {
		add("roles %q, want %q", b.Roles, want)
	}
	if problem := utcTime(b.CreateTime); problem != "" {
		add("create_time %s", problem)
	}
	for i, m := range b.Messages {
		if i > 0 && m.Seq <= b.Messages[i-1].Seq {
			add("messages not in seq order: seq %d after %d", m.Seq, b.Messages[i-1].Seq)
		}
		if problem := utcTime(m.ReceivedAt); problem != "" {
			add("message seq %d: received_at %s", m.Seq, problem)
		}
	}
	return ps
}

// roles returns the distinct roles of ms, sorted.
func roles(ms []chat.BatchMessage) []string {
	rs := make([]string, 0, 4)
	for _, m := range ms {
		if !slices.Contains(rs, m.Role) {
			rs = append(rs, m.Role)
		}
	}
	slices.Sort(rs)
	return rs
}

// utcTime describes what is wrong with a decoded RFC 3339 time, or "".
// Decoding already rejected anything that is not RFC 3339.
func utcTime(t time.Time) string {
	if t.IsZero() {
		return "is missing"
	}
	if _, offset := t.Zone(); offset != 0 {
		return fmt.Sprintf("%s is not in UTC", t.Format(time.RFC3339Nano))
	}
	return ""
}
