package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/internal/redistest"
)

// workerBin is the worker binary, built once.
var workerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chatbufctl-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workerBin = filepath.Join(dir, "worker")
	cmd := exec.Command("go", "build", "-o", workerBin, "../worker")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build the worker: %v\n", err)
		os.Exit(1)
	}
	redis.SetLogger(quietLogger{})
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sys is a Redis (or Redis Cluster), a NATS and a worker process.
type sys struct {
	t    *testing.T
	rdb  redis.UniversalClient
	nats *natstest.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	env  map[string]string
}

// newSys runs a worker on a single Redis.
func newSys(t *testing.T) *sys {
	rs := redistest.Start(t)
	return startSys(t, rs.Client(t), map[string]string{"REDIS_HOST": "127.0.0.1", "REDIS_PORT": strconv.Itoa(rs.Port)})
}

// startSys starts NATS and a worker on the Redis that redisEnv names.
func startSys(t *testing.T, rdb redis.UniversalClient, redisEnv map[string]string) *sys {
	s := &sys{t: t, rdb: rdb, nats: natstest.Embedded(t)}
	s.nc = s.nats.Conn(t)
	js, err := jetstream.New(s.nc)
	if err != nil {
		t.Fatal(err)
	}
	s.js = js
	s.env = map[string]string{"NATS_URL": s.nats.URL, "CHAT_FLUSH_MAX_AGE": "1h"}
	for k, v := range redisEnv {
		s.env[k] = v
	}
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(workerBin)
	cmd.Env = append(os.Environ(), "METRICS_ADDR="+metrics, "LOG_LEVEL=warn", "CHAT_BUFFER_SIZE=10", "CHAT_ACK_WAIT=5s")
	for k, v := range s.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var log lockedBuffer
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("worker log:\n%s", log.String())
		}
	})
	waitFor(t, "the worker to be ready", 60*time.Second, func() bool {
		resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + metrics + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return s
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor polls cond until it holds, failing after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ctl runs chatbufctl with the system's environment plus extra variables.
func (s *sys) ctl(extra map[string]string, args ...string) (stdout, stderr string, code int) {
	env := map[string]string{}
	for k, v := range s.env {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	var o, e bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code = run(ctx, args, env, strings.NewReader(""), &o, &e)
	return o.String(), e.String(), code
}

// ok runs chatbufctl and fails the test unless it exits 0.
func (s *sys) ok(args ...string) string {
	s.t.Helper()
	out, errOut, code := s.ctl(nil, args...)
	if code != 0 {
		s.t.Fatalf("chatbufctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// jsonOK runs chatbufctl --json and decodes its output into v.
func (s *sys) jsonOK(v any, args ...string) {
	s.t.Helper()
	out := s.ok(append([]string{"--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		s.t.Fatalf("chatbufctl --json %s: output not JSON (%v):\n%s", strings.Join(args, " "), err, out)
	}
}

func (s *sys) publish(c chat.Conversation, id, content string) {
	s.t.Helper()
	body := fmt.Sprintf(`{"role":"user","content":%q,"message_id":%q}`, content, id)
	s.publishRaw(c.Subject("opencontext.chat", "in"), []byte(body), id)
}

func (s *sys) publishRaw(subject string, body []byte, msgID string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := s.js.Publish(ctx, subject, body, opts...); err != nil {
		s.t.Fatalf("publish %s: %v", subject, err)
	}
}

// batch is what the test reads of a published batch.
type batch struct {
	BatchID  string `json:"batch_id"`
	UserID   string `json:"user_id"`
	Reason   string `json:"reason"`
	Messages []struct {
		MessageID string `json:"message_id"`
	} `json:"messages"`
}

// batches reads every batch in CHAT_FLUSHED.
func (s *sys) batches() []batch {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, "CHAT_FLUSHED")
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []batch
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		var b batch
		if err := json.Unmarshal(m.Data, &b); err != nil {
			s.t.Fatalf("CHAT_FLUSHED seq %d: %v", seq, err)
		}
		out = append(out, b)
	}
	return out
}

// messageCounts counts each message id over every batch.
func (s *sys) messageCounts() map[string]int {
	n := map[string]int{}
	for _, b := range s.batches() {
		for _, m := range b.Messages {
			n[m.MessageID]++
		}
	}
	return n
}

var (
	alice = chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	bob   = chat.Conversation{User: "bob", Device: "tab", Agent: "_"}
	carol = chat.Conversation{User: "carol", Device: "web", Agent: "bot"}
)

// Every inspection command reads what the worker buffered; flush goes
// through the workers' flush subject.
func TestInspectAndFlush(t *testing.T) {
	s := newSys(t)
	for i := 1; i <= 3; i++ {
		s.publish(alice, "a"+strconv.Itoa(i), "hello "+strconv.Itoa(i))
	}
	s.publish(bob, "b1", "hi")
	s.publish(bob, "b2", "there")

	var st statsOut
	waitFor(t, "5 messages of 2 conversations in stats", 30*time.Second, func() bool {
		st = statsOut{}
		s.jsonOK(&st, "stats")
		return st.Conversations == 2 && st.MessagesBuffered == 5
	})
	if st.Partial || st.Scanned != 2 || st.Due != 0 || st.InflightBatches != 0 || st.OldestBufferAge < 0 ||
		st.MaxAge != 3600 || st.RedisDueIndexes != 1 {
		t.Errorf("stats = %+v", st)
	}
	if st.ChatIn.Stream != "CHAT_IN" || st.ChatIn.Consumer != "chatbuf-worker" || st.ChatIn.Error != "" || st.NATSConnectionError != "" {
		t.Errorf("stats chat_in = %+v, nats error %q", st.ChatIn, st.NATSConnectionError)
	}
	if len(st.Workers) != 1 || st.Workers[0].Service != "completion" || st.DeadLettersTotal != 0 {
		t.Errorf("stats workers = %+v, dead letters %d", st.Workers, st.DeadLettersTotal)
	}
	var partial statsOut
	s.jsonOK(&partial, "stats", "--limit", "1")
	if !partial.Partial || partial.Scanned != 1 || partial.Conversations != 2 {
		t.Errorf("stats --limit 1: partial %v, scanned %d of %d", partial.Partial, partial.Scanned, partial.Conversations)
	}
	if out := s.ok("stats", "--limit", "1"); !strings.Contains(out, "approximate/partial") || !strings.Contains(out, "workers seen") {
		t.Errorf("stats --limit 1 (text) does not say it is partial:\n%s", out)
	}

	// ls: both conversations, oldest first; pages of one with a cursor.
	var ls lsOut
	s.jsonOK(&ls, "ls")
	if len(ls.Conversations) != 2 || ls.NextCursor != "" {
		t.Fatalf("ls = %+v", ls)
	}
	if c := ls.Conversations[0]; c.User != "alice" || c.Buffered != 3 || c.State != stateBuffering || c.Oldest == nil {
		t.Errorf("ls[0] = %+v", c)
	}
	if c := ls.Conversations[1]; c.User != "bob" || c.Agent != "_" || c.Buffered != 2 {
		t.Errorf("ls[1] = %+v", c)
	}
	var p1, p2 lsOut
	s.jsonOK(&p1, "ls", "--limit", "1")
	if len(p1.Conversations) != 1 || p1.NextCursor == "" {
		t.Fatalf("ls --limit 1 = %+v", p1)
	}
	s.jsonOK(&p2, "ls", "--limit", "1", "--cursor", p1.NextCursor)
	if len(p2.Conversations) != 1 || p2.Conversations[0].Tag == p1.Conversations[0].Tag || p2.NextCursor != "" {
		t.Errorf("second page = %+v after %+v", p2, p1)
	}
	var due lsOut
	s.jsonOK(&due, "ls", "--state", "due")
	if len(due.Conversations) != 0 {
		t.Errorf("ls --state due with CHAT_FLUSH_MAX_AGE=1h = %+v", due)
	}
	var bySize lsOut
	s.jsonOK(&bySize, "ls", "--sort", "size")
	if len(bySize.Conversations) != 2 || bySize.Conversations[0].Buffered < bySize.Conversations[1].Buffered {
		t.Errorf("ls --sort size = %+v", bySize)
	}
	if out := s.ok("ls"); !strings.Contains(out, "USER") || !strings.Contains(out, "alice") || !strings.Contains(out, "buffering") {
		t.Errorf("ls (text):\n%s", out)
	}

	// show: the buffered messages, no batch yet.
	var sh showOut
	s.jsonOK(&sh, "show", "alice", "phone", "bot")
	if sh.Buffered != 3 || len(sh.Messages) != 3 || sh.Inflight != nil || sh.LastBatch != nil || !sh.InDueIndex {
		t.Fatalf("show = %+v", sh)
	}
	for i, m := range sh.Messages {
		var body struct {
			MessageID string `json:"message_id"`
		}
		if err := json.Unmarshal(m.Message, &body); err != nil || body.MessageID != "a"+strconv.Itoa(i+1) || m.Role != "user" || m.Seq == 0 {
			t.Errorf("show message %d = %+v (%v)", i, m, err)
		}
	}
	var first showOut
	s.jsonOK(&first, "show", "alice", "phone", "bot", "--first", "1")
	if first.Buffered != 3 || len(first.Messages) != 1 {
		t.Errorf("show --first 1: %d of %d messages", len(first.Messages), first.Buffered)
	}
	if out := s.ok("show", "alice", "phone", "bot"); !strings.Contains(out, "buffered") || !strings.Contains(out, "in flight") {
		t.Errorf("show (text):\n%s", out)
	}
	if _, errOut, code := s.ctl(nil, "show", "alice", "phone"); code != 2 || !strings.Contains(errOut, "<user> <device> <agent>") {
		t.Errorf("show with two ids: exit %d, %s", code, errOut)
	}

	// flush one conversation through a worker.
	var fl flushOut
	s.jsonOK(&fl, "flush", "alice", "phone", "bot")
	if !fl.OK || fl.Batches != 1 || len(fl.IDs) != 1 || !strings.HasPrefix(fl.IDs[0], "alice:phone:bot#") {
		t.Fatalf("flush = %+v", fl)
	}
	s.jsonOK(&sh, "show", "alice", "phone", "bot")
	if sh.Buffered != 0 || sh.LastBatch == nil || sh.LastBatch.BatchID != fl.IDs[0] || sh.LastBatch.CreateTime == "" || sh.LastBatch.Reason != "manual" {
		t.Errorf("show after flush: buffered %d, last batch %+v, want %s", sh.Buffered, sh.LastBatch, fl.IDs[0])
	}
	if out := s.ok("show", "alice", "phone", "bot"); !strings.Contains(out, fl.IDs[0]) {
		t.Errorf("show (text) does not name the last batch %s:\n%s", fl.IDs[0], out)
	}

	// flush --due: with CHAT_FLUSH_MAX_AGE=1ms bob is due.
	var all flushAllOut
	out, errOut, code := s.ctl(map[string]string{"CHAT_FLUSH_MAX_AGE": "1ms"}, "--json", "flush", "--due")
	if code != 0 {
		t.Fatalf("flush --due: exit %d: %s", code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatal(err)
	}
	if len(all.Flushes) != 1 || all.Flushes[0].User != "bob" || all.Batches != 1 || all.Failed != 0 {
		t.Errorf("flush --due = %+v", all)
	}
	counts := s.messageCounts()
	for _, id := range []string{"a1", "a2", "a3", "b1", "b2"} {
		if counts[id] != 1 {
			t.Errorf("message %s in %d batches, want 1 (%v)", id, counts[id], counts)
		}
	}
	s.jsonOK(&st, "stats")
	if st.Conversations != 0 || st.MessagesBuffered != 0 {
		t.Errorf("stats after the flushes = %+v", st)
	}
}

// Messages dead-lettered as store_rejected (a key of the wrong type in
// their buffer's place) come back into batches exactly once after the key
// is removed and the dead letters redriven; a second redrive publishes
// nothing again.
func TestDeadLettersRedrive(t *testing.T) {
	s := newSys(t)
	ctx := context.Background()
	keys := chat.NewKeys("")
	if err := s.rdb.Set(ctx, keys.Buffer(carol), "not a list", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.publish(carol, "c1", "first")
	s.publish(carol, "c2", "second")
	s.publishRaw("opencontext.chat.in.dave.x.y", []byte("{not json"), "")

	var dl deadLsOut
	waitFor(t, "2 store_rejected dead letters", 120*time.Second, func() bool {
		dl = deadLsOut{}
		s.jsonOK(&dl, "dead", "ls", "--reason", "store_rejected")
		return len(dl.DeadLetters) == 2
	})
	var st statsOut
	s.jsonOK(&st, "stats")
	if st.DeadLetters["store_rejected"] != 2 || st.DeadLetters["bad_json"] != 1 || st.DeadLettersTotal != 3 {
		t.Errorf("stats dead letters = %v (total %d)", st.DeadLetters, st.DeadLettersTotal)
	}
	var allDead, page deadLsOut
	s.jsonOK(&allDead, "dead", "ls")
	s.jsonOK(&page, "dead", "ls", "--limit", "1")
	if len(allDead.DeadLetters) != 3 || len(page.DeadLetters) != 1 || page.NextCursor == "" {
		t.Errorf("dead ls: %d letters; --limit 1: %+v", len(allDead.DeadLetters), page)
	}
	var rest deadLsOut
	s.jsonOK(&rest, "dead", "ls", "--cursor", page.NextCursor)
	if len(rest.DeadLetters) != 2 || rest.DeadLetters[0].Seq <= page.DeadLetters[0].Seq {
		t.Errorf("dead ls --cursor %s = %+v", page.NextCursor, rest)
	}
	if out := s.ok("dead", "ls"); !strings.Contains(out, "store_rejected") || !strings.Contains(out, "bad_json") {
		t.Errorf("dead ls (text):\n%s", out)
	}
	var show deadShowOut
	s.jsonOK(&show, "dead", "show", strconv.FormatUint(dl.DeadLetters[0].Seq, 10))
	if show.Reason != "store_rejected" || show.Subject != carol.Subject("opencontext.chat", "in") || show.Truncated ||
		!strings.Contains(show.Payload, `"message_id":"c1"`) || show.Error == "" {
		t.Errorf("dead show = %+v", show)
	}
	if out := s.ok("dead", "show", strconv.FormatUint(dl.DeadLetters[0].Seq, 10)); !strings.Contains(out, "original subject") {
		t.Errorf("dead show (text):\n%s", out)
	}

	// The cause is fixed; redrive, keeping the dead letters the first time.
	if err := s.rdb.Del(ctx, keys.Buffer(carol)).Err(); err != nil {
		t.Fatal(err)
	}
	var rd redriveOut
	s.jsonOK(&rd, "dead", "redrive", "--reason", "store_rejected", "--keep")
	if rd.Redriven != 2 || rd.Duplicates != 0 || len(rd.Letters) != 2 || rd.Letters[0].Result != "kept" ||
		rd.Letters[0].MsgID != "redrive-"+strconv.FormatUint(dl.DeadLetters[0].Seq, 10) {
		t.Fatalf("redrive --keep = %+v", rd)
	}
	var sh showOut
	waitFor(t, "carol's 2 messages buffered", 30*time.Second, func() bool {
		sh = showOut{}
		s.jsonOK(&sh, "show", "carol", "web", "bot")
		return sh.Buffered == 2
	})
	// Again: CHAT_IN's duplicate window turns the same messages away; the
	// dead letters are deleted now.
	s.jsonOK(&rd, "dead", "redrive", "--reason", "store_rejected")
	if rd.Redriven != 0 || rd.Duplicates != 2 {
		t.Fatalf("second redrive = %+v, want 2 duplicates", rd)
	}
	s.jsonOK(&dl, "dead", "ls", "--reason", "store_rejected")
	if len(dl.DeadLetters) != 0 {
		t.Errorf("store_rejected dead letters left after redrive: %+v", dl)
	}
	s.jsonOK(&rd, "dead", "redrive", "--reason", "store_rejected")
	if len(rd.Letters) != 0 {
		t.Errorf("third redrive found letters: %+v", rd)
	}
	var fl flushOut
	s.jsonOK(&fl, "flush", "carol", "web", "bot")
	if !fl.OK || fl.Batches != 1 {
		t.Fatalf("flush carol = %+v", fl)
	}
	counts := s.messageCounts()
	if counts["c1"] != 1 || counts["c2"] != 1 {
		t.Errorf("after redrive: c1 in %d batches, c2 in %d; want 1 each", counts["c1"], counts["c2"])
	}

	// A truncated dead letter is not the original: refused, kept.
	trunc := &nats.Msg{Subject: "opencontext.chat.dead.too_large", Data: []byte(`{"role":"user","con`), Header: nats.Header{}}
	trunc.Header.Set("Chatbuf-Reason", "too_large")
	trunc.Header.Set("Chatbuf-Subject", "opencontext.chat.in.eve.x.y")
	trunc.Header.Set("Chatbuf-Truncated", "true")
	if _, err := s.js.PublishMsg(ctx, trunc); err != nil {
		t.Fatal(err)
	}
	out, _, code := s.ctl(nil, "--json", "dead", "redrive", "--reason", "too_large")
	if code != 0 {
		t.Fatalf("redrive of a truncated letter: exit %d", code)
	}
	if err := json.Unmarshal([]byte(out), &rd); err != nil || rd.Refused != 1 || rd.Redriven != 0 || !strings.Contains(rd.Letters[0].Why, "truncated") {
		t.Errorf("redrive of a truncated letter = %+v (%v)", rd, err)
	}
	s.jsonOK(&dl, "dead", "ls", "--reason", "too_large")
	if len(dl.DeadLetters) != 1 {
		t.Errorf("a refused letter was removed: %+v", dl)
	}

	// A batch_rejected letter goes back to its P.flushed subject with its
	// batch_id as Nats-Msg-Id.
	const zedID = "zed:x:y#7"
	bodyZ := []byte(`{"batch_id":"` + zedID + `","user_id":"zed","reason":"size","messages":[{"message_id":"z1"}]}`)
	rej := &nats.Msg{Subject: "opencontext.chat.dead.batch_rejected", Data: bodyZ, Header: nats.Header{}}
	rej.Header.Set("Chatbuf-Reason", "batch_rejected")
	rej.Header.Set("Chatbuf-Subject", "opencontext.chat.flushed.zed.x.y")
	rej.Header.Set("Nats-Msg-Id", "dead-"+zedID)
	if _, err := s.js.PublishMsg(ctx, rej); err != nil {
		t.Fatal(err)
	}
	s.jsonOK(&rd, "dead", "redrive", "--reason", "batch_rejected")
	if rd.Redriven != 1 || rd.Letters[0].MsgID != zedID || rd.Letters[0].Subject != "opencontext.chat.flushed.zed.x.y" {
		t.Fatalf("redrive batch_rejected = %+v", rd)
	}
	flushed, err := s.js.Stream(ctx, "CHAT_FLUSHED")
	if err != nil {
		t.Fatal(err)
	}
	m, err := flushed.GetLastMsgForSubject(ctx, "opencontext.chat.flushed.zed.x.y")
	if err != nil {
		t.Fatalf("the redriven batch is not in CHAT_FLUSHED: %v", err)
	}
	if m.Header.Get("Nats-Msg-Id") != zedID || !bytes.Equal(m.Data, bodyZ) || m.Header.Get("Chatbuf-Reason") != "" {
		t.Errorf("redriven batch: headers %v, body %s", m.Header, m.Data)
	}

	// purge asks for confirmation, which a pipe cannot give.
	_, errOut, code := s.ctl(nil, "dead", "purge", "--reason", "bad_json")
	if code != 1 || !strings.Contains(errOut, "--yes") {
		t.Errorf("purge without --yes off a terminal: exit %d, %s", code, errOut)
	}
	var pg purgeOut
	s.jsonOK(&pg, "dead", "purge", "--reason", "bad_json", "--yes")
	if pg.Purged != 1 {
		t.Errorf("purge = %+v", pg)
	}
	st = statsOut{}
	s.jsonOK(&st, "stats")
	reasons := make([]string, 0)
	for r := range st.DeadLetters {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	if strings.Join(reasons, ",") != "too_large" || st.DeadLettersTotal != 1 {
		t.Errorf("dead letters after redrive and purge = %v", st.DeadLetters)
	}
}

// On Redis Cluster the due index is one key per slot in use: stats, ls
// (paged across slots), show and flush read them through chat.Keys.
func TestInspectRedisCluster(t *testing.T) {
	rc := redistest.StartCluster(t, 3, 0)
	s := startSys(t, rc.Client(t), map[string]string{"REDIS_ADDRS": strings.Join(rc.Masters(), ",")})
	convs := []chat.Conversation{alice, bob, carol,
		{User: "dan", Device: "d", Agent: "a"}, {User: "erin", Device: "e", Agent: "a"}}
	for i, c := range convs {
		for j := 0; j <= i; j++ {
			s.publish(c, fmt.Sprintf("m%d-%d", i, j), "hi")
		}
	}
	var st statsOut
	waitFor(t, "15 messages of 5 conversations in stats", 30*time.Second, func() bool {
		st = statsOut{}
		s.jsonOK(&st, "stats")
		return st.Conversations == 5 && st.MessagesBuffered == 15
	})
	if st.RedisDueIndexes < 2 || st.Partial {
		t.Errorf("stats on a cluster = %+v; want the conversations spread over several slots", st)
	}
	seen := map[string]bool{}
	cursor := ""
	for page := 0; page < 10; page++ {
		var ls lsOut
		args := []string{"ls", "--limit", "2"}
		if cursor != "" {
			args = append(args, "--cursor", cursor)
		}
		s.jsonOK(&ls, args...)
		for _, c := range ls.Conversations {
			if seen[c.Tag] {
				t.Errorf("page %d repeats %s", page, c.Tag)
			}
			seen[c.Tag] = true
		}
		if cursor = ls.NextCursor; cursor == "" {
			break
		}
	}
	if len(seen) != 5 {
		t.Errorf("ls pages listed %d conversations, want 5: %v", len(seen), seen)
	}
	var sh showOut
	s.jsonOK(&sh, "show", "erin", "e", "a")
	if sh.Buffered != 5 || !sh.InDueIndex {
		t.Errorf("show on a cluster = %+v", sh)
	}
	var fl flushOut
	s.jsonOK(&fl, "flush", "erin", "e", "a")
	if !fl.OK || fl.Batches != 1 {
		t.Errorf("flush on a cluster = %+v", fl)
	}
	var bySize lsOut
	s.jsonOK(&bySize, "ls", "--sort", "size")
	if len(bySize.Conversations) != 4 || bySize.Conversations[0].User != "dan" {
		t.Errorf("ls --sort size after erin's flush = %+v", bySize)
	}
}

// A batch claimed and not published (its worker died between claim and
// publish, say) shows as in flight, then as stuck once older than
// CHAT_FLUSH_MAX_AGE; show names it; a manual flush publishes it.
func TestInflightAndStuck(t *testing.T) {
	s := newSys(t)
	dan := chat.Conversation{User: "dan", Device: "d", Agent: "a"}
	s.publish(dan, "d1", "one")
	s.publish(dan, "d2", "two")
	var sh showOut
	waitFor(t, "dan's 2 messages buffered", 30*time.Second, func() bool {
		sh = showOut{}
		s.jsonOK(&sh, "show", "dan", "d", "a")
		return sh.Buffered == 2
	})
	b, err := buffer.NewRedis(s.rdb, buffer.Config{}).Claim(context.Background(), dan, 1, buffer.ClaimOptions{Max: 10, Min: 1, Reason: chat.TriggerSize})
	if err != nil || len(b.Records) != 2 {
		t.Fatalf("claim: %d records, %v", len(b.Records), err)
	}
	s.jsonOK(&sh, "show", "dan", "d", "a")
	if sh.Buffered != 0 || sh.Inflight == nil || len(sh.Inflight.Messages) != 2 || sh.Inflight.BatchID != chat.BatchID(dan, b.Token) ||
		sh.Inflight.Reason != "size" || sh.Inflight.Created == nil {
		t.Fatalf("show of an in-flight batch = %+v (inflight %+v)", sh, sh.Inflight)
	}
	var ls lsOut
	s.jsonOK(&ls, "ls", "--state", "inflight")
	if len(ls.Conversations) != 1 || ls.Conversations[0].Inflight != 2 || ls.Conversations[0].State != stateInflight {
		t.Errorf("ls --state inflight = %+v", ls)
	}
	var st statsOut
	s.jsonOK(&st, "stats")
	if st.InflightBatches != 1 || st.MessagesInflight != 2 || st.MessagesBuffered != 0 {
		t.Errorf("stats with a batch in flight = %+v", st)
	}
	out, errOut, code := s.ctl(map[string]string{"CHAT_FLUSH_MAX_AGE": "1ms"}, "--json", "ls", "--state", "stuck")
	if code != 0 {
		t.Fatalf("ls --state stuck: exit %d: %s", code, errOut)
	}
	ls = lsOut{}
	if err := json.Unmarshal([]byte(out), &ls); err != nil || len(ls.Conversations) != 1 || ls.Conversations[0].State != stateStuck {
		t.Errorf("ls --state stuck with CHAT_FLUSH_MAX_AGE=1ms = %+v (%v)", ls, err)
	}
	var fl flushOut
	s.jsonOK(&fl, "flush", "dan", "d", "a")
	if !fl.OK || len(fl.IDs) != 1 || fl.IDs[0] != chat.BatchID(dan, b.Token) {
		t.Errorf("flush of the in-flight batch = %+v, want %s", fl, chat.BatchID(dan, b.Token))
	}
	if counts := s.messageCounts(); counts["d1"] != 1 || counts["d2"] != 1 {
		t.Errorf("batches hold d1 %d times, d2 %d times", counts["d1"], counts["d2"])
	}
}

// Without a worker, or without NATS, chatbufctl says what it could not
// reach: stats still reports Redis, flush names the subject nobody answers,
// and a bad configuration is exit status 2.
func TestUnreachableServersAreNamed(t *testing.T) {
	rs := redistest.Start(t)
	ns := natstest.Embedded(t)
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &sys{t: t, env: map[string]string{"REDIS_HOST": "127.0.0.1", "REDIS_PORT": strconv.Itoa(rs.Port),
		"NATS_URL": fmt.Sprintf("nats://127.0.0.1:%d", port)}}
	var st statsOut
	s.jsonOK(&st, "stats")
	if st.NATSConnectionError == "" || st.Conversations != 0 {
		t.Errorf("stats without NATS = %+v; want Redis read and the NATS error named", st)
	}
	if out := s.ok("stats"); !strings.Contains(out, "nats") || !strings.Contains(out, "unreachable") {
		t.Errorf("stats (text) without NATS:\n%s", out)
	}

	s.env["NATS_URL"] = ns.URL
	_, errOut, code := s.ctl(nil, "flush", "alice", "phone", "bot")
	if code != 1 || !strings.Contains(errOut, "no worker answers on opencontext.chat.flush.alice.phone.bot") {
		t.Errorf("flush without a worker: exit %d, %q", code, errOut)
	}

	_, errOut, code = s.ctl(map[string]string{"CHAT_FLUSH_MAX_AGE": "soon"}, "stats")
	if code != 2 || !strings.Contains(errOut, `CHAT_FLUSH_MAX_AGE="soon": not a duration`) {
		t.Errorf("bad CHAT_FLUSH_MAX_AGE: exit %d, %q", code, errOut)
	}
	_, errOut, code = s.ctl(map[string]string{"REDIS_PORT": strconv.Itoa(port)}, "ls")
	if code != 1 || !strings.Contains(errOut, "chatbufctl ls") {
		t.Errorf("ls without Redis: exit %d, %q", code, errOut)
	}
	if _, errOut, code := s.ctl(nil, "frobnicate"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("unknown command: exit %d, %q", code, errOut)
	}
}
