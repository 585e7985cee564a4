package flush_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/flush"
	"github.com/opencontext/chatbuf/internal/clocktest"
	"github.com/opencontext/chatbuf/internal/redistest"
	"github.com/opencontext/chatbuf/locking"
)

var alice = chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}

// appender hands out CHAT_IN sequences and remembers where each went.
type appender struct {
	mu   sync.Mutex
	seq  uint64
	sent map[uint64]chat.Conversation
}

func newAppender() *appender { return &appender{sent: map[uint64]chat.Conversation{}} }

func (a *appender) append(t *testing.T, s buffer.Store, c chat.Conversation, n int, at time.Time) []buffer.Appended {
	t.Helper()
	items := make([]buffer.Item, n)
	a.mu.Lock()
	for i := range items {
		a.seq++
		role := []string{"user", "assistant"}[a.seq%2]
		m := chat.Message{Role: role, Content: []byte(fmt.Sprintf(`"m%d"`, a.seq))}
		items[i] = buffer.Item{Conv: c, Key: m.DedupeKey(a.seq, 1), Record: chat.NewRecord(&m, 0, a.seq, false, at)}
		a.sent[a.seq] = c
	}
	a.mu.Unlock()
	res, err := s.AppendBatch(context.Background(), items)
	if err != nil {
		t.Errorf("AppendBatch: %v", err)
	}
	return res
}

func redisStore(t *testing.T, now func() time.Time) (buffer.Store, *redistest.Server) {
	srv := redistest.Start(t)
	return buffer.NewRedis(srv.Client(t), buffer.Config{Now: now}), srv
}

func TestSizeFlush(t *testing.T) {
	ctx := context.Background()
	store, srv := redisStore(t, nil)
	sink := newSink()
	f := flush.New(store, locking.NewRedis(srv.Client(t), locking.Config{}), sink, flush.Config{BatchSize: 10})
	app := newAppender()
	app.append(t, store, alice, 25, time.Now())

	res, err := f.Flush(ctx, alice, chat.TriggerSize)
	if err != nil || len(res.BatchIDs) != 2 {
		t.Fatalf("Flush(size) = %v, %v; want 2 batches", res, err)
	}
	if n, _ := store.Len(ctx, alice); n != 5 {
		t.Errorf("left in buffer: %d, want 5", n)
	}
	if res, err := f.Flush(ctx, alice, chat.TriggerManual); err != nil || len(res.BatchIDs) != 1 {
		t.Fatalf("Flush(manual) = %v, %v; want 1 batch", res, err)
	}
	batches := checkExactlyOnce(t, sink, 10, app.sent)
	if batches[2].Reason != chat.TriggerManual || batches[2].MessageCount != 5 {
		t.Errorf("last batch: reason %s, %d messages; want manual, 5", batches[2].Reason, batches[2].MessageCount)
	}
	if got := batches[0].Roles; len(got) != 2 || got[0] != "assistant" || got[1] != "user" {
		t.Errorf("roles = %v, want [assistant user]", got)
	}
}

// Eight flushers append to and flush the same 50 conversations at once.
func TestConcurrentFlushersExactlyOnce(t *testing.T) {
	ctx := context.Background()
	store, srv := redisStore(t, nil)
	sink := newSink()
	const size = 10
	f := flush.New(store, locking.NewRedis(srv.Client(t), locking.Config{}), sink, flush.Config{BatchSize: size})
	convs := make([]chat.Conversation, 50)
	for i := range convs {
		convs[i] = chat.Conversation{User: fmt.Sprintf("u%d", i), Device: "d", Agent: "a"}
	}
	app := newAppender()
	var wg sync.WaitGroup
	var busy atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := range 200 {
				c := convs[(w*7+i)%len(convs)]
				res := app.append(t, store, c, 1+i%3, time.Now())
				if len(res) > 0 && res[len(res)-1].Len >= size {
					if _, err := f.Flush(ctx, c, chat.TriggerSize); errors.Is(err, locking.ErrBusy) {
						busy.Add(1)
					} else if err != nil {
						t.Errorf("Flush: %v", err)
					}
				}
			}
		})
	}
	wg.Wait()
	for _, c := range convs {
		for {
			_, err := f.Flush(ctx, c, chat.TriggerManual)
			if err == nil {
				break
			}
			if !errors.Is(err, locking.ErrBusy) {
				t.Fatalf("final Flush: %v", err)
			}
		}
	}
	checkExactlyOnce(t, sink, size, app.sent)
	t.Logf("%d messages, %d batches, %d busy skips", len(app.sent), len(sink.batches), busy.Load())
}

