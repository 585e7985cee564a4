package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/flush"
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
// stored at storedNS (unix ns), received on subject, to
// <prefix>.dead.<reason>, and waits for the PubAck. The payload is cut to
// fit the server's limit when needed. Its Nats-Msg-Id is DeadID(seq,
// storedNS): the same on every redelivery, another after CHAT_IN was created
// again.
func (d *DeadLetters) Send(ctx context.Context, seq uint64, storedNS int64, subject string, payload []byte, reason chat.Reason, cause error) error {
	msg := &nats.Msg{Subject: d.cfg.Dead(reason), Header: nats.Header{}}
	msg.Header.Set(HeaderReason, string(reason))
	msg.Header.Set(HeaderError, headerText(cause.Error(), maxErrorLen))
	msg.Header.Set(HeaderSubject, headerText(subject, 1024))
	msg.Header.Set(jetstream.MsgIDHeader, DeadID(seq, storedNS))

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

// DeadID is the Nats-Msg-Id of the dead letter of the CHAT_IN message with
// stream sequence seq stored at storedNS: "dead-<seq>-<stored unix ns>".
func DeadID(seq uint64, storedNS int64) string {
	return "dead-" + strconv.FormatUint(seq, 10) + "-" + strconv.FormatInt(storedNS, 10)
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

// ReasonBatchRejected is the dead-letter reason of a batch that CHAT_FLUSHED
// refused for longer than the worker's persistent-refusal limit.
const ReasonBatchRejected chat.Reason = "batch_rejected"

// ErrDeadLetterTooLarge: a batch does not fit CHAT_DEAD whole (it is never
// cut).
var ErrDeadLetterTooLarge = errors.New("stream: batch too large for a dead letter")

var _ flush.Rejecter = (*DeadLetters)(nil)

// Reject implements flush.Rejecter: it publishes batch b, whole, to
// <prefix>.dead.batch_rejected with Chatbuf-Subject = the subject it was
// meant for and Nats-Msg-Id = dead-<batch_id>, and waits for the PubAck.
// A batch that would not fit the server's max_payload with its headers is
// not cut: Reject returns ErrDeadLetterTooLarge.
func (d *DeadLetters) Reject(ctx context.Context, b flush.Envelope, cause error) error {
	msg := &nats.Msg{Subject: d.cfg.Dead(ReasonBatchRejected), Header: nats.Header{}, Data: b.Data}
	msg.Header.Set(HeaderReason, string(ReasonBatchRejected))
	msg.Header.Set(HeaderError, headerText(cause.Error(), maxErrorLen))
	msg.Header.Set(HeaderSubject, d.cfg.Flushed(b.Conv))
	msg.Header.Set(jetstream.MsgIDHeader, "dead-"+b.ID)
	if size, limit := len(b.Data)+headerSize(msg.Header), d.maxPayload(); int64(size) > limit {
		return fmt.Errorf("%w: batch %s is %d bytes with its headers, max_payload %d", ErrDeadLetterTooLarge, b.ID, size, limit)
	}
	if _, err := d.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("stream: dead letter for batch %s: %w", b.ID, err)
	}
	return nil
}
