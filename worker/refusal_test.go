package worker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/internal/redistest"
	"github.com/opencontext/chatbuf/stream"
	"github.com/opencontext/chatbuf/worker"
)

// refusals records the worker's store-refusal hooks.
type refusals struct {
	mu    sync.Mutex
	kinds map[string]int
	on    int // refusals begun
}

func (r *refusals) hooks() worker.Hooks {
	r.kinds = map[string]int{}
	return worker.Hooks{
		StoreRefused: func(kind string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.kinds[kind]++
		},
		StoreRefusing: func(on bool) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if on {
				r.on++
			}
		},
	}
}

func (r *refusals) count(kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.kinds[kind]
}

// refusalEnv is a worker whose batches hold up to batchSize messages and
// never flush by age, against a Redis started with args. Its ack wait is
// longer than the tests wait for batches: a message pulled when the
// refusal began must be given back, not left for redelivery.
func refusalEnv(t *testing.T, batchSize int, o redistest.Options) (*env, *worker.Worker, *refusals) {
	t.Helper()
	cfg := stream.Config{AckWait: 10 * time.Minute}.WithDefaults()
	e := &env{nats: natstest.Embedded(t), redis: redistest.StartWith(t, o), cfg: cfg}
	js, err := jetstream.New(e.nats.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	e.js = js
	r := &refusals{}
	w, _ := e.startWorkerWith(t, workerOpts{maxAge: time.Hour, batchSize: batchSize, hooks: r.hooks()})
	return e, w, r
}

// waitRefusal waits until the worker reports the store refusing writes with
// an error that mentions code, and returns the reason.
func waitRefusal(t *testing.T, w *worker.Worker, code string) error {
	t.Helper()
	var err error
	waitFor(t, "store refusal "+code, func() bool {
		err = w.StoreRefusal()
		return err != nil && strings.Contains(err.Error(), code)
	})
	return err
}

// noDeadLetters asserts CHAT_DEAD is empty.
func noDeadLetters(t *testing.T, e *env) {
	t.Helper()
	st, err := e.js.Stream(context.Background(), e.cfg.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Msgs; n > 0 {
		t.Errorf("%d valid messages dead-lettered", n)
	}
}

// inStreamHolds waits until CHAT_IN holds at least n messages (unacked).
func inStreamHolds(t *testing.T, e *env, n uint64) {
	t.Helper()
	st, err := e.js.Stream(context.Background(), e.cfg.InStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs < n {
		t.Errorf("CHAT_IN holds %d messages, want at least %d not yet stored", info.State.Msgs, n)
	}
}

// flushUntil asks for manual flushes of convs until the batches hold n
// messages, for up to a minute (the ack wait of refusalEnv is longer).
func flushUntil(t *testing.T, e *env, convs []chat.Conversation, n int) []chat.Batch {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		e.flushAll(t, convs)
		batches := e.batchesNow(t)
		total := 0
		for _, b := range batches {
			total += b.MessageCount
		}
		if total >= n {
			return batches
		}
		if time.Now().After(deadline) {
			t.Fatalf("batches hold %d of %d messages after 1m", total, n)
		}
		time.Sleep(200 * time.Millisecond) // each look reads CHAT_FLUSHED with a new consumer
	}
}

// Redis full (maxmemory, noeviction): appends are refused as a whole, no
// valid message is dead-lettered, the worker stops pulling and is not
// ready while Redis is full, flushes still run (they are what frees
// memory), and once Redis has room every message ends in exactly one
// batch.
func TestRedisFullNeverDeadLetters(t *testing.T) {
	const convCount, perConv, batchSize = 120, 9, 1000
	e, w, r := refusalEnv(t, batchSize, redistest.Options{Args: []string{"--maxmemory", "2200kb", "--maxmemory-policy", "noeviction"}})
	pad := strings.Repeat("x", 2000)
	var convs []chat.Conversation
	for i := range convCount {
		convs = append(convs, chat.Conversation{User: fmt.Sprintf("u%d", i), Device: "d", Agent: "a"})
	}
	want := sent{}
	for i := range convCount * perConv {
		c := convs[i%convCount]
		content := fmt.Sprintf("m-%d-%s", i, pad)
		want[content] = c
		e.publish(t, c, fmt.Sprintf(`{"role":"user","content":%q}`, content), "")
	}
	reason := waitRefusal(t, w, "OOM")
	t.Logf("not ready: %v", reason)
	if r.count("oom") == 0 {
		t.Errorf("no refusal of kind oom counted: %v", r.kinds)
	}
	noDeadLetters(t, e)
	inStreamHolds(t, e, 1)

	// Flushing works while Redis is full (it is what frees memory).
	e.flushAll(t, convs)
	if len(e.batchesNow(t)) == 0 {
		t.Fatal("no batch published by flushes while Redis was full")
	}
	// Room: appends resume by themselves.
	if err := e.redis.Client(t).ConfigSet(context.Background(), "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	checkSize(t, flushUntil(t, e, convs, len(want)), want, batchSize)
	waitFor(t, "the worker ready again", func() bool { return w.StoreRefusal() == nil })
	noDeadLetters(t, e)
}

// An ACL user that loses a permission while the worker runs (NOPERM): no
// dead letters, not ready, and all is stored once the permission is back.
func TestRedisNoPermNeverDeadLetters(t *testing.T) {
	e, w, r := refusalEnv(t, size, redistest.Options{Username: "chatbuf", UserPassword: "secret"})
	admin := redis.NewClient(&redis.Options{Addr: e.redis.Addr})
	defer admin.Close()
	ctx := context.Background()
	if err := admin.Do(ctx, "ACL", "SETUSER", "chatbuf", "-evalsha", "-eval").Err(); err != nil {
		t.Fatal(err)
	}
	c := chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	want := sent{}
	for i := range 2 * size {
		m := fmt.Sprintf("noperm-%d", i)
		want[m] = c
		e.publish(t, c, fmt.Sprintf(`{"role":"user","content":%q}`, m), "")
	}
	t.Logf("not ready: %v", waitRefusal(t, w, "NOPERM"))
	if r.count("noperm") == 0 {
		t.Errorf("no refusal of kind noperm counted: %v", r.kinds)
	}
	noDeadLetters(t, e)
	inStreamHolds(t, e, 2*size)
	if err := admin.Do(ctx, "ACL", "SETUSER", "chatbuf", "+evalsha", "+eval").Err(); err != nil {
		t.Fatal(err)
	}
	check(t, e.batchesHolding(t, 2*size), want)
	waitFor(t, "the worker ready again", func() bool { return w.StoreRefusal() == nil })
	noDeadLetters(t, e)
}

// Redis turned into a replica (READONLY): the same.
func TestRedisReadOnlyNeverDeadLetters(t *testing.T) {
	e, w, r := refusalEnv(t, size, redistest.Options{})
	admin := e.redis.Client(t)
	ctx := context.Background()
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// A master that is not there: the data stays, writes are refused.
	if err := admin.Do(ctx, "REPLICAOF", "127.0.0.1", fmt.Sprint(port)).Err(); err != nil {
		t.Fatal(err)
	}
	c := chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	want := sent{}
	for i := range 2 * size {
		m := fmt.Sprintf("readonly-%d", i)
		want[m] = c
		e.publish(t, c, fmt.Sprintf(`{"role":"user","content":%q}`, m), "")
	}
	t.Logf("not ready: %v", waitRefusal(t, w, "READONLY"))
	if r.count("readonly") == 0 {
		t.Errorf("no refusal of kind readonly counted: %v", r.kinds)
	}
	noDeadLetters(t, e)
	inStreamHolds(t, e, 2*size)
	if err := admin.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	check(t, e.batchesHolding(t, 2*size), want)
	waitFor(t, "the worker ready again", func() bool { return w.StoreRefusal() == nil })
	noDeadLetters(t, e)
}
