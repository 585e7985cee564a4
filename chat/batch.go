package chat

import (
	"cmp"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Trigger is why a batch was flushed: the batch JSON's "reason".
type Trigger string

const (
	TriggerSize   Trigger = "size"   // the buffer held CHAT_BUFFER_SIZE messages
	TriggerAge    Trigger = "age"    // its oldest message reached CHAT_FLUSH_MAX_AGE
	TriggerIdle   Trigger = "idle"   // no message arrived for CHAT_FLUSH_IDLE
	TriggerBytes  Trigger = "bytes"  // the next message would not fit CHAT_BATCH_MAX_BYTES
	TriggerEnd    Trigger = "end"    // a message marked Chatbuf-End-Batch closed it
	TriggerManual Trigger = "manual" // someone asked (the flush subject)
)

// Triggers lists every trigger, in the contract's order.
var Triggers = []Trigger{TriggerSize, TriggerAge, TriggerIdle, TriggerBytes, TriggerEnd, TriggerManual}

// Valid reports whether t is one of the contract's triggers.
func (t Trigger) Valid() bool { return slices.Contains(Triggers, t) }

// BatchID returns the id of the conversation's batch with the given token:
// "<tag>#<token>". It is unique because tags are and tokens never repeat
// within a conversation.
func BatchID(c Conversation, token int64) string {
	return c.Tag() + "#" + strconv.FormatInt(token, 10)
}

// Batch is the JSON object published to CHAT_FLUSHED, as read by consumers
// (and by the verifier): a RawContextProperties document of the original
// system with chatbuf's fields beside it. Ids given as null in the JSON
// ("not given") read as NotGiven.
type Batch struct {
	BatchID        string         `json:"batch_id"`
	ObjectID       string         `json:"object_id"`
	Source         string         `json:"source"`
	ContentFormat  string         `json:"content_format"`
	UserID         string         `json:"user_id"`
	DeviceID       string         `json:"device_id"`
	AgentID        string         `json:"agent_id"`
	Reason         Trigger        `json:"reason"`
	FencingToken   int64          `json:"fencing_token"`
	CreateTime     time.Time      `json:"create_time"`
	MessageCount   int            `json:"message_count"`
	Roles          []string       `json:"roles"`
	ContentText    string         `json:"content_text"`
	AdditionalInfo AdditionalInfo `json:"additional_info"`
	Messages       []BatchMessage `json:"messages"`
}

// AdditionalInfo is a batch's "additional_info" object.
type AdditionalInfo struct {
	MessageCount int      `json:"message_count"`
	Roles        []string `json:"roles"`
	BatchID      string   `json:"batch_id"`
	Reason       Trigger  `json:"reason"`
	FencingToken int64    `json:"fencing_token"`
}

// Conversation returns the batch's conversation.
func (b *Batch) Conversation() Conversation {
	return Conversation{User: b.UserID, Device: b.DeviceID, Agent: b.AgentID}
}

// UnmarshalJSON decodes a batch, reading null ids as NotGiven.
func (b *Batch) UnmarshalJSON(data []byte) error {
	type plain Batch
	var ids struct {
		UserID   *string `json:"user_id"`
		DeviceID *string `json:"device_id"`
		AgentID  *string `json:"agent_id"`
	}
	if err := json.Unmarshal(data, (*plain)(b)); err != nil {
		return err
	}
	if err := json.Unmarshal(data, &ids); err != nil {
		return err
	}
	for _, f := range [...]struct {
		in  *string
		out *string
	}{{ids.UserID, &b.UserID}, {ids.DeviceID, &b.DeviceID}, {ids.AgentID, &b.AgentID}} {
		if f.in == nil {
			*f.out = NotGiven
		}
	}
	return nil
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

// TextEntry is one element of a batch's content_text array.
type TextEntry struct {
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	Timestamp string          `json:"timestamp"`
}

// batchFixed is the batch JSON without its ids, numbers, roles, time and
// records: every constant byte EncodeBatch writes.
const batchFixed = `{"batch_id":,"object_id":,"source":"chat_log","content_format":"text",` +
	`"user_id":,"device_id":,"agent_id":,"reason":"","fencing_token":,"create_time":"",` +
	`"message_count":,"roles":[],"content_text":"[]","additional_info":{"message_count":,` +
	`"roles":[],"batch_id":,"reason":"","fencing_token":},"messages":[]}`

// Upper bounds of the variable parts EncodeBatch writes besides ids and
// records: the token five times (three batch ids, two fencing tokens), the
// count twice, the reason twice, the time (RFC 3339, UTC, 6 fraction
// digits), and the role lists holding every role.
var batchVariable = 7*len("9223372036854775807") + 2*len("manual") +
	len("2006-01-02T15:04:05.999999Z") + 2*rolesLen

var rolesLen = func() int {
	n := 0
	for _, r := range Roles {
		n += len(r) + 3 // quotes and a comma
	}
	return n
}()

// BatchOverhead returns an upper bound of the bytes of a batch of c besides
// its records' Cost: a batch of c with records rs is at most
// BatchOverhead(c) + sum(rs[i].Cost) bytes long.
func BatchOverhead(c Conversation) int {
	id := len(appendString(nil, c.Tag())) + 1 // "#" before the token
	return len(batchFixed) + batchVariable + 3*id + len(idJSON(nil, c.User)) + len(idJSON(nil, c.Device)) + len(idJSON(nil, c.Agent))
}

// MaxRecordCost bounds the Cost of the record of a message whose body is at
// most maxMessageBytes long: the message object holds its members once
// (re-encoded strings never grow), the content_text entry holds the content
// and timestamp once more, escaped (at most twice as long), and the fixed
// members and stamps of both take less than 512 bytes.
func MaxRecordCost(maxMessageBytes int) int { return 3*maxMessageBytes + 512 }

// WorstBatchBytes is the longest a batch holding one message of at most
// maxMessageBytes can be, for any conversation: BatchOverhead of the
// conversation with the longest escaped ids plus MaxRecordCost. A batch
// ceiling below it could leave a message that fits no batch.
func WorstBatchBytes(maxMessageBytes int) int {
	return worstOverhead + MaxRecordCost(maxMessageBytes)
}

var worstOverhead = func() int {
	worst := 0
	for _, ch := range []string{"%", `"`, "\\", "é"} {
		id := strings.Repeat(ch, MaxIDLen/len(ch))
		worst = max(worst, BatchOverhead(Conversation{User: id, Device: id, Agent: id}))
	}
	return worst
}()

// idJSON appends an id as the batch writes it: null when not given.
func idJSON(b []byte, id string) []byte {
	if id == NotGiven {
		return append(b, "null"...)
	}
	return appendString(b, id)
}

// EncodeBatch builds the batch JSON for the records of one claimed batch.
// Records are put in CHAT_IN order; roles are the distinct roles, sorted.
// records must not be empty.
func EncodeBatch(c Conversation, token int64, reason Trigger, created time.Time, records []Record) []byte {
	slices.SortFunc(records, func(a, b Record) int {
		if a.Epoch != b.Epoch {
			return cmp.Compare(a.Epoch, b.Epoch)
		}
		return cmp.Compare(a.Seq, b.Seq)
	})
	roles := make([]string, 0, 4)
	size := BatchOverhead(c)
	for _, r := range records {
		if !slices.Contains(roles, r.Role) {
			roles = append(roles, r.Role)
		}
		size += r.Cost
	}
	slices.Sort(roles)
	id := appendString(nil, BatchID(c, token))

	b := make([]byte, 0, size)
	b = append(b, `{"batch_id":`...)
	b = append(b, id...)
	b = append(b, `,"object_id":`...)
	b = append(b, id...)
	b = append(b, `,"source":"chat_log","content_format":"text","user_id":`...)
	b = idJSON(b, c.User)
	b = append(b, `,"device_id":`...)
	b = idJSON(b, c.Device)
	b = append(b, `,"agent_id":`...)
	b = idJSON(b, c.Agent)
	b = append(b, `,"reason":"`...)
	b = append(b, reason...)
	b = append(b, `","fencing_token":`...)
	b = strconv.AppendInt(b, token, 10)
	b = append(b, `,"create_time":"`...)
	b = created.UTC().AppendFormat(b, stampLayout)
	b = append(b, `","message_count":`...)
	b = strconv.AppendInt(b, int64(len(records)), 10)
	b = append(b, `,"roles":`...)
	b = appendRoles(b, roles)
	b = append(b, `,"content_text":"[`...)
	for i, r := range records {
		if i > 0 {
			b = append(b, ',', ' ')
		}
		b = append(b, r.Text...)
	}
	b = append(b, `]","additional_info":{"message_count":`...)
	b = strconv.AppendInt(b, int64(len(records)), 10)
	b = append(b, `,"roles":`...)
	b = appendRoles(b, roles)
	b = append(b, `,"batch_id":`...)
	b = append(b, id...)
	b = append(b, `,"reason":"`...)
	b = append(b, reason...)
	b = append(b, `","fencing_token":`...)
	b = strconv.AppendInt(b, token, 10)
	b = append(b, `},"messages":[`...)
	for i, r := range records {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r.JSON...)
	}
	return append(b, ']', '}')
}

func appendRoles(b []byte, roles []string) []byte {
	b = append(b, '[')
	for i, r := range roles {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, r)
	}
	return append(b, ']')
}
