package e2e

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/verify"
)

const prefix = "opencontext.chat"

// badInput is one message the workers must dead-letter.
type badInput struct {
	name    string
	reason  string
	subject string
	body    []byte
	seq     uint64 // CHAT_IN sequence from the PubAck
}

// badInputs returns a few messages of each dead-letter reason of the
// contract. Each carries tag in its body so that the test can tell whether
// it ever reached a batch. maxPayload is the server's payload limit.
func badInputs(tag string, maxPayload int) []*badInput {
	conv := func(u, d, a string) string { return prefix + ".in." + u + "." + d + "." + a }
	user := "bad-" + tag
	subj := conv(user, "d", "a")
	msg := func(i int, extra string) []byte {
		return fmt.Appendf(nil, `{"role":"user","content":"%s-%d"%s}`, tag, i, extra)
	}
	padded := func(i, n int) []byte { // a valid message of about n bytes
		return fmt.Appendf(nil, `{"role":"user","content":"%s-%d %s"}`, tag, i, strings.Repeat("x", n))
	}
	return []*badInput{
		{name: "70 kB body", reason: "too_large", subject: subj, body: padded(0, 70_000)},
		// Too large to forward whole with the dead-letter headers: cut to
		// fit, with Chatbuf-Truncated: true.
		{name: "body near max_payload", reason: "too_large", subject: subj, body: padded(1, maxPayload-150)},
		{name: "129-byte user id", reason: "bad_id", subject: conv(user+"-"+strings.Repeat("u", 129), "d", "a"), body: msg(2, "")},
		{name: "lowercase escape in device id", reason: "bad_id", subject: conv(user, "d%2ex", "a"), body: msg(3, "")},
		{name: "control character in agent id", reason: "bad_id", subject: conv(user, "d", "a\x7f"), body: msg(4, "")},
		{name: "truncated JSON", reason: "bad_json", subject: subj, body: fmt.Appendf(nil, `{"role":"user","content":"%s-5`, tag)},
		{name: "invalid UTF-8", reason: "bad_json", subject: subj, body: fmt.Appendf(nil, "{\"role\":\"user\",\"content\":\"%s-6 \xff\xfe\"}", tag)},
		{name: "bad string escape", reason: "bad_json", subject: subj, body: fmt.Appendf(nil, `{"role":"user","content":"%s-14 \q"}`, tag)},
		{name: "JSON array", reason: "invalid", subject: subj, body: fmt.Appendf(nil, `["%s-7"]`, tag)},
		{name: "role missing", reason: "invalid", subject: subj, body: fmt.Appendf(nil, `{"content":"%s-8"}`, tag)},
		{name: "unknown role", reason: "invalid", subject: subj, body: fmt.Appendf(nil, `{"role":"robot","content":"%s-9"}`, tag)},
		{name: "content a number", reason: "invalid", subject: subj, body: fmt.Appendf(nil, `{"role":"user","content":42,"metadata":{"m":"%s-10"}}`, tag)},
		{name: "129-byte message_id", reason: "invalid", subject: subj, body: msg(11, `,"message_id":"`+strings.Repeat("m", 129)+`"`)},
		{name: "user_id differs", reason: "id_mismatch", subject: subj, body: msg(12, `,"user_id":"someone-else"`)},
		{name: "agent_id differs", reason: "id_mismatch", subject: subj, body: msg(13, `,"user_id":"`+user+`","agent_id":"b"`)},
	}
}

// headerSafe is s as a NATS header value can carry it: a header value
// cannot hold control characters, so the workers replace them with spaces,
// and the header parser trims the value's ends.
func headerSafe(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s))
}

// publishRaw publishes body to subject with a unique Nats-Msg-Id and
// returns its CHAT_IN sequence.
func publishRaw(ctx context.Context, js jetstream.JetStream, subject string, body []byte, id string) (uint64, error) {
	m := nats.NewMsg(subject)
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, id)
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// deadKey is how collectDead names the dead letter of the CHAT_IN message
// with sequence seq: the start of its Nats-Msg-Id ("dead-<seq>-<stored ns>").
func deadKey(seq uint64) string { return fmt.Sprintf("dead-%d-", seq) }

