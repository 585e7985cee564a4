package chat

import (
	"bytes"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// A Record is a buffered message as stored in Redis or in memory:
//
//	<received ms> SP <epoch ms> SP <seq> SP <end 0|1> SP <cost> SP <json length> SP <role> SP [<extra> SP]... <json><text>
//
// The header lets the buffer's Lua scripts order records, find their
// receive time, end-of-batch mark and batch cost, and lets the flusher sort
// and summarise a batch without decoding JSON. The JSON part is the message
// exactly as it appears in the batch's "messages", and the text part its
// entry of "content_text", already escaped: building a batch is a
// concatenation.
//
// The extras are what the record keeps of its message's way into CHAT_IN
// (Origin); none of it goes into the batch. Each is a lowercase letter and
// a value without spaces:
//
//	w<ms>           the receive time minus the time CHAT_IN stored the message
//	t<traceparent>  the W3C traceparent the message was published with
//
// Records written before extras existed have none; a reader skips extras
// whose letter it does not know.
type Record struct {
	ReceivedMS int64
	Epoch      int64  // major order key: CHAT_IN's creation time, unix ms (0: unknown)
	Seq        uint64 // minor order key: the CHAT_IN stream sequence
	End        bool   // Chatbuf-End-Batch: the conversation's batch closes right after this message
	Cost       int    // exact bytes this record adds to a batch's JSON, separators included
	Role       string
	// StoredMS is when CHAT_IN stored the message, unix ms (0: not kept).
	StoredMS int64
	// TraceParent is the W3C traceparent the message was published with
	// (nil: none); it aliases the record.
	TraceParent []byte
	JSON        []byte // the batch message object
	Text        []byte // its content_text entry, escaped for use inside a JSON string
}

// Less reports whether r comes before o in CHAT_IN order: by epoch, then by
// stream sequence.
func (r Record) Less(o Record) bool {
	if r.Epoch != o.Epoch {
		return r.Epoch < o.Epoch
	}
	return r.Seq < o.Seq
}

// recordCost is what a record with the given parts adds to a batch: its
// message object and a comma in "messages", its text entry and ", " in
// "content_text".
func recordCost(jsonLen, textLen int) int { return jsonLen + 1 + textLen + 2 }

// Origin is what a record keeps of its message's way into CHAT_IN, beside
// the batch.
type Origin struct {
	Stored time.Time // when CHAT_IN stored the message (zero: not kept)
	// TraceParent is the W3C traceparent header the message was published
	// with ("": none); it must not hold spaces.
	TraceParent string
}

// NewRecord encodes m, the message with CHAT_IN sequence seq in the stream
// created at epoch (unix ms) received at receivedAt, as a record. end marks
// a message that closes its conversation's batch.
func NewRecord(m *Message, epoch int64, seq uint64, end bool, receivedAt time.Time) []byte {
	return NewRecordFrom(m, epoch, seq, end, receivedAt, Origin{})
}

// NewRecordFrom is NewRecord keeping o in the record's extras.
func NewRecordFrom(m *Message, epoch int64, seq uint64, end bool, receivedAt time.Time, o Origin) []byte {
	ms := receivedAt.UnixMilli()
	size := len(m.MessageID) + len(m.Timestamp) + len(m.Content) + len(m.Metadata)
	// Room for the header, the member names, the numbers and the stamps
	// (about 300 bytes), the extras, the JSON and its escaped copy, so that
	// a record is usually one allocation.
	b := make([]byte, 0, 344+len(o.TraceParent)+3*len(m.Role)+2*size+len(m.Content)/4)
	b = strconv.AppendInt(b, ms, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, epoch, 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, seq, 10)
	if end {
		b = append(b, " 1 "...)
	} else {
		b = append(b, " 0 "...)
	}
	// The cost and the JSON length are known once the parts are written:
	// they are written into fixed-width room and the record is shifted.
	costAt := len(b)
	b = append(b, "0000000000 0000000000 "...)
	b = append(b, m.Role...)
	b = append(b, ' ')
	if !o.Stored.IsZero() {
		b = append(b, 'w')
		b = strconv.AppendInt(b, ms-o.Stored.UnixMilli(), 10)
		b = append(b, ' ')
	}
	if o.TraceParent != "" {
		b = append(b, 't')
		b = append(b, o.TraceParent...)
		b = append(b, ' ')
	}

	jsonAt := len(b)
	b = append(b, '{')
	if m.MessageID != "" {
		b = append(b, `"message_id":`...)
		b = appendString(b, m.MessageID)
		b = append(b, ',')
	}
	b = append(b, `"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"role":`...)
	b = appendString(b, m.Role)
	b = append(b, `,"content":`...)
	b = append(b, m.Content...)
	if m.Timestamp != "" {
		b = append(b, `,"timestamp":`...)
		b = appendString(b, m.Timestamp)
	}
	b = append(b, `,"received_at":"`...)
	stampAt := len(b)
	b = appendStamp(b, ms)
	stamp := len(b) - stampAt
	b = append(b, `","metadata":`...)
	if m.Metadata != nil {
		b = append(b, m.Metadata...)
	} else {
		b = append(b, '{', '}')
	}
	b = append(b, '}')
	jsonLen := len(b) - jsonAt

	// The content_text entry {"role": r, "content": c, "timestamp": t},
	// written as the inside of a JSON string.
	textAt := len(b)
	b = append(b, `{\"role\": `...)
	b = appendStringEscaped(b, m.Role)
	b = append(b, `, \"content\": `...)
	b = appendEscaped(b, m.Content)
	b = append(b, `, \"timestamp\": `...)
	if m.Timestamp != "" {
		b = appendStringEscaped(b, m.Timestamp)
	} else {
		b = append(b, `\"`...)
		b = append(b, b[stampAt:stampAt+stamp]...)
		b = append(b, `\"`...)
	}
	b = append(b, '}')
	textLen := len(b) - textAt

	var room [22]byte
	head := strconv.AppendInt(room[:0], int64(recordCost(jsonLen, textLen)), 10)
	head = append(head, ' ')
	head = strconv.AppendInt(head, int64(jsonLen), 10)
	head = append(head, ' ')
	// Close the gap between the written numbers and the role.
	gap := 22 - len(head)
	copy(b[costAt:], head)
	copy(b[costAt+len(head):], b[costAt+22:])
	return b[:len(b)-gap]
}

// ParseRecord decodes a record's header; JSON and Text alias b.
func ParseRecord(b []byte) (Record, error) {
	var r Record
	var f [6][]byte
	rest := b
	for i := range f {
		sp := bytes.IndexByte(rest, ' ')
		if sp < 0 {
			return r, fmt.Errorf("chat: malformed record %.60q", b)
		}
		f[i], rest = rest[:sp], rest[sp+1:]
	}
	ms, err1 := strconv.ParseInt(string(f[0]), 10, 64)
	epoch, err2 := strconv.ParseInt(string(f[1]), 10, 64)
	seq, err3 := strconv.ParseUint(string(f[2]), 10, 64)
	cost, err4 := strconv.Atoi(string(f[4]))
	jsonLen, err5 := strconv.Atoi(string(f[5]))
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil || len(f[3]) != 1 || (f[3][0] != '0' && f[3][0] != '1') {
		return r, fmt.Errorf("chat: malformed record header %.60q", b)
	}
	sp := bytes.IndexByte(rest, ' ')
	if sp < 0 {
		return r, fmt.Errorf("chat: malformed record %.60q", b)
	}
	role, body := rest[:sp], rest[sp+1:]
	var storedMS int64
	var traceParent []byte
	for len(body) > 0 && body[0] != '{' {
		sp := bytes.IndexByte(body, ' ')
		if sp < 2 || body[0] < 'a' || body[0] > 'z' {
			return r, fmt.Errorf("chat: malformed record extras %.60q", b)
		}
		v := body[1:sp]
		switch body[0] {
		case 'w':
			waited, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil {
				return r, fmt.Errorf("chat: malformed record extras %.60q", b)
			}
			storedMS = ms - waited
		case 't':
			traceParent = v[:len(v):len(v)]
		}
		body = body[sp+1:]
	}
	if jsonLen < 2 || len(body) < jsonLen || body[0] != '{' {
		return r, fmt.Errorf("chat: malformed record %.60q", b)
	}
	r = Record{ReceivedMS: ms, Epoch: epoch, Seq: seq, End: f[3][0] == '1', Cost: cost, Role: string(role),
		StoredMS: storedMS, TraceParent: traceParent, JSON: body[:jsonLen:jsonLen], Text: body[jsonLen:]}
	if recordCost(len(r.JSON), len(r.Text)) != cost {
		return Record{}, fmt.Errorf("chat: malformed record: cost %d does not match its parts %.60q", cost, b)
	}
	return r, nil
}

// appendString appends s as a JSON string. Only what JSON requires is
// escaped (quote, backslash, control characters), so a string decoded from
// a message never grows when written again; s is valid UTF-8.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		b = appendEscapedByte(b, c)
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendEscaped appends JSON text j escaped as the inside of a JSON string.
func appendEscaped(b []byte, j []byte) []byte {
	start := 0
	for i := 0; i < len(j); i++ {
		c := j[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, j[start:i]...)
		b = appendEscapedByte(b, c)
		start = i + 1
	}
	return append(b, j[start:]...)
}

// appendStringEscaped appends s as a JSON string, itself escaped as the
// inside of a JSON string.
func appendStringEscaped(b []byte, s string) []byte {
	b = append(b, '\\', '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			b = append(b, c)
			continue
		}
		var tmp [6]byte
		b = appendEscaped(b, appendEscapedByte(tmp[:0], c))
	}
	return append(b, '\\', '"')
}

func appendEscapedByte(b []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(b, '\\', c)
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	default:
		const hex = "0123456789abcdef"
		return append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
	}
}

// stamp is a receive time formatted for the batch JSON. A worker stamps a
// whole append batch with one time, so the last one formatted is kept.
type stamp struct {
	ms   int64
	text []byte
}

var lastStamp atomic.Pointer[stamp]

// stampLayout is RFC 3339 in UTC with at most 6 fraction digits, which
// Python's datetime reads.
const stampLayout = "2006-01-02T15:04:05.999999Z07:00"

// appendStamp appends ms as RFC 3339 in UTC.
func appendStamp(b []byte, ms int64) []byte {
	if s := lastStamp.Load(); s != nil && s.ms == ms {
		return append(b, s.text...)
	}
	text := time.UnixMilli(ms).UTC().AppendFormat(nil, stampLayout)
	lastStamp.Store(&stamp{ms: ms, text: text})
	return append(b, text...)
}
