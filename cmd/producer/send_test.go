package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/stream"
)

// stored is a message as CHAT_IN holds it.
type stored struct {
	Subject string
	MsgID   string
	Body    string
}

// storedIn returns the messages CHAT_IN holds, in order.
func storedIn(t *testing.T, e *env) []stored {
	t.Helper()
	st, err := e.js.Stream(t.Context(), e.cfg.InStream)
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	for seq := uint64(1); seq <= st.CachedInfo().State.LastSeq; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("CHAT_IN seq %d: %v", seq, err)
		}
		out = append(out, stored{Subject: m.Subject, MsgID: m.Header.Get(jetstream.MsgIDHeader), Body: string(m.Data)})
	}
	return out
}

func TestSendText(t *testing.T) {
	e := newEnv(t)
	args := []string{"send", "--user", "alice", "--device", "phone", "--agent", "bot", "--role", "assistant", "--id", "m-1", `hi "there"`}
	for i, wantOut := range []string{"stream=CHAT_IN seq=1 duplicate=false\n", "stream=CHAT_IN seq=1 duplicate=true\n"} {
		got := runProducer(t.Context(), e.url, "", args...)
		if got.code != 0 || got.stdout != wantOut {
			t.Fatalf("send #%d: exit %d, stdout %q, stderr %q: want 0 and %q", i+1, got.code, got.stdout, got.stderr, wantOut)
		}
	}
	got := runProducer(t.Context(), e.url, "", "--prefix", "opencontext.chat", "send", "--user", "alice", "--device", "phone", "--agent", "bot", "no id")
	if got.code != 0 {
		t.Fatalf("send without --id: exit %d, stderr %q", got.code, got.stderr)
	}

	msgs := storedIn(t, e)
	if len(msgs) != 2 {
		t.Fatalf("CHAT_IN holds %d messages, want 2: %+v", len(msgs), msgs)
	}
	for i, want := range []struct {
		msgID string
		body  message
	}{
		{"m-1", message{Role: "assistant", Content: `hi "there"`, MessageID: "m-1"}},
		{"", message{Role: "user", Content: "no id"}},
	} {
		var body message
		if err := json.Unmarshal([]byte(msgs[i].Body), &body); err != nil {
			t.Fatal(err)
		}
		ts, err := time.Parse(time.RFC3339Nano, body.Timestamp)
		if err != nil || time.Since(ts) > time.Minute || !strings.HasSuffix(body.Timestamp, "Z") {
			t.Errorf("message %d: timestamp %q, want RFC 3339 UTC of now", i, body.Timestamp)
		}
		body.Timestamp = ""
		if diff := cmp.Diff(want.body, body); diff != "" {
			t.Errorf("message %d body (-want +got):\n%s", i, diff)
		}
		if msgs[i].Subject != "opencontext.chat.in.alice.phone.bot" || msgs[i].MsgID != want.msgID {
			t.Errorf("message %d on %s with Nats-Msg-Id %q, want opencontext.chat.in.alice.phone.bot and %q", i, msgs[i].Subject, msgs[i].MsgID, want.msgID)
		}
	}
}

// TestSendEncodesIDs: send takes ids as they are and publishes them
// encoded as subject tokens.
func TestSendEncodesIDs(t *testing.T) {
	e := newEnv(t)
	got := runProducer(t.Context(), e.url, "", "send", "--user", "alice.b@example.com", "--device", "Bob's phone", "--agent", "100%*>", "hi")
	if got.code != 0 {
		t.Fatalf("send: exit %d, stderr %q", got.code, got.stderr)
	}
	msgs := storedIn(t, e)
	if len(msgs) != 1 {
		t.Fatalf("CHAT_IN holds %d messages, want 1: %+v", len(msgs), msgs)
	}
	if want := "opencontext.chat.in.alice%2Eb@example%2Ecom.Bob's%20phone.100%25%2A%3E"; msgs[0].Subject != want {
		t.Errorf("published on %q, want %q", msgs[0].Subject, want)
	}
}

