package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/stream"
)

// maxLine is the longest stdin line send reads: well above
// CHAT_MAX_MESSAGE_BYTES, so that too_large can be tried.
const maxLine = 16 << 20

// sendFlags are send's conversation and message flags.
type sendFlags struct {
	user, device, agent string
	role, id            string
	endBatch            bool
}

// conversation returns the conversation of the flags, all three required.
func (f sendFlags) conversation() (chat.Conversation, error) {
	c := chat.Conversation{User: f.user, Device: f.device, Agent: f.agent}
	for _, t := range [...]struct{ flag, id string }{{"--user", c.User}, {"--device", c.Device}, {"--agent", c.Agent}} {
		if t.id == "" {
			return c, fmt.Errorf("%s is required", t.flag)
		}
	}
	return c, checkTokens(c)
}

// message is the JSON body of a message send and load make up.
type message struct {
	Role      string `json:"role"`
	Content   string `json:"content"`
	MessageID string `json:"message_id,omitempty"`
	Timestamp string `json:"timestamp"`
}

// sendText publishes one message with the given content, stamped now.
func sendText(ctx context.Context, js jetstream.JetStream, cfg stream.Config, c chat.Conversation, role, id, text string, end bool) (*jetstream.PubAck, error) {
	body, err := json.Marshal(message{Role: role, Content: text, MessageID: id, Timestamp: time.Now().UTC().Format(time.RFC3339Nano)})
	if err != nil {
		return nil, err
	}
	return publish(ctx, js, cfg.In(c), body, id, end)
}

// sendLines publishes each non-blank JSON line of r as it is, printing one
// PubAck or error per line. It returns the number of lines that failed.
func sendLines(ctx context.Context, js jetstream.JetStream, cfg stream.Config, f sendFlags, r io.Reader, stdout, stderr io.Writer) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	failed, n := 0, 0
	for sc.Scan() {
		n++
		line := bytes.TrimSuffix(sc.Bytes(), []byte("\r"))
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		ack, err := sendLine(ctx, js, cfg, f, line)
		if ctx.Err() != nil {
			return failed, ctx.Err()
		}
		if err != nil {
			failed++
			fmt.Fprintf(stderr, "line %d: %v\n", n, err)
			continue
		}
		fmt.Fprintf(stdout, "line %d: %s\n", n, formatAck(ack))
	}
	if err := sc.Err(); err != nil {
		failed++
		fmt.Fprintf(stderr, "line %d: %v (reading stops here)\n", n+1, err)
	}
	return failed, nil
}

// sendLine publishes one JSON object line on the conversation of the flags,
// completed by the line's ids.
func sendLine(ctx context.Context, js jetstream.JetStream, cfg stream.Config, f sendFlags, line []byte) (*jetstream.PubAck, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil || fields == nil {
		return nil, fmt.Errorf("not a JSON object: %.60q", line)
	}
	ids := [3]string{f.user, f.device, f.agent}
	for i, t := range [...]struct{ field, flag string }{{"user_id", "--user"}, {"device_id", "--device"}, {"agent_id", "--agent"}} {
		if ids[i] != "" {
			continue
		}
		raw, ok := fields[t.field]
		if !ok {
			return nil, fmt.Errorf("no conversation: give %s or %q in the line", t.flag, t.field)
		}
		if err := json.Unmarshal(raw, &ids[i]); err != nil {
			return nil, fmt.Errorf("%s is not a string: %s", t.field, raw)
		}
	}
	c := chat.Conversation{User: ids[0], Device: ids[1], Agent: ids[2]}
	if err := checkTokens(c); err != nil {
		return nil, err
	}
	var id string
	if raw, ok := fields["message_id"]; ok {
		if err := json.Unmarshal(raw, &id); err != nil {
			id = "" // not a string: published without Nats-Msg-Id, for the workers to dead-letter
		}
	}
	return publish(ctx, js, cfg.In(c), line, id, f.endBatch)
}

// publish publishes body with JetStream and waits for the PubAck.
func publish(ctx context.Context, js jetstream.JetStream, subject string, body []byte, msgID string, end bool) (*jetstream.PubAck, error) {
	msg := nats.NewMsg(subject)
	msg.Data = body
	if msgID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	if end {
		msg.Header.Set(stream.HeaderEndBatch, "true")
	}
	ack, err := js.PublishMsg(ctx, msg)
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		return nil, fmt.Errorf("no JetStream stream takes %s: start a worker once, it creates the streams", subject)
	}
	return ack, err
}

func formatAck(ack *jetstream.PubAck) string {
	return fmt.Sprintf("stream=%s seq=%d duplicate=%t", ack.Stream, ack.Sequence, ack.Duplicate)
}

// checkTokens rejects ids that cannot be a subject token even encoded
// (chat.EncodeToken): empty ids, and tabs, carriage returns and newlines,
// which break the NATS protocol line. Ids that NATS carries but the
// contract forbids (too long, not UTF-8, other control characters) pass,
// so that the workers' bad_id path can be tried.
func checkTokens(c chat.Conversation) error {
	for _, t := range [...]struct{ name, id string }{{"user", c.User}, {"device", c.Device}, {"agent", c.Agent}} {
		if t.id == "" {
			return fmt.Errorf("%s id is empty", t.name)
		}
		if i := strings.IndexAny(t.id, "\t\r\n"); i >= 0 {
			return fmt.Errorf("%s id %q cannot be a subject token: it contains %q", t.name, t.id, t.id[i])
		}
	}
	return nil
}
