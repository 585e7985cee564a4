package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// A Record is a buffered message as stored in Redis or in memory:
//
//	<received unix ms> SP <CHAT_IN seq> SP <role> SP <batch message JSON>
//
// The header lets the buffer's Lua scripts read the receive time and the
// flusher sort and summarise a batch without decoding JSON; the JSON part is
// the message exactly as it appears in the batch, so building a batch is a
// concatenation.
type Record struct {
	ReceivedMS int64
	Seq        uint64
	Role       string
	JSON       []byte
}

// NewRecord encodes m, the message with CHAT_IN sequence seq received at
// receivedAt, as a record.
func NewRecord(m *Message, seq uint64, receivedAt time.Time) []byte {
	ms := receivedAt.UnixMilli()
	// Room for the header, the member names, the numbers and the stamp
	// (about 180 bytes), so that a record is one allocation.
	b := make([]byte, 0, 192+2*len(m.Role)+len(m.MessageID)+len(m.Timestamp)+len(m.Content)+len(m.Metadata))
	b = strconv.AppendInt(b, ms, 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ' ')
	b = append(b, m.Role...)
	b = append(b, ' ', '{')
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
	b = appendStamp(b, ms)
	b = append(b, `","metadata":`...)
	if m.Metadata != nil {
		b = append(b, m.Metadata...)
	} else {
		b = append(b, '{', '}')
	}
	return append(b, '}')
}

// ParseRecord decodes a record's header; JSON aliases b.
func ParseRecord(b []byte) (Record, error) {
	var r Record
	f1 := bytes.IndexByte(b, ' ')
	if f1 < 0 {
		return r, fmt.Errorf("chat: malformed record %.40q", b)
	}
	ms, err := strconv.ParseInt(string(b[:f1]), 10, 64)
	if err != nil {
		return r, fmt.Errorf("chat: malformed record time %.40q", b)
	}
	rest := b[f1+1:]
	f2 := bytes.IndexByte(rest, ' ')
	if f2 < 0 {
		return r, fmt.Errorf("chat: malformed record %.40q", b)
	}
	seq, err := strconv.ParseUint(string(rest[:f2]), 10, 64)
	if err != nil {
		return r, fmt.Errorf("chat: malformed record seq %.40q", b)
	}
	rest = rest[f2+1:]
	f3 := bytes.IndexByte(rest, ' ')
	if f3 < 0 || len(rest) < f3+2 || rest[f3+1] != '{' {
		return r, fmt.Errorf("chat: malformed record %.40q", b)
	}
	return Record{ReceivedMS: ms, Seq: seq, Role: string(rest[:f3]), JSON: rest[f3+1:]}, nil
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := json.Marshal(s) // a Go string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// stamp is a receive time formatted for the batch JSON. A worker stamps a
// whole append batch with one time, so the last one formatted is kept.
type stamp struct {
	ms   int64
	text []byte
}

var lastStamp atomic.Pointer[stamp]

// appendStamp appends ms as RFC 3339 in UTC.
func appendStamp(b []byte, ms int64) []byte {
	if s := lastStamp.Load(); s != nil && s.ms == ms {
		return append(b, s.text...)
	}
	text := time.UnixMilli(ms).UTC().AppendFormat(nil, time.RFC3339Nano)
	lastStamp.Store(&stamp{ms: ms, text: text})
	return append(b, text...)
}
