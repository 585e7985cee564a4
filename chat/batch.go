package chat

import (
	"cmp"
	"encoding/json"
	"slices"
	"strconv"
	"time"
)

// Trigger is why a batch was flushed: the batch JSON's "reason".
type Trigger string

const (
	TriggerSize   Trigger = "size"
	TriggerAge    Trigger = "age"
	TriggerManual Trigger = "manual"
)

// Valid reports whether t is one of the contract's triggers.
func (t Trigger) Valid() bool {
	return t == TriggerSize || t == TriggerAge || t == TriggerManual
}

// BatchID returns the id of the conversation's batch with the given token:
// "<tag>#<token>". It is unique because tags are and tokens never repeat
// within a conversation.
func BatchID(c Conversation, token int64) string {
	return c.Tag() + "#" + strconv.FormatInt(token, 10)
}

// Batch is the JSON object published to CHAT_FLUSHED, as read by consumers
// (and by the verifier). Messages are the batch message objects.
type Batch struct {
	BatchID      string         `json:"batch_id"`
	Source       string         `json:"source"`
	UserID       string         `json:"user_id"`
	DeviceID     string         `json:"device_id"`
	AgentID      string         `json:"agent_id"`
	Reason       Trigger        `json:"reason"`
	FencingToken int64          `json:"fencing_token"`
	CreateTime   time.Time      `json:"create_time"`
	MessageCount int            `json:"message_count"`
	Roles        []string       `json:"roles"`
	Messages     []BatchMessage `json:"messages"`
}

// BatchMessage is one message of a Batch as consumers decode it.
type BatchMessage struct {
	MessageID  string          `json:"message_id,omitempty"`
	Seq        uint64          `json:"seq"`
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	Timestamp  string          `json:"timestamp,omitempty"`
	ReceivedAt time.Time       `json:"received_at"`
	Metadata   json.RawMessage `json:"metadata"`
}

// EncodeBatch builds the batch JSON for the records of one claimed batch.
// Messages are put in CHAT_IN stream order; roles are the distinct roles,
// sorted. records must not be empty.
func EncodeBatch(c Conversation, token int64, reason Trigger, created time.Time, records []Record) []byte {
	slices.SortFunc(records, func(a, b Record) int { return cmp.Compare(a.Seq, b.Seq) })
	roles := make([]string, 0, 4)
	// Room for the member names, numbers and times (about 300 bytes), the
	// ids twice (batch_id and their own members), the roles and the
	// messages, so that a batch is one allocation.
	size := 320 + 2*(len(c.User)+len(c.Device)+len(c.Agent))
	for _, r := range records {
		if !slices.Contains(roles, r.Role) {
			roles = append(roles, r.Role)
			size += len(r.Role) + 3
		}
		size += len(r.JSON) + 1
	}
	slices.Sort(roles)

	b := make([]byte, 0, size)
	b = append(b, `{"batch_id":`...)
	b = appendString(b, BatchID(c, token))
	b = append(b, `,"source":"chat_log","user_id":`...)
	b = appendString(b, c.User)
	b = append(b, `,"device_id":`...)
	b = appendString(b, c.Device)
	b = append(b, `,"agent_id":`...)
	b = appendString(b, c.Agent)
	b = append(b, `,"reason":"`...)
	b = append(b, reason...)
	b = append(b, `","fencing_token":`...)
	b = strconv.AppendInt(b, token, 10)
	b = append(b, `,"create_time":"`...)
	b = created.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","message_count":`...)
	b = strconv.AppendInt(b, int64(len(records)), 10)
	b = append(b, `,"roles":[`...)
	for i, r := range roles {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, r)
	}
	b = append(b, `],"messages":[`...)
	for i, r := range records {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r.JSON...)
	}
	return append(b, ']', '}')
}