// collectDead reads CHAT_DEAD until a dead letter for each of the wanted
// keys (deadKey) arrived, or fails the test after timeout. Dead letters are
// at-least-once: it returns every copy.
func collectDead(t *testing.T, js jetstream.JetStream, want map[string]bool, timeout time.Duration) map[string][]jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "CHAT_DEAD", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("read CHAT_DEAD: %v", err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatalf("read CHAT_DEAD: %v", err)
	}
	defer it.Stop()
	got := map[string][]jetstream.Msg{}
	missing := len(want)
	for missing > 0 {
		msg, err := it.Next(jetstream.NextMaxWait(time.Second))
		if ctx.Err() != nil {
			var ids []string
			for id := range want {
				if len(got[id]) == 0 {
					ids = append(ids, id)
				}
			}
			t.Fatalf("after %v, no dead letter for %d message(s): %v", timeout, missing, ids)
		}
		if err != nil {
			continue // nothing new yet
		}
		id := msg.Headers().Get(jetstream.MsgIDHeader)
		if i := strings.LastIndexByte(id, '-'); i >= 0 && !want[id] {
			id = id[:i+1] // dead-<seq>-<stored ns>: keyed by deadKey
		}
		if want[id] {
			if len(got[id]) == 0 {
				missing--
			}
			got[id] = append(got[id], msg)
		}
	}
	return got
}

