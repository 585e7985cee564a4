package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/stream"
	"github.com/opencontext/chatbuf/worker"
)

// EndBatchHeader on a message closes its conversation's batch right after
// it.
const EndBatchHeader = "Chatbuf-End-Batch"

// roles are the roles a message may have (OpenAI's).
var roles = map[string]bool{"user": true, "assistant": true, "system": true, "tool": true, "developer": true, "function": true}

const roleList = "user, assistant, system, tool, developer or function"

// outMsg is one validated message, ready to publish.
type outMsg struct {
	conv  chat.Conversation
	body  []byte
	msgID string
}

// msgRules say how a route reads a message.
type msgRules struct {
	defaults bool // role "user" and content "" when missing (batch items, the merged route)
	ownIDs   bool // the message's user_id, device_id and agent_id override the request's
}

var idNames = [3]string{"user_id", "device_id", "agent_id"}

// message validates one message at loc and builds the body the worker
// reads: role, content, timestamp, metadata and message_id, verbatim. ids
// are the request's (empty: not given). Everything the worker would
// dead-letter is an error here.
func (g *gateway) message(raw json.RawMessage, loc []any, ids [3]string, rules msgRules) (outMsg, []verr) {
	obj, errs := parseObject(raw, loc)
	if errs != nil {
		return outMsg{}, errs
	}

	roleRaw, present := obj["role"]
	if (!present || isNull(roleRaw)) && rules.defaults {
		roleRaw, present = json.RawMessage(`"user"`), true
	}
	switch role, given := str(object{"role": roleRaw}, "role", loc, &errs); {
	case !present:
		errs = append(errs, missing(at(loc, "role"), raw))
	case isNull(roleRaw):
		errs = append(errs, wrongType(at(loc, "role"), "string_type", "Input should be a valid string", roleRaw))
	case given && !roles[role]:
		errs = append(errs, valueErr(at(loc, "role"), roleRaw, "role %q is not one of %s", truncate(role, 64), roleList))
	}

	content, present := obj["content"]
	switch {
	case (!present || isNull(content)) && rules.defaults:
		content = json.RawMessage(`""`)
	case !present:
		errs = append(errs, missing(at(loc, "content"), raw))
	case isNull(content) || (content[0] != '"' && content[0] != '['):
		errs = append(errs, wrongType(at(loc, "content"), "string_type",
			"Input should be a valid string or a list of content parts", content))
	case content[0] == '[':
		var parts []json.RawMessage
		_ = json.Unmarshal(content, &parts) // valid JSON already
		for i, p := range parts {
			if p[0] != '{' {
				errs = append(errs, wrongType(at(loc, "content", i), "dict_type", "Input should be a valid dictionary", p))
			}
		}
	}

	if rules.ownIDs {
		for i, name := range idNames {
			if s, given := str(obj, name, loc, &errs); given && s != "" {
				if err := chat.ValidateID(s); err != nil {
					errs = append(errs, valueErr(at(loc, name), obj[name], "%s", idError(err)))
				}
				ids[i] = s
			}
		}
	}
	conv := conversation(ids)

	ts, hasTS := str(obj, "timestamp", loc, &errs)
	tsRaw := obj["timestamp"]
	if hasTS {
		if fixed, ok := naiveTimestamp(ts); ok {
			tsRaw, _ = json.Marshal(fixed)
		}
	}
	meta := obj["metadata"]
	if !isNull(meta) && meta[0] != '{' {
		errs = append(errs, wrongType(at(loc, "metadata"), "dict_type", "Input should be a valid dictionary", meta))
	}
	msgID, hasID := str(obj, "message_id", loc, &errs)
	if len(msgID) > chat.MaxMessageIDLen {
		errs = append(errs, verr{Type: "string_too_long", Loc: at(loc, "message_id"), Input: obj["message_id"],
			Msg: fmt.Sprintf("String should have at most %d bytes", chat.MaxMessageIDLen), Ctx: ordered{"max_length", chat.MaxMessageIDLen}})
	}
	if errs != nil {
		return outMsg{}, errs
	}

	var b bytes.Buffer
	b.Grow(len(roleRaw) + len(content) + len(meta) + len(ts) + len(msgID) + 80)
	b.WriteString(`{"role":`)
	b.Write(roleRaw)
	b.WriteString(`,"content":`)
	b.Write(content)
	if hasTS {
		b.WriteString(`,"timestamp":`)
		b.Write(tsRaw)
	}
	if !isNull(meta) {
		b.WriteString(`,"metadata":`)
		b.Write(meta)
	}
	if hasID {
		b.WriteString(`,"message_id":`)
		b.Write(obj["message_id"])
	}
	b.WriteByte('}')
	body := b.Bytes()
	if _, err := chat.Decode(body, conv, g.o.MaxMessageBytes); err != nil {
		var ce *chat.Error
		msg := err.Error()
		if errors.As(err, &ce) {
			msg = ce.Msg
			if ce.Reason == chat.ReasonTooLarge {
				msg = fmt.Sprintf("the message is %d bytes as stored, the limit is %d (CHAT_MAX_MESSAGE_BYTES)", len(body), g.o.MaxMessageBytes)
			}
		}
		return outMsg{}, []verr{valueErr(loc, raw, "%s", msg)}
	}
	return outMsg{conv: conv, body: body, msgID: msgID}, nil
}