// A flusher claims a batch and dies before committing: the next flusher
// publishes the same batch, under the same id, once the lock expired.
func TestCrashBeforeCommitRepublishesSameBatch(t *testing.T) {
	ctx := context.Background()
	store, srv := redisStore(t, nil)
	const expiry = 300 * time.Millisecond
	locker := locking.NewRedis(srv.Client(t), locking.Config{Expiry: expiry})
	app := newAppender()
	app.append(t, store, alice, 10, time.Now())

	// The first flusher publishes, then "dies" before its commit.
	sink := newSink()
	sink.fail = func(b flush.Envelope) error {
		sink.batches = append(sink.batches, b)
		sink.byID[b.ID] = uint64(len(sink.batches))
		sink.last[b.Conv] = b
		return errSinkDown // the commit never happens
	}
	dying := flush.New(store, locker, sink, flush.Config{BatchSize: 10, LockExpiry: time.Hour})
	if _, err := dying.Flush(ctx, alice, chat.TriggerSize); err == nil {
		t.Fatal("Flush with a failing sink succeeded")
	}
	first := sink.batches[0].ID
	sink.fail = nil

	f := flush.New(store, locker, sink, flush.Config{BatchSize: 10, LockExpiry: expiry})
	res, err := f.Flush(ctx, alice, chat.TriggerSize)
	if err != nil || len(res.BatchIDs) != 1 || res.BatchIDs[0] != first {
		t.Fatalf("Flush after the crash = %v, %v; want the same batch %s", res, err, first)
	}
	checkExactlyOnce(t, sink, 10, app.sent)
	if len(sink.batches) != 1 {
		t.Errorf("sink holds %d batches, want 1", len(sink.batches))
	}
}

// A sink failure leaves the claim for a retry: nothing lost, nothing twice.
func TestSinkFailureKeepsTheClaim(t *testing.T) {
	ctx := context.Background()
	store, srv := redisStore(t, nil)
	sink := newSink()
	f := flush.New(store, locking.NewRedis(srv.Client(t), locking.Config{}), sink, flush.Config{BatchSize: 10})
	app := newAppender()
	app.append(t, store, alice, 15, time.Now())
	sink.fail = func(flush.Envelope) error { return errSinkDown }
	if _, err := f.Flush(ctx, alice, chat.TriggerSize); !errors.Is(err, errSinkDown) {
		t.Fatalf("Flush with the sink down: %v, want errSinkDown", err)
	}
	sink.fail = nil
	app.append(t, store, alice, 5, time.Now())
	if _, err := f.Flush(ctx, alice, chat.TriggerManual); err != nil {
		t.Fatalf("Flush after the sink recovered: %v", err)
	}
	batches := checkExactlyOnce(t, sink, 10, app.sent)
	if len(batches) != 2 || batches[0].Reason != chat.TriggerSize {
		t.Errorf("got %d batches, first %s; want 2, the first the retried size batch", len(batches), batches[0].Reason)
	}
}