// requireNotInBatches fails the test if any batch of CHAT_FLUSHED holds
// text.
func (s *system) requireNotInBatches(t *testing.T, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, err := jetstream.New(s.nats.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range readStream(ctx, t, js, "CHAT_FLUSHED") {
		if bytes.Contains(msg.Data(), []byte(text)) {
			t.Errorf("a batch on %s holds %q, which must have been dead-lettered:\n%.600s", msg.Subject(), text, msg.Data())
		}
	}
}

// TestPoisonAndPressure: bad input and odd load shapes among good traffic.
func TestPoisonAndPressure(t *testing.T) {
	// (a) The contract's bad inputs, a few of each reason, published while
	// a good load runs: each lands in CHAT_DEAD under its reason with its
	// payload and headers, none in a batch, no worker crashes, and the good
	// traffic is exactly once.
	t.Run("bad-inputs", func(t *testing.T) {
		s := newSystem(t, natstest.Binary)
		ws := []*workerProc{s.startWorker(), s.startWorker()}
		nc := s.nats.Conn(t)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		tag := strings.ToLower(verify.NewRunID())
		bad := badInputs(tag, int(nc.MaxPayload()))
		msgs, rate := pick(3000, 20000), pick(600, 1000)
		ctx, cancel := context.WithTimeout(context.Background(), pick(4*time.Minute, 10*time.Minute))
		defer cancel()

		ld := s.startLoad(ctx, "--conversations", "100", "--hostile", "--messages", itoa(msgs), "--rate", itoa(rate))
		// Spread over the first two thirds of the load.
		every := time.Duration(float64(msgs)/float64(rate)*float64(time.Second)) * 2 / 3 / time.Duration(len(bad))
		want := map[string]bool{}
		for i, b := range bad {
			time.Sleep(every) // spread among the good traffic
			if b.seq, err = publishRaw(ctx, js, b.subject, b.body, fmt.Sprintf("bad-%s-%d", tag, i)); err != nil {
				t.Fatalf("publish %s: %v", b.name, err)
			}
			want[deadKey(b.seq)] = true
		}
		if ld.published() {
			t.Errorf("the good load finished before the bad input was published: not mixed")
		}
		res := ld.wait(t)
		requireAlive(t, ws)
		s.checkExactlyOnce(t, res.Report, msgs)

		dead := collectDead(t, js, want, time.Minute)
		for _, b := range bad {
			copies := dead[deadKey(b.seq)]
			d := copies[0]
			h := d.Headers()
			truncated := h.Get("Chatbuf-Truncated") == "true"
			switch {
			case d.Subject() != prefix+".dead."+b.reason || h.Get("Chatbuf-Reason") != b.reason:
				t.Errorf("%s: dead letter on %s with reason %q, want %s", b.name, d.Subject(), h.Get("Chatbuf-Reason"), b.reason)
			case h.Get("Chatbuf-Subject") != headerSafe(b.subject):
				t.Errorf("%s: Chatbuf-Subject %q, want %q", b.name, h.Get("Chatbuf-Subject"), b.subject)
			case h.Get("Chatbuf-Error") == "" || len(h.Get("Chatbuf-Error")) > 256:
				t.Errorf("%s: Chatbuf-Error %q: want a short text of at most 256 bytes", b.name, h.Get("Chatbuf-Error"))
			case !truncated && !bytes.Equal(d.Data(), b.body):
				t.Errorf("%s: dead letter payload differs from the original (%d bytes, want %d)", b.name, len(d.Data()), len(b.body))
			case truncated && (len(d.Data()) >= len(b.body) || !bytes.HasPrefix(b.body, d.Data())):
				t.Errorf("%s: truncated payload of %d bytes is not a shorter prefix of the original %d bytes", b.name, len(d.Data()), len(b.body))
			case truncated != (len(b.body) > int(nc.MaxPayload())-1024):
				t.Errorf("%s: Chatbuf-Truncated %q for a body of %d bytes (max_payload %d)", b.name, h.Get("Chatbuf-Truncated"), len(b.body), nc.MaxPayload())
			}
			t.Logf("%-30s -> %-11s x%d  error %q truncated %t", b.name, h.Get("Chatbuf-Reason"), len(copies), h.Get("Chatbuf-Error"), truncated)
		}
		s.requireNotInBatches(t, tag+"-")
		logRow(t, fmt.Sprintf("bad input x%d among good traffic (all dead-lettered)", len(bad)), res.Report)
	})

	// (b) A key of the wrong type where one conversation's buffer belongs:
	// that conversation's messages go to CHAT_DEAD as store_rejected after
	// 5 deliveries (with a growing delay between them), while the other
	// conversations are exactly once.
	t.Run("wrong-type-key", func(t *testing.T) {
		s := newSystem(t, natstest.Binary)
		ws := []*workerProc{s.startWorker(), s.startWorker()}
		js, err := jetstream.New(s.nats.Conn(t))
		if err != nil {
			t.Fatal(err)
		}
		tag := strings.ToLower(verify.NewRunID())
		user := "poison-" + tag
		ctx, cancel := context.WithTimeout(context.Background(), pick(4*time.Minute, 10*time.Minute))
		defer cancel()
		key := "opencontext:chat:buffer:{" + user + ":d:a}"
		if err := s.redis.Client(t).Set(ctx, key, "not a list", 0).Err(); err != nil {
			t.Fatal(err)
		}

		msgs, rate := pick(3000, 10000), pick(600, 1000)
		ld := s.startLoad(ctx, "--conversations", "100", "--hostile", "--messages", itoa(msgs), "--rate", itoa(rate))
		const poisoned = 3
		want := map[string]bool{}
		var seqs []uint64
		start := time.Now()
		for i := range poisoned {
			time.Sleep(300 * time.Millisecond)
			body := fmt.Appendf(nil, `{"role":"user","content":"%s-%d","message_id":"%s-%d"}`, tag, i, tag, i)
			seq, err := publishRaw(ctx, js, prefix+".in."+user+".d.a", body, fmt.Sprintf("%s-%d", tag, i))
			if err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, seq)
			want[deadKey(seq)] = true
		}
		res := ld.wait(t)
		requireAlive(t, ws)
		s.checkExactlyOnce(t, res.Report, msgs)

		dead := collectDead(t, js, want, 2*time.Minute)
		t.Logf("the poisoned conversation's %d messages were dead-lettered %v after their publish; meanwhile the other conversations' publish->batch latency: %s",
			poisoned, time.Since(start).Round(time.Second), res.Report.Latency)
		for _, seq := range seqs {
			d := dead[deadKey(seq)][0]
			if r := d.Headers().Get("Chatbuf-Reason"); r != "store_rejected" || d.Subject() != prefix+".dead.store_rejected" {
				t.Errorf("seq %d: dead letter on %s with reason %q, want store_rejected", seq, d.Subject(), r)
			}
			// Evidence of the deliveries: the workers log each refusal.
			deliveries := regexp.MustCompile(fmt.Sprintf(`"msg":"worker: store refused a message; it will be redelivered".*"seq":%d,"delivery":(\d+)`, seq))
			var seen []string
			for _, w := range ws {
				for _, m := range deliveries.FindAllStringSubmatch(w.logText(), -1) {
					seen = append(seen, m[1])
				}
			}
			t.Logf("seq %d: refused on deliveries %v, then dead-lettered: %q", seq, seen, d.Headers().Get("Chatbuf-Error"))
		}
		s.requireNotInBatches(t, `"`+tag+"-")
		typ, _ := s.redis.Client(t).Type(ctx, key).Result()
		t.Logf("key %s is still a %s", key, typ)
		logRow(t, "wrong-type buffer key, 3 poisoned msgs dead-lettered (others)", res.Report)
	})

	// (c) A burst to one conversation: exactly once, and every batch full
	// but possibly the last. The age trigger is pushed out of the way
	// (CHAT_FLUSH_MAX_AGE=1m): a message that waited longer than the age
	// limit may rightly go out in a short age batch, so only with it out of
	// reach is "all full but the last" a property of the size path.
	t.Run("one-conversation-burst", func(t *testing.T) {
		n := pick(3000, 10000)
		s := newSystem(t, natstest.Binary, "CHAT_FLUSH_MAX_AGE=1m")
		ws := []*workerProc{s.startWorker(), s.startWorker()}
		ctx, cancel := context.WithTimeout(context.Background(), pick(4*time.Minute, 10*time.Minute))
		defer cancel()
		res := s.startLoad(ctx, "--conversations", "1", "--messages", itoa(n)).wait(t)
		requireAlive(t, ws)
		s.checkExactlyOnce(t, res.Report, n)
		// No batch holds more than CHAT_BUFFER_SIZE (verify: malformed), so
		// with n messages exactly once, ceil(n/10) batches means all are
		// full but possibly one.
		if want := (n + 9) / 10; res.Report.Batches != want || res.Report.BatchesByReason["age"] != 0 {
			t.Errorf("%d messages in %d batches %v, want %d batches, all full but possibly the last",
				n, res.Report.Batches, res.Report.BatchesByReason, want)
		}
		t.Logf("%d batches %v; latency %s", res.Report.Batches, res.Report.BatchesByReason, res.Report.Latency)
		logRow(t, "burst to one conversation", res.Report)
	})

	// (d) As many conversations as messages: every buffer holds one
	// message and leaves by the age sweep or the final manual flush.
	t.Run("many-conversations", func(t *testing.T) {
		n := pick(10000, 100000)
		s := newSystem(t, natstest.Binary)
		ws := []*workerProc{s.startWorker(), s.startWorker(), s.startWorker()}
		ctx, cancel := context.WithTimeout(context.Background(), pick(5*time.Minute, 30*time.Minute))
		defer cancel()
		res := s.startLoad(ctx, "--conversations", itoa(n), "--messages", itoa(n), "--verify-timeout", pick("4m", "25m")).wait(t)
		requireAlive(t, ws)
		s.checkExactlyOnce(t, res.Report, n)
		t.Logf("%d batches %v; latency %s", res.Report.Batches, res.Report.BatchesByReason, res.Report.Latency)
		logRow(t, itoa(n)+" conversations, 1 message each", res.Report)
	})
}