// naiveLayouts are ISO 8601 times without an offset, as Python's
// datetime.isoformat() writes a naive (local) time.
var naiveLayouts = []string{"2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999"}

// naiveTimestamp turns a time without offset (OpenContext's clients send
// naive local times) into RFC 3339 in the gateway's time zone; ok is false
// for anything else, which is kept as it is (and checked as RFC 3339).
func naiveTimestamp(s string) (string, bool) {
	if _, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return "", false
	}
	for _, layout := range naiveLayouts {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t.Format(time.RFC3339Nano), true
		}
	}
	return "", false
}

// conversation turns ids into a conversation; an id not given is "_".
func conversation(ids [3]string) chat.Conversation {
	for i := range ids {
		if ids[i] == "" {
			ids[i] = chat.NotGiven
		}
	}
	return chat.Conversation{User: ids[0], Device: ids[1], Agent: ids[2]}
}

func idError(err error) string {
	return strings.TrimPrefix(strings.TrimPrefix(err.Error(), chat.ErrBadID.Error()), ": ")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// requestIDs reads the request's ids named in names (user_id, device_id,
// agent_id or a prefix of them). An empty id is not given, as OpenContext
// reads it, unless nonEmpty (the merged route's min_length=1).
func requestIDs(obj object, names []string, nonEmpty bool, errs *[]verr) [3]string {
	var ids [3]string
	loc := []any{"body"}
	for i, name := range names {
		s, given := str(obj, name, loc, errs)
		switch {
		case !given:
		case s == "" && nonEmpty:
			*errs = append(*errs, verr{Type: "string_too_short", Loc: at(loc, name), Msg: "String should have at least 1 character",
				Input: obj[name], Ctx: ordered{"min_length", 1}})
		case s == "":
		default:
			if err := chat.ValidateID(s); err != nil {
				*errs = append(*errs, valueErr(at(loc, name), obj[name], "%s", idError(err)))
			}
			ids[i] = s
		}
	}
	return ids
}

// publishWindow bounds the PubAcks one request waits for at once.
const publishWindow = 1024

// errUnavailable: the gateway has no NATS connection right now.
var errUnavailable = errors.New("NATS is unavailable")

// publish publishes msgs to CHAT_IN in order and waits for every PubAck.
// With endBatch, each conversation's last message carries EndBatchHeader.
func (g *gateway) publish(ctx context.Context, msgs []outMsg, endBatch bool) error {
	if len(msgs) == 0 {
		return nil
	}
	if !g.nc.IsConnected() {
		g.messages.WithLabelValues("failed").Add(float64(len(msgs)))
		return errUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, g.o.PublishTimeout)
	defer cancel()
	var last map[chat.Conversation]int
	if endBatch {
		last = make(map[chat.Conversation]int)
		for i, m := range msgs {
			last[m.conv] = i
		}
	}
	// The request's trace context (its own span's when traced) goes with
	// every message.
	var traced nats.Header
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		traced = nats.Header{}
		stream.SetTraceContext(traced, sc)
	}
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	acked := 0 // futures[:acked] have their PubAck
	wait := func() error {
		f := futures[acked]
		select {
		case <-f.Ok():
			acked++
			return nil
		case err := <-f.Err():
			return fmt.Errorf("publish to %s: %w", f.Msg().Subject, err)
		case <-ctx.Done():
			return fmt.Errorf("publish to %s: no PubAck within %v (GATEWAY_PUBLISH_TIMEOUT)", f.Msg().Subject, g.o.PublishTimeout)
		}
	}
	failed := func(err error) error {
		g.messages.WithLabelValues("accepted").Add(float64(acked))
		g.messages.WithLabelValues("failed").Add(float64(len(msgs) - acked))
		return err
	}
	deadline, _ := ctx.Deadline()
	for i, m := range msgs {
		// At most publishWindow PubAcks of one request pending: a large
		// request does not take the connection's whole async window.
		if i-acked >= publishWindow {
			if err := wait(); err != nil {
				return failed(err)
			}
		}
		nm := &nats.Msg{Subject: m.conv.Subject(g.o.Prefix, stream.KindIn), Data: m.body}
		if m.msgID != "" || (endBatch && last[m.conv] == i) || traced != nil {
			nm.Header = nats.Header{}
			for k, v := range traced {
				nm.Header[k] = v
			}
			if m.msgID != "" {
				nm.Header.Set(jetstream.MsgIDHeader, m.msgID)
			}
			if endBatch && last[m.conv] == i {
				nm.Header.Set(EndBatchHeader, "true")
			}
		}
		f, err := g.js.PublishMsgAsync(nm, jetstream.WithStallWait(max(time.Until(deadline), time.Millisecond)))
		if err != nil {
			return failed(fmt.Errorf("publish to %s: %w", nm.Subject, err))
		}
		futures = append(futures, f)
	}
	for acked < len(futures) {
		if err := wait(); err != nil {
			return failed(err)
		}
	}
	g.messages.WithLabelValues("accepted").Add(float64(len(msgs)))
	return nil
}

