package main

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/opencontext/chatbuf/chat"
)

func TestConversationsAvoid(t *testing.T) {
	all := conversations("run1", 20, true, "")
	cs := conversations("run1", 20, true, "@")
	if len(cs) != 20 {
		t.Fatalf("%d conversations, want 20", len(cs))
	}
	left := 0
	for _, c := range cs {
		if strings.Contains(c.User+c.Device+c.Agent, "@") {
			t.Errorf("%q holds @", c)
		}
		if strings.ContainsAny(c.User+c.Device+c.Agent, ".*> %:") {
			left++
		}
	}
	had := 0
	for _, c := range all {
		if strings.Contains(c.User+c.Device+c.Agent, "@") {
			had++
		}
	}
	if had == 0 || left == 0 {
		t.Errorf("%d hostile ids with @ without the filter, %d other hostile ids with it: the filter proves nothing", had, left)
	}
}

func TestConversations(t *testing.T) {
	cs := conversations("run1", 20, true, "")
	if len(cs) != 20 {
		t.Fatalf("%d conversations, want 20", len(cs))
	}
	tags := map[string]bool{}
	for _, c := range cs {
		if err := c.Validate(); err != nil {
			t.Errorf("%q: %v", c, err)
		}
		tags[c.Tag()] = true
	}
	if len(tags) != len(cs) {
		t.Errorf("%d distinct tags for %d conversations", len(tags), len(cs))
	}
	var long, pair int
	for _, c := range cs[:hostileCount] {
		if len(c.User) == chat.MaxIDLen {
			long++
		}
		if c.User+":"+c.Device+":"+c.Agent == "run1-a:b:c:d" {
			pair++
		}
	}
	if long != 1 || pair != 2 {
		t.Errorf("%d ids of exactly %d bytes and %d triples sharing an unescaped key, want 1 and 2", long, chat.MaxIDLen, pair)
	}
	// Each byte a subject token holds only encoded is in some id, and
	// the subjects are distinct (two of them only with % encoded).
	subjects := map[string]bool{}
	var ids strings.Builder
	for _, c := range cs {
		subjects[c.Subject("P", "in")] = true
		ids.WriteString(c.User + c.Device + c.Agent)
	}
	for _, b := range []string{".", "*", ">", " ", "%", "@", ":", "ü"} {
		if !strings.Contains(ids.String(), b) {
			t.Errorf("no hostile id holds %q", b)
		}
	}
	if len(subjects) != len(cs) {
		t.Errorf("%d distinct subjects for %d conversations", len(subjects), len(cs))
	}
	if got, want := cs[hostileCount], (chat.Conversation{User: "load-run1-u16", Device: "d0", Agent: "a"}); got != want {
		t.Errorf("first plain conversation %v, want %v", got, want)
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name          string
		args          []string
		conversations int
		messages      int
		size          int
		hostile       bool
		withID        bool
		minElapsedS   float64
	}{{
		name:          "hostile ids, message ids, small window",
		args:          []string{"--conversations", "17", "--messages", "51", "--hostile", "--size", "200", "--window", "8"},
		conversations: 17, messages: 51, size: 200, hostile: true, withID: true,
	}, {
		name:          "no message id, paced",
		args:          []string{"--conversations", "3", "--messages", "21", "--rate", "100", "--no-message-id", "--size", "1"},
		conversations: 3, messages: 21, size: 1,
		minElapsedS: 0.2, // 20 intervals of 10ms
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			got := runProducer(t.Context(), e.url, "", append([]string{"load", "--json"}, tt.args...)...)
			if got.code != 0 {
				t.Fatalf("exit %d, stderr:\n%s", got.code, got.stderr)
			}
			var s summary
			if err := json.Unmarshal([]byte(got.stdout), &s); err != nil {
				t.Fatalf("stdout is not the JSON summary: %v\n%s", err, got.stdout)
			}
			if s.Published != tt.messages || s.Failures != 0 || s.Interrupted || s.PubAck.Count != tt.messages || s.NATSServer == "" {
				t.Errorf("summary %+v: want %d published, no failure, a server version", s, tt.messages)
			}
			if s.ElapsedS < tt.minElapsedS {
				t.Errorf("took %.3fs, want at least %.3fs at the given rate", s.ElapsedS, tt.minElapsedS)
			}
			if !strings.Contains(got.stderr, "run "+s.Run+": published") {
				t.Errorf("stderr lacks the human summary:\n%s", got.stderr)
			}

			convs := conversations(s.Run, tt.conversations, tt.hostile, "")
			msgs := storedIn(t, e)
			if len(msgs) != tt.messages {
				t.Fatalf("CHAT_IN holds %d messages, want %d", len(msgs), tt.messages)
			}
			seen := make([]bool, tt.messages)
			for _, m := range msgs {
				var body message
				if err := json.Unmarshal([]byte(m.Body), &body); err != nil {
					t.Fatal(err)
				}
				marker, _, _ := strings.Cut(body.Content, " ")
				n, err := strconv.Atoi(strings.TrimPrefix(marker, s.Run+"/"))
				if err != nil || n < 0 || n >= tt.messages || seen[n] {
					t.Fatalf("content %q: want a new marker %s/<n> of this run", body.Content, s.Run)
				}
				seen[n] = true
				c := convs[n%tt.conversations]
				want := stored{Subject: e.cfg.In(c), Body: m.Body}
				wantBody := message{Role: [...]string{"user", "assistant"}[(n/tt.conversations)%2], Content: body.Content, Timestamp: body.Timestamp}
				if tt.withID {
					want.MsgID = s.Run + "-" + strconv.Itoa(n)
					wantBody.MessageID = want.MsgID
				}
				if diff := cmp.Diff(want, m); diff != "" {
					t.Errorf("message %d (-want +got):\n%s", n, diff)
				}
				if diff := cmp.Diff(wantBody, body); diff != "" {
					t.Errorf("message %d body (-want +got):\n%s", n, diff)
				}
				if wantLen := max(tt.size, len(marker)+1); len(body.Content) != wantLen {
					t.Errorf("message %d: content of %d bytes, want %d", n, len(body.Content), wantLen)
				}
			}
			if slices.Contains(seen, false) {
				t.Errorf("some markers missing: %v", seen)
			}
		})
	}
}

func TestLoadVerifyWithoutWorker(t *testing.T) {
	e := newEnv(t)
	got := runProducer(t.Context(), e.url, "", "load", "--json", "--conversations", "2", "--messages", "5", "--verify", "--verify-timeout", "1s")
	if got.code != 1 {
		t.Errorf("exit %d, want 1 for lost messages; stderr:\n%s", got.code, got.stderr)
	}
	var s summary
	if err := json.Unmarshal([]byte(got.stdout), &s); err != nil {
		t.Fatalf("stdout is not the JSON summary: %v\n%s", err, got.stdout)
	}
	r := s.Report
	if r == nil || r.Published != 5 || r.Lost != 5 || r.OK() || r.Flush == nil || r.Flush.Drained || r.Flush.Requested != 2 {
		t.Errorf("report %+v: want 5 published, 5 lost, not drained, 2 flushes asked", r)
	}
	if !strings.Contains(got.stderr, "FAILED") {
		t.Errorf("stderr lacks the verdict:\n%s", got.stderr)
	}
}
