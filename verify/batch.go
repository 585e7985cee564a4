package verify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/opencontext/chatbuf/chat"
)

// batchProblems returns how one batch breaks the contract on its own:
// raw is its JSON, msgID its Nats-Msg-Id header, conv the conversation of
// its subject. Rules that span batches (unique batch_id, increasing
// fencing_token) are Check's.
func batchProblems(raw []byte, b *chat.Batch, msgID string, conv chat.Conversation, bufferSize int) []string {
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
	if b.ObjectID != b.BatchID {
		add("object_id %q differs from batch_id", b.ObjectID)
	}
	if b.ContentFormat != "text" {
		add("content_format %q, want \"text\"", b.ContentFormat)
	}
	ps = append(ps, idProblems(raw)...)
	if got := (chat.Conversation{User: b.UserID, Device: b.DeviceID, Agent: b.AgentID}); got != conv {
		add("ids %q/%q/%q differ from the subject's %q/%q/%q", got.User, got.Device, got.Agent, conv.User, conv.Device, conv.Agent)
	}
	if !b.Reason.Valid() {
		add("reason %q, want one of %q", b.Reason, chat.Triggers)
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
	if info := b.AdditionalInfo; info.MessageCount != b.MessageCount || !slices.Equal(info.Roles, b.Roles) ||
		info.BatchID != b.BatchID || info.Reason != b.Reason || info.FencingToken != b.FencingToken {
		add("additional_info %+v differs from the batch's own fields", info)
	}
	ps = append(ps, textProblems(b)...)
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

// idProblems checks that ids not given ("_") are written as null.
func idProblems(raw []byte) []string {
	var ids map[string]json.RawMessage
	if err := json.Unmarshal(raw, &ids); err != nil {
		return []string{"not a JSON object: " + err.Error()}
	}
	var ps []string
	for _, k := range []string{"user_id", "device_id", "agent_id"} {
		if v, ok := ids[k]; !ok {
			ps = append(ps, k+" is missing")
		} else if bytes.Equal(v, []byte(`"`+chat.NotGiven+`"`)) {
			ps = append(ps, k+` is "_", want null for an id not given`)
		}
	}
	return ps
}

// textProblems checks content_text against the messages: one entry per
// message, in order, with its role, content and timestamp (the client's, or
// else received_at).
func textProblems(b *chat.Batch) []string {
	var text []chat.TextEntry
	if err := json.Unmarshal([]byte(b.ContentText), &text); err != nil {
		return []string{"content_text is not a JSON array of {role, content, timestamp}: " + err.Error()}
	}
	if len(text) != len(b.Messages) {
		return []string{fmt.Sprintf("content_text has %d entries for %d messages", len(text), len(b.Messages))}
	}
	for i, e := range text {
		m := b.Messages[i]
		ts := m.Timestamp
		if ts == "" {
			ts = m.ReceivedAt.UTC().Format("2006-01-02T15:04:05.999999Z07:00")
		}
		if e.Role != m.Role || !jsonEqual(e.Content, m.Content) || e.Timestamp != ts {
			return []string{fmt.Sprintf("content_text[%d] differs from message seq %d", i, m.Seq)}
		}
	}
	return nil
}

// jsonEqual reports whether a and b are the same JSON value.
func jsonEqual(a, b json.RawMessage) bool {
	var x, y bytes.Buffer
	return json.Compact(&x, a) == nil && json.Compact(&y, b) == nil && bytes.Equal(x.Bytes(), y.Bytes())
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