// unavailable answers 503 for a publish or request that failed.
func (g *gateway) unavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	g.log.Warn("http: "+what+" failed", "path", r.URL.Path, "error", err)
	fail(w, http.StatusServiceUnavailable, what+" failed: "+err.Error())
}

func (g *gateway) invalid(w http.ResponseWriter, r *http.Request, errs []verr) {
	g.log.Debug("http: invalid request", "path", r.URL.Path, "errors", len(errs), "first", errs[0].Msg)
	unprocessable(w, errs)
}

func (g *gateway) pushMessage(w http.ResponseWriter, r *http.Request) {
	_, whole, ok := g.readObject(w, r)
	if !ok {
		return
	}
	m, errs := g.message(whole, []any{"body"}, [3]string{}, msgRules{ownIDs: true})
	if errs != nil {
		g.messages.WithLabelValues("invalid").Inc()
		g.invalid(w, r, errs)
		return
	}
	if err := g.publish(r.Context(), []outMsg{m}, false); err != nil {
		g.unavailable(w, r, "Chat message push", err)
		return
	}
	okAnswer(w, "Chat message pushed successfully", nil)
}

// messages validates a request's list of messages.
func (g *gateway) messagesOf(items []json.RawMessage, ids [3]string, rules msgRules, errs *[]verr) []outMsg {
	out := make([]outMsg, 0, len(items))
	for i, raw := range items {
		m, e := g.message(raw, []any{"body", "messages", i}, ids, rules)
		*errs = append(*errs, e...)
		out = append(out, m)
	}
	if len(*errs) > 0 {
		g.messages.WithLabelValues("invalid").Add(float64(len(items)))
	}
	return out
}

