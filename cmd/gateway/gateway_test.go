package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/stream"
)

const (
	msgPath   = "/api/push/chat/message"
	msgsPath  = "/api/push/chat/messages"
	chatPath  = "/api/push/chat"
	batchPath = "/api/push/batch"
	flushPath = "/api/push/chat/flush"
)

func TestPushMessage(t *testing.T) {
	e := newEnv(t, nil)
	a := e.post(msgPath, `{"role":"user","content":"hi","user_id":"alice","device_id":"phone","agent_id":"bot",
		"timestamp":"2026-11-26T10:00:00.123456789+01:00","metadata":{"n":12345678901234567890},"message_id":"m1","extra":1}`)
	expect(t, a, 200, `{"code":0,"status":200,"message":"Chat message pushed successfully"}`)
	got := e.newMessages(1)[0]
	if got.Subject != "opencontext.chat.in.alice.phone.bot" {
		t.Errorf("subject %q", got.Subject)
	}
	if id := got.Header.Get("Nats-Msg-Id"); id != "m1" {
		t.Errorf("Nats-Msg-Id %q, want m1", id)
	}
	if v := got.Header.Get(EndBatchHeader); v != "" {
		t.Errorf("%s %q on a message without flush", EndBatchHeader, v)
	}
	want := map[string]any{"role": "user", "content": "hi", "timestamp": "2026-11-26T10:00:00.123456789+01:00",
		"metadata": map[string]any{"n": 12345678901234567890.0}, "message_id": "m1"}
	if fmt.Sprint(got.Body) != fmt.Sprint(want) {
		t.Errorf("body %v, want %v", got.Body, want)
	}
}

