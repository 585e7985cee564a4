package stream

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
)

// Dead-letter headers.
const (
	HeaderReason    = "Chatbuf-Reason"
	HeaderError     = "Chatbuf-Error"
	HeaderSubject   = "Chatbuf-Subject"
	HeaderTruncated = "Chatbuf-Truncated"
)

// maxErrorLen bounds the Chatbuf-Error header.
const maxErrorLen = 256

// DeadLetters publishes rejected messages to CHAT_DEAD.
type DeadLetters struct {
	js         jetstream.JetStream
	cfg        Config
	maxPayload func() int64
}

// NewDeadLetters returns a publisher of dead letters; maxPayload reports the
// server's payload limit (nats.Conn.MaxPayload).
func NewDeadLetters(js jetstream.JetStream, cfg Config, maxPayload func() int64) *DeadLetters {
	return &DeadLetters{js: js, cfg: cfg.WithDefaults(), maxPayload: maxPayload}
}

// Send publishes the payload of the CHAT_IN message with stream sequence seq,
// received on subject, to <prefix>.dead.<reason>, and waits for the PubAck.
// The payload is cut to fit the server's limit when needed.
func (d *DeadLetters) Send(ctx context.Context, seq uint64, subject string, payload []byte, reason chat.Reason, cause error) error {
	msg := &nats.Msg{Subject: d.cfg.Dead(reason), Header: nats.Header{}}
	msg.Header.Set(HeaderReason, string(reason))
	msg.Header.Set(HeaderError, headerText(cause.Error(), maxErrorLen))
	msg.Header.Set(HeaderSubject, headerText(subject, 1024))
	msg.Header.Set(jetstream.MsgIDHeader, "dead-"+strconv.FormatUint(seq, 10))

	room := int(d.maxPayload()) - headerSize(msg.Header) - 64
	if len(payload) > room {
		payload = payload[:max(room, 0)]
		msg.Header.Set(HeaderTruncated, "true")
	}
	msg.Data = payload
	if _, err := d.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("stream: dead letter for seq %d (%s): %w", seq, reason, err)
	}
	return nil
}

// headerText makes s safe as a header value (no control characters) and at
// most n bytes, cut on a UTF-8 boundary.
func headerText(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n
}