func (g *gateway) pushMessages(w http.ResponseWriter, r *http.Request) {
	obj, whole, ok := g.readObject(w, r)
	if !ok {
		return
	}
	var errs []verr
	items, _ := list(obj, "messages", []any{"body"}, whole, &errs)
	ids := requestIDs(obj, idNames[:], false, &errs)
	flush := boolean(obj, "flush_immediately", []any{"body"}, &errs)
	msgs := g.messagesOf(items, ids, msgRules{ownIDs: true}, &errs)
	if errs != nil {
		g.invalid(w, r, errs)
		return
	}
	if len(msgs) == 0 && flush {
		// Nothing written: flush the request's conversation, as OpenContext does.
		if err := g.requestFlush(r.Context(), conversation(ids)); err != nil {
			g.unavailable(w, r, "Chat buffer flush", err)
			return
		}
	}
	if err := g.publish(r.Context(), msgs, flush); err != nil {
		g.unavailable(w, r, "Chat messages push", err)
		return
	}
	okAnswer(w, fmt.Sprintf("Pushed %d chat messages successfully", len(msgs)), map[string]int{"count": len(msgs)})
}

// pushChat is the merged route: ids from the request only, 1 to 100
// messages, process_mode buffer or direct.
func (g *gateway) pushChat(w http.ResponseWriter, r *http.Request) {
	obj, whole, ok := g.readObject(w, r)
	if !ok {
		return
	}
	var errs []verr
	items, listed := list(obj, "messages", []any{"body"}, whole, &errs)
	if listed && (len(items) < 1 || len(items) > 100) {
		word, n, key := "least", 1, "min_length"
		typ := "too_short"
		if len(items) > 100 {
			word, n, key, typ = "most", 100, "max_length", "too_long"
		}
		errs = append(errs, verr{Type: typ, Loc: []any{"body", "messages"}, Input: obj["messages"],
			Msg: fmt.Sprintf("List should have at %s %d item%s after validation, not %d", word, n, map[bool]string{true: "s"}[n > 1], len(items)),
			Ctx: ordered{"field_type", "List", key, n, "actual_length", len(items)}})
		items = nil
	}
	ids := requestIDs(obj, idNames[:], true, &errs)
	mode := "buffer"
	if raw := obj["process_mode"]; !isNull(raw) {
		var s string
		if json.Unmarshal(raw, &s) != nil || (s != "buffer" && s != "direct") {
			errs = append(errs, verr{Type: "literal_error", Loc: []any{"body", "process_mode"}, Input: raw,
				Msg: "Input should be 'buffer' or 'direct'", Ctx: ordered{"expected", "'buffer' or 'direct'"}})
		} else {
			mode = s
		}
	}
	flush := boolean(obj, "flush_immediately", []any{"body"}, &errs)
	msgs := g.messagesOf(items, ids, msgRules{defaults: true}, &errs)
	if errs != nil {
		g.invalid(w, r, errs)
		return
	}
	if err := g.publish(r.Context(), msgs, flush || mode == "direct"); err != nil {
		g.unavailable(w, r, "Chat messages push", err)
		return
	}
	if mode == "direct" {
		okAnswer(w, "Chat messages submitted for processing", map[string]int{"message_count": len(msgs)})
		return
	}
	okAnswer(w, "Chat messages pushed successfully", map[string]int{"count": len(msgs)})
}

// notChat are OpenContext's batch item types that are not chat messages.
var notChat = map[string]bool{"screenshot": true, "document": true, "activity": true, "todo": true, "tip": true}

type batchData struct {
	Results      []itemResult `json:"results"`
	SuccessCount int          `json:"success_count"`
	Total        int          `json:"total"`
}

type itemResult struct {
	Type    string `json:"type"`
	Success bool   `json:"success"`
	Error   string `json:"error,omitempty"`
}