// The body is the client's JSON verbatim: numbers are not rounded through
// float64, content parts are kept as sent.
func TestPushMessageVerbatim(t *testing.T) {
	e := newEnv(t, nil)
	content := `[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]`
	meta := `{"n":12345678901234567890,"f":1.10}`
	expect(t, e.post(msgPath, `{"role":"assistant","content":`+content+`,"metadata":`+meta+`}`), 200,
		`{"code":0,"status":200,"message":"Chat message pushed successfully"}`)
	ctxMsg, err := e.js.Stream(t.Context(), stream.DefaultInStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ctxMsg.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"role":"assistant","content":` + content + `,"metadata":` + meta + `}`
	if string(m.Data) != want {
		t.Errorf("body\n  %s\nwant\n  %s", m.Data, want)
	}
	if m.Subject != "opencontext.chat.in._._._" {
		t.Errorf("subject %q, want ids not given as _", m.Subject)
	}
}

func TestPushMessagesIDsOfAnyForm(t *testing.T) {
	e := newEnv(t, nil)
	ids := []chat.Conversation{
		{User: "alice@example.com", Device: "phone.1", Agent: "a:b"},
		{User: "Zoë Müller", Device: "设备 2", Agent: "100%*>"},
	}
	var msgs []string
	for i, c := range ids {
		msgs = append(msgs, fmt.Sprintf(`{"role":"user","content":"m%d","user_id":%q,"device_id":%q,"agent_id":%q}`, i, c.User, c.Device, c.Agent))
	}
	a := e.post(msgsPath, `{"messages":[`+strings.Join(msgs, ",")+`]}`)
	expect(t, a, 200, `{"code":0,"status":200,"message":"Pushed 2 chat messages successfully","data":{"count":2}}`)
	for i, got := range e.newMessages(2) {
		if want := ids[i].Subject(stream.DefaultPrefix, stream.KindIn); got.Subject != want {
			t.Errorf("message %d: subject %q, want %q", i, got.Subject, want)
		}
		c, err := chat.ParseSubject(stream.DefaultPrefix, stream.KindIn, got.Subject)
		if err != nil || c != ids[i] {
			t.Errorf("message %d: subject %q reads as %+v (%v), want %+v", i, got.Subject, c, err, ids[i])
		}
		if strings.ContainsAny(strings.TrimPrefix(got.Subject, "opencontext.chat.in."), " *>") ||
			strings.Count(got.Subject, ".") != 5 {
			t.Errorf("message %d: subject %q is not five dot-separated tokens", i, got.Subject)
		}
	}
}

// A message's own ids override the request's; the request's fill in.
func TestPushMessagesRequestIDs(t *testing.T) {
	e := newEnv(t, nil)
	a := e.post(msgsPath, `{"user_id":"u","device_id":"d","messages":[
		{"role":"user","content":"a"},
		{"role":"assistant","content":"b","user_id":"other","agent_id":"x"},
		{"role":"user","content":"c","device_id":""}]}`)
	expect(t, a, 200, `{"code":0,"status":200,"message":"Pushed 3 chat messages successfully","data":{"count":3}}`)
	want := []string{"u.d._", "other.d.x", "u.d._"}
	for i, got := range e.newMessages(3) {
		if got.Subject != "opencontext.chat.in."+want[i] {
			t.Errorf("message %d: subject %q, want ...%s", i, got.Subject, want[i])
		}
	}
}

func TestFlushImmediatelyEndsEachConversationsBatch(t *testing.T) {
	e := newEnv(t, nil)
	body := `{"user_id":"u","flush_immediately":true,"messages":[
		{"role":"user","content":"1","agent_id":"a"},
		{"role":"user","content":"2","agent_id":"b"},
		{"role":"assistant","content":"3","agent_id":"a"},
		{"role":"user","content":"4","agent_id":"a"},
		{"role":"assistant","content":"5","agent_id":"b"},
		{"role":"user","content":"6","agent_id":"c"}]}`
	expect(t, e.post(msgsPath, body), 200, `{"code":0,"status":200,"message":"Pushed 6 chat messages successfully","data":{"count":6}}`)
	ends := map[string]bool{"4": true, "5": true, "6": true}
	for _, got := range e.newMessages(6) {
		c := got.Body["content"].(string)
		if h := got.Header.Get(EndBatchHeader); (h == "true") != ends[c] || (h != "" && h != "true") {
			t.Errorf("message %s on %s: %s %q, want it only on each conversation's last message", c, got.Subject, EndBatchHeader, h)
		}
	}

	// Without flush_immediately no message carries it.
	expect(t, e.post(msgsPath, `{"messages":[{"role":"user","content":"x"},{"role":"user","content":"y"}]}`), 200,
		`{"code":0,"status":200,"message":"Pushed 2 chat messages successfully","data":{"count":2}}`)
	for _, got := range e.newMessages(2) {
		if h := got.Header.Get(EndBatchHeader); h != "" {
			t.Errorf("message %v: %s %q without flush_immediately", got.Body["content"], EndBatchHeader, h)
		}
	}
}

func TestMergedRoute(t *testing.T) {
	e := newEnv(t, nil)
	// buffer mode: role and content default as OpenContext's; the
	// messages' own ids are not used.
	a := e.post(chatPath, `{"user_id":"u@x.org","device_id":"d","agent_id":"a","messages":[
		{"content":"no role"},{"role":"assistant","user_id":"ignored"},{"role":"user","content":[{"type":"text","text":"t"}]}]}`)
	expect(t, a, 200, `{"code":0,"status":200,"message":"Chat messages pushed successfully","data":{"count":3}}`)
	got := e.newMessages(3)
	for i, m := range got {
		if m.Subject != "opencontext.chat.in.u@x%2Eorg.d.a" {
			t.Errorf("message %d: subject %q", i, m.Subject)
		}
		if h := m.Header.Get(EndBatchHeader); h != "" {
			t.Errorf("message %d: %s %q in buffer mode without flush", i, EndBatchHeader, h)
		}
	}
	if got[0].Body["role"] != "user" || got[1].Body["content"] != "" {
		t.Errorf("defaults: %v, %v", got[0].Body, got[1].Body)
	}

	// direct mode ends the batch after the last message.
	a = e.post(chatPath, `{"user_id":"u","process_mode":"direct","messages":[{"role":"user","content":"1"},{"role":"assistant","content":"2"}]}`)
	expect(t, a, 200, `{"code":0,"status":200,"message":"Chat messages submitted for processing","data":{"message_count":2}}`)
	got = e.newMessages(2)
	if got[0].Header.Get(EndBatchHeader) != "" || got[1].Header.Get(EndBatchHeader) != "true" {
		t.Errorf("direct mode: headers %v, %v; want the end on the last message only", got[0].Header, got[1].Header)
	}

	// buffer mode with flush_immediately likewise.
	a = e.post(chatPath, `{"user_id":"u","flush_immediately":true,"messages":[{"role":"user","content":"1"},{"role":"assistant","content":"2"}]}`)
	expect(t, a, 200, `{"code":0,"status":200,"message":"Chat messages pushed successfully","data":{"count":2}}`)
	got = e.newMessages(2)
	if got[0].Header.Get(EndBatchHeader) != "" || got[1].Header.Get(EndBatchHeader) != "true" {
		t.Errorf("flush_immediately: headers %v, %v; want the end on the last message only", got[0].Header, got[1].Header)
	}

	many := strings.Repeat(`{"role":"user","content":"x"},`, 101)
	for _, tc := range []struct{ name, body, want string }{
		{"no messages", `{"messages":[]}`,
			`{"detail":[{"type":"too_short","loc":["body","messages"],"msg":"List should have at least 1 item after validation, not 0","input":[],"ctx":{"field_type":"List","min_length":1,"actual_length":0}}]}`},
		{"101 messages", `{"messages":[` + strings.TrimSuffix(many, ",") + `]}`, ""},
		{"bad mode", `{"process_mode":"later","messages":[{"role":"user","content":"x"}]}`,
			`{"detail":[{"type":"literal_error","loc":["body","process_mode"],"msg":"Input should be 'buffer' or 'direct'","input":"later","ctx":{"expected":"'buffer' or 'direct'"}}]}`},
		{"empty user", `{"user_id":"","messages":[{"role":"user","content":"x"}]}`,
			`{"detail":[{"type":"string_too_short","loc":["body","user_id"],"msg":"String should have at least 1 character","input":"","ctx":{"min_length":1}}]}`},
	} {
		a := e.post(chatPath, tc.body)
		if tc.want == "" {
			if a.status != 422 || !strings.Contains(string(a.body), `"too_long"`) {
				t.Errorf("%s: %d %s, want 422 too_long", tc.name, a.status, a.body)
			}
			continue
		}
		expect(t, a, 422, tc.want)
	}
	if n := e.count(); n != 7 {
		t.Errorf("CHAT_IN holds %d messages, want 7 (none from rejected requests)", n)
	}
}

func TestBatch(t *testing.T) {
	e := newEnv(t, nil)
	a := e.post(batchPath, `{"user_id":"u","device_id":"d","items":[
		{"type":"chat","data":{"role":"user","content":"hello","agent_id":"bot"}},
		{"type":"screenshot","data":{"path":"/tmp/x.png"}},
		{"type":"chat","data":{}},
		{"type":"chat","data":{"role":"wizard","content":"x"}},
		{"type":"hologram","data":{}},
		{"type":"chat","data":{"role":"assistant","content":"bye","user_id":"v"}}]}`)
	expect(t, a, 200, `{"code":0,"status":200,"message":"Batch push completed: 3/6 items succeeded","data":{
		"results":[
			{"type":"chat","success":true},
			{"type":"screenshot","success":false,"error":"Item type screenshot is not supported: this endpoint accepts chat items only"},
			{"type":"chat","success":true},
			{"type":"chat","success":false,"error":"role: Value error, role \"wizard\" is not one of user, assistant, system, tool, developer or function"},
			{"type":"hologram","success":false,"error":"Unknown item type: hologram"},
			{"type":"chat","success":true}],
		"success_count":3,"total":6}}`)
	got := e.newMessages(3)
	want := []struct{ subject, content, role string }{
		{"opencontext.chat.in.u.d.bot", "hello", "user"},
		{"opencontext.chat.in.u.d._", "", "user"},
		{"opencontext.chat.in.v.d._", "bye", "assistant"},
	}
	for i, w := range want {
		if got[i].Subject != w.subject || got[i].Body["content"] != w.content || got[i].Body["role"] != w.role {
			t.Errorf("message %d: %s %v, want %s %s/%q", i, got[i].Subject, got[i].Body, w.subject, w.role, w.content)
		}
	}
	if n := e.count(); n != 3 {
		t.Errorf("CHAT_IN holds %d messages, want 3", n)
	}
	expect(t, e.post(batchPath, `{"items":[{"type":"chat"}]}`), 422,
		`{"detail":[{"type":"missing","loc":["body","items",0,"data"],"msg":"Field required","input":{"type":"chat"}}]}`)
}

func TestValidationErrors(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxMessageBytes = 200 })
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		name, path, body string
		want             string // the whole answer, or a fragment of it after "~"
	}{
		{"missing role", msgPath, `{"content":"hi"}`,
			`{"detail":[{"type":"missing","loc":["body","role"],"msg":"Field required","input":{"content":"hi"}}]}`},
		{"bad role", msgPath, `{"role":"wizard","content":"hi"}`,
			`{"detail":[{"type":"value_error","loc":["body","role"],"msg":"Value error, role \"wizard\" is not one of user, assistant, system, tool, developer or function","input":"wizard","ctx":{"error":"role \"wizard\" is not one of user, assistant, system, tool, developer or function"}}]}`},
		{"role not a string", msgPath, `{"role":1,"content":"hi"}`,
			`{"detail":[{"type":"string_type","loc":["body","role"],"msg":"Input should be a valid string","input":1}]}`},
		{"not JSON", msgPath, `{"role":`,
			`~"type":"json_invalid","loc":["body",`},
		{"empty body", msgPath, ``,
			`{"detail":[{"type":"missing","loc":["body"],"msg":"Field required","input":null}]}`},
		{"array body", msgPath, `[1]`,
			`{"detail":[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from","input":[1]}]}`},
		{"content a number", msgPath, `{"role":"user","content":5}`,
			`{"detail":[{"type":"string_type","loc":["body","content"],"msg":"Input should be a valid string or a list of content parts","input":5}]}`},
		{"content parts not objects", msgPath, `{"role":"user","content":["a"]}`,
			`{"detail":[{"type":"dict_type","loc":["body","content",0],"msg":"Input should be a valid dictionary","input":"a"}]}`},
		{"missing content", msgPath, `{"role":"user"}`,
			`{"detail":[{"type":"missing","loc":["body","content"],"msg":"Field required","input":{"role":"user"}}]}`},
		{"metadata not an object", msgPath, `{"role":"user","content":"x","metadata":[1]}`,
			`{"detail":[{"type":"dict_type","loc":["body","metadata"],"msg":"Input should be a valid dictionary","input":[1]}]}`},
		{"timestamp not RFC 3339", msgPath, `{"role":"user","content":"x","timestamp":"yesterday"}`,
			`~timestamp \"yesterday\" is not RFC 3339`},
		{"message too large", msgPath, `{"role":"user","content":"` + long + `"}`,
			`~the limit is 200 (CHAT_MAX_MESSAGE_BYTES)`},
		{"message_id too long", msgPath, `{"role":"user","content":"x","message_id":"` + strings.Repeat("i", 129) + `"}`,
			`~"type":"string_too_long","loc":["body","message_id"]`},
		{"id with a control character", msgPath, `{"role":"user","content":"x","user_id":"a\u0001b"}`,
			`~"loc":["body","user_id"]`},
		{"id too long", msgsPath, `{"user_id":"` + strings.Repeat("u", 129) + `","messages":[{"role":"user","content":"x"}]}`,
			`~"loc":["body","user_id"]`},
		{"second message bad", msgsPath, `{"messages":[{"role":"user","content":"x"},{"content":"y"}]}`,
			`{"detail":[{"type":"missing","loc":["body","messages",1,"role"],"msg":"Field required","input":{"content":"y"}}]}`},
		{"messages missing", msgsPath, `{}`,
			`{"detail":[{"type":"missing","loc":["body","messages"],"msg":"Field required","input":{}}]}`},
		{"flush_immediately not a bool", msgsPath, `{"messages":[],"flush_immediately":"soon"}`,
			`{"detail":[{"type":"bool_type","loc":["body","flush_immediately"],"msg":"Input should be a valid boolean","input":"soon"}]}`},
		{"flush without body", flushPath, ``,
			`{"detail":[{"type":"missing","loc":["body"],"msg":"Field required","input":null}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := e.post(tc.path, tc.body)
			if frag, ok := strings.CutPrefix(tc.want, "~"); ok {
				if a.status != 422 || !strings.Contains(string(a.body), frag) || !strings.HasPrefix(string(a.body), `{"detail":[`) {
					t.Errorf("%d %s, want 422 with %s", a.status, a.body, frag)
				}
				return
			}
			expect(t, a, 422, tc.want)
		})
	}
	if n := e.count(); n != 0 {
		t.Errorf("CHAT_IN holds %d messages, want none", n)
	}
}

// Every message the gateway accepts is one the worker takes: chat.Decode
// passes on each body published (the worker's own check).
func TestAcceptedMessagesDecode(t *testing.T) {
	e := newEnv(t, nil)
	for _, role := range []string{"user", "assistant", "system", "tool", "developer", "function"} {
		expect(t, e.post(msgPath, `{"role":"`+role+`","content":"x","user_id":"a b.c","timestamp":"2026-01-02T03:04:05Z"}`), 200,
			`{"code":0,"status":200,"message":"Chat message pushed successfully"}`)
	}
	s, err := e.js.Stream(t.Context(), stream.DefaultInStream)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 6; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		c, err := chat.ParseSubject(stream.DefaultPrefix, stream.KindIn, m.Subject)
		if err != nil {
			t.Fatalf("subject %q: %v", m.Subject, err)
		}
		if _, err := chat.Decode(m.Data, c, 0); err != nil {
			t.Errorf("message %d (%s) would be dead-lettered: %v", seq, m.Data, err)
		}
	}
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxBodyBytes = 1000 })
	a := e.post(msgsPath, `{"messages":[{"role":"user","content":"`+strings.Repeat("x", 2000)+`"}]}`)
	expect(t, a, http.StatusRequestEntityTooLarge, `{"detail":"Request body too large: the limit is 1000 bytes (GATEWAY_MAX_BODY_BYTES)"}`)
	if n := e.count(); n != 0 {
		t.Errorf("CHAT_IN holds %d messages, want none", n)
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, nil)
	body := `{"role":"user","content":"hi"}`
	required := `{"detail":"API key required. Provide it via X-API-Key header or api_key query parameter."}`
	invalid := `{"detail":"Invalid API key"}`
	okBody := `{"code":0,"status":200,"message":"Chat message pushed successfully"}`

	expect(t, e.post(msgPath, body, "X-API-Key", ""), 401, required)
	expect(t, e.post(msgPath, body, "X-API-Key", "wrong"), 401, invalid)
	expect(t, e.post(msgPath, body, "X-API-Key", "", "Authorization", "Bearer wrong"), 401, invalid)
	expect(t, e.post(msgPath, body, "X-API-Key", "", "Authorization", "Basic "+testKey), 401, required)
	expect(t, e.post(msgPath+"?api_key=wrong", body, "X-API-Key", ""), 401, invalid)
	// The header wins over the query.
	expect(t, e.post(msgPath+"?api_key="+testKey, body, "X-API-Key", "wrong"), 401, invalid)
	// A bad key is refused before the body is read.
	expect(t, e.post(msgPath, `not json`, "X-API-Key", ""), 401, required)
	if n := e.count(); n != 0 {
		t.Fatalf("CHAT_IN holds %d messages after refused requests", n)
	}

	expect(t, e.post(msgPath, body), 200, okBody)
	expect(t, e.post(msgPath, body, "X-API-Key", "second-key"), 200, okBody)
	expect(t, e.post(msgPath, body, "X-API-Key", "", "Authorization", "Bearer "+testKey), 200, okBody)
	expect(t, e.post(msgPath+"?api_key="+url.QueryEscape(testKey), body, "X-API-Key", ""), 200, okBody)
	expect(t, e.post(msgPath+"?api_key=wrong", body), 200, okBody)
	if n := e.count(); n != 5 {
		t.Errorf("CHAT_IN holds %d messages, want 5", n)
	}

	// Not checked on health, auth status and metrics.
	expect(t, e.do("GET", "/health", "", "X-API-Key", ""), 200,
		`{"code":0,"status":200,"message":"success","data":{"status":"healthy","service":"opencontext"}}`)
	expect(t, e.do("GET", "/api/health", "", "X-API-Key", ""), 200,
		`{"code":0,"status":200,"message":"success","data":{"status":"healthy","service":"opencontext","components":{"nats":true}}}`)
	expect(t, e.do("GET", "/api/auth/status", "", "X-API-Key", ""), 200,
		`{"code":0,"status":200,"message":"success","data":{"auth_enabled":true}}`)
	if a := e.do("GET", "/metrics", "", "X-API-Key", ""); a.status != 200 {
		t.Errorf("/metrics without key: %d", a.status)
	}
	// Checked on every other route.
	for _, r := range []struct{ method, path string }{{"POST", msgsPath}, {"POST", chatPath}, {"POST", batchPath}, {"POST", flushPath},
		{"GET", "/api/completions/cache/stats"}, {"POST", "/api/completions/cache/clear"}, {"POST", "/api/completions/precompute/1?content=x"}} {
		expect(t, e.do(r.method, r.path, `{}`, "X-API-Key", ""), 401, required)
	}
}

func TestAuthDisabled(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Keys, o.NoAuth = nil, true })
	expect(t, e.post(msgPath, `{"role":"user","content":"hi"}`, "X-API-Key", ""), 200,
		`{"code":0,"status":200,"message":"Chat message pushed successfully"}`)
	expect(t, e.do("GET", "/api/auth/status", ""), 200, `{"code":0,"status":200,"message":"success","data":{"auth_enabled":false}}`)
}

func TestNoKeyRefusesToStart(t *testing.T) {
	_, err := loadConfig(map[string]string{})
	if err == nil || !strings.Contains(err.Error(), "GATEWAY_AUTH=false") {
		t.Errorf("no key configured: error %v, want one naming GATEWAY_AUTH=false", err)
	}
	cfg, err := loadConfig(map[string]string{"GATEWAY_AUTH": "false"})
	if err != nil || cfg.Auth {
		t.Errorf("GATEWAY_AUTH=false: %+v, %v", cfg, err)
	}
	cfg, err = loadConfig(map[string]string{"GATEWAY_API_KEYS": " k1, k2 ,,", "CONTEXT_API_KEY": "k3"})
	if err != nil || fmt.Sprint(cfg.keys()) != "[k1 k2 k3]" || cfg.Addr != ":1733" {
		t.Errorf("keys %q addr %q, %v", cfg.keys(), cfg.Addr, err)
	}
	_, err = loadConfig(map[string]string{"CONTEXT_API_KEY": "topsecret", "GATEWAY_PUBLISH_TIMEOUT": "soon"})
	if err == nil || strings.Contains(err.Error(), "topsecret") || !strings.Contains(err.Error(), "GATEWAY_PUBLISH_TIMEOUT") {
		t.Errorf("bad duration: %v", err)
	}
	if _, err := newGateway(nil, Options{}); err == nil {
		t.Error("newGateway without keys and with auth on: no error")
	}
}

func TestNATSDown(t *testing.T) {
	e := newEnv(t, nil)
	e.nats.Stop()
	waitFor(t, "the gateway to see NATS gone", func() bool { return !e.g.nc.IsConnected() })
	for _, r := range []struct{ path, body, msg string }{
		{msgPath, `{"role":"user","content":"hi"}`, "Chat message push failed: NATS is unavailable"},
		{msgsPath, `{"messages":[{"role":"user","content":"hi"}]}`, "Chat messages push failed: NATS is unavailable"},
		{chatPath, `{"messages":[{"role":"user","content":"hi"}]}`, "Chat messages push failed: NATS is unavailable"},
		{batchPath, `{"items":[{"type":"chat","data":{"content":"hi"}}]}`, "Batch push failed: NATS is unavailable"},
		{flushPath, `{}`, "Chat buffer flush failed: NATS is unavailable"},
	} {
		expect(t, e.post(r.path, r.body), 503, fmt.Sprintf(`{"code":503,"status":503,"message":%q}`, r.msg))
	}
	expect(t, e.do("GET", "/api/health", ""), 503, `{"code":503,"status":503,"message":"Service unhealthy"}`)
	expect(t, e.do("GET", "/health", ""), 200, `{"code":0,"status":200,"message":"success","data":{"status":"healthy","service":"opencontext"}}`)
	a := e.do("GET", "/api/completions/cache/stats", "")
	if a.status != 503 || !strings.Contains(string(a.body), `"success":false`) {
		t.Errorf("completion stats with NATS down: %d %s", a.status, a.body)
	}
	// Validation still answers 422 without NATS.
	expect(t, e.post(msgPath, `{"content":"hi"}`), 422,
		`{"detail":[{"type":"missing","loc":["body","role"],"msg":"Field required","input":{"content":"hi"}}]}`)

	// Back up: accepted again.
	e.nats.Restart()
	waitFor(t, "the gateway to reconnect", e.g.nc.IsConnected)
	expect(t, e.post(msgPath, `{"role":"user","content":"back"}`), 200, `{"code":0,"status":200,"message":"Chat message pushed successfully"}`)
}

// Without CHAT_IN (no worker ever created it) JetStream gives no PubAck:
// 503, never 200.
func TestNoStream(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Prefix = "elsewhere" })
	a := e.post(msgPath, `{"role":"user","content":"hi"}`)
	if a.status != 503 || !strings.Contains(string(a.body), `"code":503`) || !strings.Contains(string(a.body), "elsewhere.in._._._") {
		t.Errorf("publish without a stream: %d %s, want 503 naming the subject", a.status, a.body)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, nil)
	e.post(msgPath, `{"role":"user","content":"hi"}`)
	e.post(msgPath, `{"content":"hi"}`)
	e.post(msgPath, `{}`, "X-API-Key", "")
	a := e.do("GET", "/metrics", "")
	for _, want := range []string{
		`chatbuf_gateway_requests_total{code="200",route="POST /api/push/chat/message"} 1`,
		`chatbuf_gateway_requests_total{code="422",route="POST /api/push/chat/message"} 1`,
		`chatbuf_gateway_requests_total{code="401",route="POST /api/push/chat/message"} 1`,
		`chatbuf_gateway_request_duration_seconds_count{route="POST /api/push/chat/message"} 3`,
		`chatbuf_gateway_messages_total{outcome="accepted"} 1`,
		`chatbuf_gateway_messages_total{outcome="invalid"} 1`,
	} {
		if !strings.Contains(string(a.body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestUnknownRoute(t *testing.T) {
	e := newEnv(t, nil)
	expect(t, e.do("GET", "/api/nothing", ""), 404, `{"detail":"Not Found"}`)
	expect(t, e.do("GET", msgPath, ""), 405, `{"detail":"Method Not Allowed"}`)
	expect(t, e.do("POST", "/health", ""), 405, `{"detail":"Method Not Allowed"}`)
	expect(t, e.do("GET", "/api/completions/precompute/1", ""), 405, `{"detail":"Method Not Allowed"}`)
}

// A request with more messages than the connection's async publish window
// (16384) is accepted whole, in order.
func TestLargeRequest(t *testing.T) {
	e := newEnv(t, nil)
	const n = 20000
	var b strings.Builder
	b.WriteString(`{"user_id":"big","messages":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"role":"user","content":"%d"}`, i)
	}
	b.WriteString(`]}`)
	expect(t, e.post(msgsPath, b.String()), 200,
		fmt.Sprintf(`{"code":0,"status":200,"message":"Pushed %d chat messages successfully","data":{"count":%d}}`, n, n))
	if got := e.count(); got != n {
		t.Fatalf("CHAT_IN holds %d messages, want %d", got, n)
	}
	s, err := e.js.Stream(t.Context(), stream.DefaultInStream)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 499 { // a sample: reading all 20000 one by one is slow
		m, err := s.GetMsg(t.Context(), uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf(`{"role":"user","content":"%d"}`, i); string(m.Data) != want {
			t.Fatalf("CHAT_IN message %d is %s, want %s: out of request order", i+1, m.Data, want)
		}
	}
}

// A time without offset, as Python's datetime.isoformat() writes a naive
// local time, is taken in the gateway's time zone and written RFC 3339;
// an RFC 3339 time is kept as sent.
func TestNaiveTimestamp(t *testing.T) {
	e := newEnv(t, nil)
	for _, ts := range []string{"2026-12-05T19:26:38.123456", "2026-12-05 19:26:38", "2026-12-05T19:26:38.5+08:00"} {
		expect(t, e.post(msgPath, `{"role":"user","content":"x","timestamp":"`+ts+`"}`), 200,
			`{"code":0,"status":200,"message":"Chat message pushed successfully"}`)
	}
	got := e.newMessages(3)
	for i, want := range []time.Time{
		time.Date(2026, 12, 5, 19, 26, 38, 123456000, time.Local),
		time.Date(2026, 12, 5, 19, 26, 38, 0, time.Local),
	} {
		if s := got[i].Body["timestamp"].(string); s != want.Format(time.RFC3339Nano) {
			t.Errorf("message %d: timestamp %q, want %q", i, s, want.Format(time.RFC3339Nano))
		}
	}
	if s := got[2].Body["timestamp"]; s != "2026-12-05T19:26:38.5+08:00" {
		t.Errorf("RFC 3339 timestamp stored as %q, want it as sent", s)
	}
}