// A flusher stalls inside Publish (a GC pause, SIGSTOP) past its lock's
// expiry; another takes over. When the stale one resumes, neither its
// publish nor its commit may duplicate or reorder anything.
func TestStaleOwnerIsFenced(t *testing.T) {
	ctx := context.Background()
	store, srv := redisStore(t, nil)
	rdb := srv.Client(t)
	app := newAppender()
	app.append(t, store, alice, 20, time.Now())

	sink := newSink()
	inPublish, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	stalled := &recordingSink{byID: sink.byID, last: sink.last}
	stalled.publish = func(flush.Envelope) {
		once.Do(func() { close(inPublish); <-resume })
	}
	// The stale flusher believes its lock good for an hour (its context
	// and keep-alive stay quiet), as if frozen while Redis let it expire:
	// only the store's fence can stop it.
	staleLocker := locking.NewRedis(rdb, locking.Config{Expiry: time.Hour})
	staleF := flush.New(store, staleLocker, shared{sink, stalled}, flush.Config{BatchSize: 10, LockExpiry: time.Hour})
	errc := make(chan error, 1)
	go func() { _, err := staleF.Flush(ctx, alice, chat.TriggerSize); errc <- err }()
	<-inPublish
	// The lock expires in Redis.
	if err := rdb.Del(ctx, chat.NewKeys("").Lock(alice)).Err(); err != nil {
		t.Fatal(err)
	}

	f := flush.New(store, locking.NewRedis(rdb, locking.Config{}), sink, flush.Config{BatchSize: 10})
	res, err := f.Flush(ctx, alice, chat.TriggerSize)
	if err != nil || len(res.BatchIDs) != 2 {
		t.Fatalf("takeover Flush = %v, %v; want both batches", res, err)
	}
	close(resume)
	err = <-errc
	if !errors.Is(err, buffer.ErrFenced) {
		t.Errorf("stale flusher's error = %v, want ErrFenced (the store's fence refusing it)", err)
	}
	if errors.Is(err, locking.ErrLost) {
		t.Errorf("stale flusher's error = %v: stopped by its lock's deadline, not by the fence", err)
	}
	checkExactlyOnce(t, sink, 10, app.sent)
	if len(sink.batches) != 2 {
		t.Errorf("sink holds %d batches, want 2", len(sink.batches))
	}
}

// shared publishes through gate's hook into the real sink's state.
type shared struct {
	real *recordingSink
	gate *recordingSink
}

func (s shared) Publish(ctx context.Context, b flush.Envelope) (uint64, error) {
	s.gate.publish(b)
	return s.real.Publish(ctx, b)
}

// The age trigger, on an injected clock: no sleeps.
func TestSweeperFlushesOldBuffers(t *testing.T) {
	ctx := context.Background()
	clock := clocktest.New(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
	store, srv := redisStore(t, clock.Now)
	sink := newSink()
	f := flush.New(store, locking.NewRedis(srv.Client(t), locking.Config{Now: clock.Now}), sink,
		flush.Config{BatchSize: 10, MaxAge: 5 * time.Minute, Now: clock.Now})
	sw := flush.NewSweeper(f, 100)
	app := newAppender()
	bob := chat.Conversation{User: "bob", Device: "d", Agent: "a"}
	app.append(t, store, alice, 3, clock.Now())
	clock.Advance(time.Minute)
	app.append(t, store, bob, 2, clock.Now())

	sweep := func() int {
		t.Helper()
		n, err := sw.Sweep(ctx)
		if err != nil {
			t.Fatalf("Sweep: %v", err)
		}
		return n
	}
	if n := sweep(); n != 0 {
		t.Errorf("sweep of young buffers flushed %d batches", n)
	}
	clock.Advance(4*time.Minute + time.Millisecond) // alice is 5m old, bob 4m
	if n := sweep(); n != 1 {
		t.Fatalf("sweep flushed %d batches, want alice's 1", n)
	}
	clock.Advance(time.Minute)
	if n := sweep(); n != 1 {
		t.Fatalf("sweep flushed %d batches, want bob's 1", n)
	}
	batches := checkExactlyOnce(t, sink, 10, app.sent)
	for _, b := range batches {
		if b.Reason != chat.TriggerAge {
			t.Errorf("batch %s reason %s, want age", b.BatchID, b.Reason)
		}
	}
	if _, ok, _ := store.Oldest(ctx); ok {
		t.Error("due index not empty after the sweeps")
	}
}

// The bulk path: eight goroutines append to 50 conversations and flush the
// full ones in groups, racing each other for the locks.
func TestFlushManyExactlyOnce(t *testing.T) {
	ctx := context.Background()
	store, srv := redisStore(t, nil)
	sink := newSink()
	const size = 10
	f := flush.New(store, locking.NewRedis(srv.Client(t), locking.Config{}), sink, flush.Config{BatchSize: size})
	convs := make([]chat.Conversation, 50)
	for i := range convs {
		convs[i] = chat.Conversation{User: fmt.Sprintf("u%d", i), Device: "d", Agent: "a"}
	}
	app := newAppender()
	var wg sync.WaitGroup
	var busy atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := range 100 {
				var full []chat.Conversation
				for j := range 5 {
					c := convs[(w*11+i*5+j)%len(convs)]
					res := app.append(t, store, c, 1+(i+j)%4, time.Now())
					if len(res) > 0 && res[len(res)-1].Len >= size && !slices.Contains(full, c) {
						full = append(full, c)
					}
				}
				if len(full) == 0 {
					continue
				}
				_, b, err := f.FlushMany(ctx, full, chat.TriggerSize)
				if err != nil {
					t.Errorf("FlushMany: %v", err)
				}
				busy.Add(int64(len(b)))
			}
		})
	}
	wg.Wait()
	for {
		_, b, err := f.FlushMany(ctx, convs, chat.TriggerManual)
		if err != nil {
			t.Fatalf("final FlushMany: %v", err)
		}
		if len(b) == 0 {
			break
		}
	}
	checkExactlyOnce(t, sink, size, app.sent)
	t.Logf("%d messages, %d batches, %d busy", len(app.sent), len(sink.batches), busy.Load())
}