func TestSendLines(t *testing.T) {
	const (
		full    = `{"role":"user","content":"a","user_id":"u1","device_id":"d1","agent_id":"a1","message_id":"m1"}`
		bare    = `{"role":"user","content":"b"}`
		dotted  = `{"role":"user","content":"c","user_id":"u.x","device_id":"d","agent_id":"a"}`
		numID   = `{"role":"tool","content":[{"type":"text","text":"d"}],"user_id":"u2","device_id":"d2","agent_id":"a2","message_id":7}`
		hostile = `{"role":"user","content":"e","user_id":"a:b","device_id":"ü","agent_id":"100%"}`
		tabbed  = `{"role":"user","content":"f","user_id":"u\tx","device_id":"d","agent_id":"a"}`
	)
	tests := []struct {
		name       string
		flags      []string
		input      string
		wantCode   int
		wantStdout string
		wantStderr []string // line prefixes, in order
		want       []stored
	}{{
		name:     "ids from the lines",
		input:    full + "\n\n" + "not json\n" + bare + "\r\n" + dotted + "\n" + numID + "\n" + hostile + "\n" + tabbed,
		wantCode: 1,
		wantStdout: "line 1: stream=CHAT_IN seq=1 duplicate=false\n" +
			"line 5: stream=CHAT_IN seq=2 duplicate=false\n" +
			"line 6: stream=CHAT_IN seq=3 duplicate=false\n" +
			"line 7: stream=CHAT_IN seq=4 duplicate=false\n",
		wantStderr: []string{"line 3: not a JSON object", `line 4: no conversation: give --user or "user_id"`,
			`line 8: user id "u\tx" cannot be a subject token`, "producer: 3 line(s) failed"},
		want: []stored{
			{Subject: "opencontext.chat.in.u1.d1.a1", MsgID: "m1", Body: full},
			{Subject: "opencontext.chat.in.u%2Ex.d.a", Body: dotted},
			{Subject: "opencontext.chat.in.u2.d2.a2", Body: numID},
			{Subject: "opencontext.chat.in.a:b.ü.100%25", Body: hostile},
		},
	}, {
		name:       "flags override, lines complete",
		flags:      []string{"--user", "flagged", "--device", "dev"},
		input:      full + "\n" + bare + "\n",
		wantCode:   1,
		wantStdout: "line 1: stream=CHAT_IN seq=1 duplicate=false\n",
		wantStderr: []string{`line 2: no conversation: give --agent or "agent_id"`, "producer: 1 line(s) failed"},
		want:       []stored{{Subject: "opencontext.chat.in.flagged.dev.a1", MsgID: "m1", Body: full}},
	}, {
		name:       "all good",
		flags:      []string{"--user", "u", "--device", "d", "--agent", "a"},
		input:      bare + "\n" + bare + "\n",
		wantStdout: "line 1: stream=CHAT_IN seq=1 duplicate=false\nline 2: stream=CHAT_IN seq=2 duplicate=false\n",
		want: []stored{
			{Subject: "opencontext.chat.in.u.d.a", Body: bare},
			{Subject: "opencontext.chat.in.u.d.a", Body: bare},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			got := runProducer(t.Context(), e.url, tt.input, append([]string{"send"}, tt.flags...)...)
			if got.code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", got.code, tt.wantCode, got.stderr)
			}
			if diff := cmp.Diff(tt.wantStdout, got.stdout); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			var errLines []string
			if got.stderr != "" {
				errLines = strings.Split(strings.TrimSuffix(got.stderr, "\n"), "\n")
			}
			if len(errLines) != len(tt.wantStderr) {
				t.Errorf("stderr has %d lines, want %d:\n%s", len(errLines), len(tt.wantStderr), got.stderr)
			} else {
				for i, prefix := range tt.wantStderr {
					if !strings.HasPrefix(errLines[i], prefix) {
						t.Errorf("stderr line %d = %q, want it to start with %q", i+1, errLines[i], prefix)
					}
				}
			}
			if diff := cmp.Diff(tt.want, storedIn(t, e)); diff != "" {
				t.Errorf("CHAT_IN (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSendEndBatch: --end-batch sets Chatbuf-End-Batch: true; without it
// the header is absent.
func TestSendEndBatch(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{
		{"send", "--user", "alice", "--device", "phone", "--agent", "bot", "first"},
		{"send", "--user", "alice", "--device", "phone", "--agent", "bot", "--end-batch", "last"},
	} {
		if got := runProducer(t.Context(), e.url, "", args...); got.code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", args, got.code, got.stderr)
		}
	}
	st, err := e.js.Stream(t.Context(), e.cfg.InStream)
	if err != nil {
		t.Fatal(err)
	}
	for seq, want := range map[uint64]bool{1: false, 2: true} {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("CHAT_IN seq %d: %v", seq, err)
		}
		if got := stream.EndsBatch(m.Header); got != want {
			t.Errorf("seq %d: ends batch %v (header %q), want %v", seq, got, m.Header.Get(stream.HeaderEndBatch), want)
		}
	}
}