func (g *gateway) pushBatch(w http.ResponseWriter, r *http.Request) {
	obj, whole, ok := g.readObject(w, r)
	if !ok {
		return
	}
	var errs []verr
	items, _ := list(obj, "items", []any{"body"}, whole, &errs)
	ids := requestIDs(obj, idNames[:2], false, &errs)
	results := make([]itemResult, len(items))
	var msgs []outMsg
	var chatItems []int
	for i, raw := range items {
		loc := []any{"body", "items", i}
		item, e := parseObject(raw, loc)
		if e != nil {
			errs = append(errs, e...)
			continue
		}
		typ, given := str(item, "type", loc, &errs)
		if _, present := item["type"]; !present {
			errs = append(errs, missing(at(loc, "type"), raw))
		}
		data, present := item["data"]
		switch {
		case !present:
			errs = append(errs, missing(at(loc, "data"), raw))
		case isNull(data) || data[0] != '{':
			errs = append(errs, wrongType(at(loc, "data"), "dict_type", "Input should be a valid dictionary", data))
		}
		if !given || len(errs) > 0 {
			continue
		}
		results[i].Type = typ
		switch {
		case typ == "chat":
			m, e := g.message(data, at(loc, "data"), ids, msgRules{defaults: true, ownIDs: true})
			if e != nil {
				g.messages.WithLabelValues("invalid").Inc()
				results[i].Error = itemError(e)
				continue
			}
			msgs = append(msgs, m)
			chatItems = append(chatItems, i)
		case notChat[typ]:
			results[i].Error = fmt.Sprintf("Item type %s is not supported: this endpoint accepts chat items only", typ)
		default:
			results[i].Error = "Unknown item type: " + typ
		}
	}
	if errs != nil {
		g.invalid(w, r, errs)
		return
	}
	if err := g.publish(r.Context(), msgs, false); err != nil {
		g.unavailable(w, r, "Batch push", err)
		return
	}
	for _, i := range chatItems {
		results[i].Success = true
	}
	okAnswer(w, fmt.Sprintf("Batch push completed: %d/%d items succeeded", len(chatItems), len(results)),
		batchData{Results: results, SuccessCount: len(chatItems), Total: len(results)})
}

// itemError is a batch item's validation errors as one line.
func itemError(errs []verr) string {
	parts := make([]string, len(errs))
	for i, e := range errs {
		var loc []string
		for _, l := range e.Loc[min(4, len(e.Loc)):] { // after body, items, i, data
			loc = append(loc, fmt.Sprint(l))
		}
		parts[i] = e.Msg
		if len(loc) > 0 {
			parts[i] = strings.Join(loc, ".") + ": " + e.Msg
		}
	}
	return strings.Join(parts, "; ")
}

func (g *gateway) flush(w http.ResponseWriter, r *http.Request) {
	obj, _, ok := g.readObject(w, r)
	if !ok {
		return
	}
	var errs []verr
	ids := requestIDs(obj, idNames[:], false, &errs)
	if errs != nil {
		g.invalid(w, r, errs)
		return
	}
	if err := g.requestFlush(r.Context(), conversation(ids)); err != nil {
		g.unavailable(w, r, "Chat buffer flush", err)
		return
	}
	okAnswer(w, "Chat buffer flushed successfully", nil)
}

// requestFlush asks a worker to flush conversation c and waits for its
// answer.
func (g *gateway) requestFlush(ctx context.Context, c chat.Conversation) error {
	if !g.nc.IsConnected() {
		return errUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, g.o.FlushTimeout)
	defer cancel()
	subject := c.Subject(g.o.Prefix, stream.KindFlush)
	msg, err := g.nc.RequestWithContext(ctx, subject, nil)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("no worker is listening on %s", subject)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no worker answered on %s within %v (GATEWAY_FLUSH_TIMEOUT)", subject, g.o.FlushTimeout)
	case err != nil:
		return fmt.Errorf("request on %s: %w", subject, err)
	}
	var reply worker.FlushReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return fmt.Errorf("the worker's answer on %s is not a flush reply: %v", subject, err)
	}
	if !reply.OK {
		return fmt.Errorf("the worker could not flush %s: %s", c, reply.Error)
	}
	g.log.Debug("http: flushed", "conversation", c.String(), "batches", reply.Batches, "batch_ids", reply.BatchIDs)
	return nil
}