// The sink already holds a later batch of the conversation that is not
// this one (token order turned around by the fallback's two stores): the
// flusher moves its batch above it instead of being stuck.
func TestFlushHealsTokenInversion(t *testing.T) {
	ctx := context.Background()
	store, srv := redisStore(t, nil)
	sink := newSink()
	ahead := flush.Envelope{Conv: alice, ID: "elsewhere", Token: time.Now().Add(time.Hour).UnixMicro(), Data: []byte(`{}`)}
	if _, err := sink.Publish(ctx, ahead); err != nil {
		t.Fatal(err)
	}
	f := flush.New(store, locking.NewRedis(srv.Client(t), locking.Config{}), sink, flush.Config{BatchSize: 10})
	app := newAppender()
	app.append(t, store, alice, 10, time.Now())
	res, err := f.Flush(ctx, alice, chat.TriggerSize)
	if err != nil || len(res.BatchIDs) != 1 {
		t.Fatalf("Flush = %v, %v; want one batch", res, err)
	}
	last := sink.batches[len(sink.batches)-1]
	if last.Token <= ahead.Token || last.ID != res.BatchIDs[0] {
		t.Errorf("published token %d (%s), want above %d", last.Token, last.ID, ahead.Token)
	}
	if n, _ := store.Len(ctx, alice); n != 0 {
		t.Errorf("%d messages left", n)
	}
}

// One sweep takes further pages when the first was full, so a backlog of
// old buffers larger than the page limit drains in one pass.
func TestSweepTakesFurtherPages(t *testing.T) {
	ctx := context.Background()
	clock := clocktest.New(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
	store, srv := redisStore(t, clock.Now)
	sink := newSink()
	f := flush.New(store, locking.NewRedis(srv.Client(t), locking.Config{Now: clock.Now}), sink,
		flush.Config{BatchSize: 10, MaxAge: time.Minute, Now: clock.Now})
	app := newAppender()
	for i := range 5 {
		app.append(t, store, chat.Conversation{User: fmt.Sprintf("u%d", i), Device: "d", Agent: "a"}, 2, clock.Now())
	}
	clock.Advance(2 * time.Minute)
	n, err := flush.NewSweeper(f, 2).Sweep(ctx)
	if err != nil || n != 5 {
		t.Fatalf("Sweep with a page of 2 = %d batches, %v; want all 5 old buffers", n, err)
	}
	checkExactlyOnce(t, sink, 10, app.sent)
}
