package buffer_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/clocktest"
	"github.com/opencontext/chatbuf/internal/redistest"
)

// opener returns a fresh, empty Store using the given clock.
type opener func(t *testing.T, cfg buffer.Config) buffer.Store

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func TestRedisConformance(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	runConformance(t, func(t *testing.T, cfg buffer.Config) buffer.Store {
		if err := rdb.FlushAll(context.Background()).Err(); err != nil {
			t.Fatalf("FLUSHALL: %v", err)
		}
		return buffer.NewRedis(rdb, cfg)
	})
}

func TestMemoryConformance(t *testing.T) {
	runConformance(t, func(t *testing.T, cfg buffer.Config) buffer.Store {
		return buffer.NewMemory(cfg)
	})
}

var (
	alice = chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	bob   = chat.Conversation{User: "bob", Device: "_", Agent: "bot"}
	// Two triples that an unescaped key layout would merge.
	colonA = chat.Conversation{User: "a:b", Device: "c", Agent: "d"}
	colonB = chat.Conversation{User: "a", Device: "b:c", Agent: "d"}
)

// item makes the message with CHAT_IN sequence seq for c, received at at.
func item(c chat.Conversation, seq uint64, id string, at time.Time) buffer.Item {
	m := chat.Message{Role: "user", Content: []byte(fmt.Sprintf(`"message %d"`, seq)), MessageID: id}
	return buffer.Item{Conv: c, Key: m.DedupeKey(seq, 1), Record: chat.NewRecord(&m, 0, seq, false, at)}
}

// itemAt makes the message at pos of c, received at at; end marks it
// Chatbuf-End-Batch.
func itemAt(c chat.Conversation, p buffer.Pos, end bool, at time.Time) buffer.Item {
	m := chat.Message{Role: "user", Content: []byte(fmt.Sprintf(`"message %d/%d"`, p.Epoch, p.Seq))}
	return buffer.Item{Conv: c, Key: fmt.Sprintf("%d:%d", p.Epoch, p.Seq), Record: chat.NewRecord(&m, p.Epoch, p.Seq, end, at)}
}

// positions returns the Pos of a batch's records.
func positions(t *testing.T, b buffer.Batch) []buffer.Pos {
	t.Helper()
	var out []buffer.Pos
	for _, raw := range b.Records {
		r, err := chat.ParseRecord(raw)
		if err != nil {
			t.Fatalf("ParseRecord: %v", err)
		}
		out = append(out, buffer.Pos{Epoch: r.Epoch, Seq: r.Seq})
	}
	return out
}

// seqs returns the CHAT_IN sequences of a batch's records.
func seqs(t *testing.T, b buffer.Batch) []uint64 {
	t.Helper()
	var out []uint64
	for _, raw := range b.Records {
		r, err := chat.ParseRecord(raw)
		if err != nil {
			t.Fatalf("ParseRecord: %v", err)
		}
		out = append(out, r.Seq)
	}
	return out
}

func mustAppend(t *testing.T, s buffer.Store, items ...buffer.Item) []buffer.Appended {
	t.Helper()
	res, err := s.AppendBatch(context.Background(), items)
	if err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("AppendBatch item %d: %v", i, r.Err)
		}
	}
	return res
}

func fill(t *testing.T, s buffer.Store, c chat.Conversation, from, to uint64, at time.Time) {
	t.Helper()
	var items []buffer.Item
	for seq := from; seq <= to; seq++ {
		items = append(items, item(c, seq, "", at))
	}
	mustAppend(t, s, items...)
}

func runConformance(t *testing.T, open opener) {
	ctx := context.Background()
	newStore := func(t *testing.T) (buffer.Store, *clocktest.Clock) {
		clock := clocktest.New(t0)
		return open(t, buffer.Config{Now: clock.Now, DedupeWindow: time.Hour}), clock
	}
	size := buffer.ClaimOptions{Max: 3, Min: 3, Reason: chat.TriggerSize}

	t.Run("append reports length and deduplicates", func(t *testing.T) {
		s, clock := newStore(t)
		got := mustAppend(t, s,
			item(alice, 1, "m1", t0),
			item(alice, 2, "m2", t0),
			item(alice, 3, "m1", t0), // same message_id: one message
			item(bob, 4, "", t0),
			item(bob, 4, "", t0), // redelivery of the same stream message
			item(alice, 5, "", t0),
		)
		want := []buffer.Appended{{Len: 1}, {Len: 2}, {Dup: true, Len: 2}, {Len: 1}, {Dup: true, Len: 1}, {Len: 3}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("AppendBatch (-want +got):\n%s", diff)
		}
		one, err := s.Append(ctx, item(alice, 6, "m2", t0))
		if err != nil || !one.Dup || one.Len != 3 {
			t.Errorf("Append of a seen message_id = %+v, %v; want a duplicate, length 3", one, err)
		}
		clock.Advance(time.Hour + time.Second)
		one, err = s.Append(ctx, item(alice, 7, "m2", clock.Now()))
		if err != nil || one.Dup || one.Len != 4 {
			t.Errorf("Append after the dedupe window = %+v, %v; want appended, length 4", one, err)
		}
	})

	t.Run("escaped ids keep conversations apart", func(t *testing.T) {
		s, _ := newStore(t)
		mustAppend(t, s, item(colonA, 1, "same", t0), item(colonB, 2, "same", t0), item(colonB, 3, "", t0))
		for c, want := range map[chat.Conversation]int64{colonA: 1, colonB: 2} {
			if n, err := s.Len(ctx, c); err != nil || n != want {
				t.Errorf("Len(%v) = %d, %v; want %d", c, n, err, want)
			}
		}
	})

	t.Run("claim takes full batches in order and commit deletes them", func(t *testing.T) {
		s, _ := newStore(t)
		fill(t, s, alice, 1, 2, t0)
		if b, err := s.Claim(ctx, alice, 1, size); err != nil || b.Token != 0 {
			t.Fatalf("Claim of 2 < min 3 = %+v, %v; want nothing", b, err)
		}
		fill(t, s, alice, 3, 7, t0)
		b, err := s.Claim(ctx, alice, 1, size)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		if diff := cmp.Diff([]uint64{1, 2, 3}, seqs(t, b)); diff != "" {
			t.Errorf("claimed seqs (-want +got):\n%s", diff)
		}
		if b.Token <= 0 || b.Resumed || b.Reason != chat.TriggerSize || b.PrevPos != 0 || !b.Created.Equal(t0) {
			t.Errorf("batch = %+v; want a new size batch created at %v", b, t0)
		}
		if n, _ := s.Len(ctx, alice); n != 4 {
			t.Errorf("Len after claim = %d, want 4", n)
		}
		left, err := s.Commit(ctx, alice, 1, b.Token, 41)
		if err != nil || left != 4 {
			t.Fatalf("Commit = %d, %v; want 4 left", left, err)
		}
		if _, err := s.Commit(ctx, alice, 1, b.Token, 41); !errors.Is(err, buffer.ErrNoBatch) {
			t.Errorf("second Commit: %v, want ErrNoBatch", err)
		}
		b2, err := s.Claim(ctx, alice, 1, size)
		if err != nil || b2.Token <= b.Token || b2.PrevPos != 41 {
			t.Fatalf("next Claim = %+v, %v; want a higher token than %d, after 41", b2, err, b.Token)
		}
		if diff := cmp.Diff([]uint64{4, 5, 6}, seqs(t, b2)); diff != "" {
			t.Errorf("second batch seqs (-want +got):\n%s", diff)
		}
	})

	t.Run("an uncommitted batch is returned again, unchanged", func(t *testing.T) {
		s, clock := newStore(t)
		fill(t, s, alice, 1, 4, t0)
		b, err := s.Claim(ctx, alice, 1, size)
		if err != nil || b.Token == 0 {
			t.Fatalf("Claim = %+v, %v", b, err)
		}
		// The flusher dies; another takes over with a higher fence, later.
		clock.Advance(time.Minute)
		fill(t, s, alice, 5, 9, clock.Now())
		again, err := s.Claim(ctx, alice, 2, buffer.ClaimOptions{Max: 3, Min: 1, Reason: chat.TriggerManual})
		if err != nil {
			t.Fatalf("Claim after a crash: %v", err)
		}
		b.Resumed = true
		if diff := cmp.Diff(b, again); diff != "" {
			t.Errorf("resumed batch (-want +got):\n%s", diff)
		}
	})

	t.Run("fencing refuses a stale owner", func(t *testing.T) {
		s, _ := newStore(t)
		fill(t, s, alice, 1, 3, t0)
		b, err := s.Claim(ctx, alice, 10, size)
		if err != nil || b.Token == 0 {
			t.Fatalf("Claim = %+v, %v", b, err)
		}
		if _, err := s.Claim(ctx, alice, 11, size); err != nil {
			t.Fatalf("Claim by the new owner: %v", err)
		}
		if _, err := s.Commit(ctx, alice, 10, b.Token, 1); !errors.Is(err, buffer.ErrFenced) {
			t.Errorf("Commit by the stale owner: %v, want ErrFenced", err)
		}
		if _, err := s.Claim(ctx, alice, 10, size); !errors.Is(err, buffer.ErrFenced) {
			t.Errorf("Claim by the stale owner: %v, want ErrFenced", err)
		}
		if _, err := s.Commit(ctx, alice, 11, b.Token, 1); err != nil {
			t.Errorf("Commit by the new owner: %v", err)
		}
	})

	t.Run("retoken moves an in-flight batch above a given token", func(t *testing.T) {
		s, _ := newStore(t)
		fill(t, s, alice, 1, 3, t0)
		b, err := s.Claim(ctx, alice, 5, size)
		if err != nil || b.Token == 0 {
			t.Fatalf("Claim = %+v, %v", b, err)
		}
		above := b.Token + 1000
		if _, err := s.Retoken(ctx, alice, 4, b.Token, above); !errors.Is(err, buffer.ErrFenced) {
			t.Errorf("Retoken with a stale fence: %v, want ErrFenced", err)
		}
		token, err := s.Retoken(ctx, alice, 5, b.Token, above)
		if err != nil || token <= above {
			t.Fatalf("Retoken = %d, %v; want > %d", token, err, above)
		}
		if _, err := s.Retoken(ctx, alice, 5, b.Token, above); !errors.Is(err, buffer.ErrNoBatch) {
			t.Errorf("Retoken of the old token: %v, want ErrNoBatch", err)
		}
		again, err := s.Claim(ctx, alice, 5, size)
		if err != nil || again.Token != token || !again.Resumed {
			t.Errorf("Claim after Retoken = %+v, %v; want the batch under token %d", again, err, token)
		}
		if _, err := s.Commit(ctx, alice, 5, b.Token, 1); !errors.Is(err, buffer.ErrNoBatch) {
			t.Errorf("Commit under the old token: %v, want ErrNoBatch", err)
		}
		if _, err := s.Commit(ctx, alice, 5, token, 1); err != nil {
			t.Errorf("Commit under the new token: %v", err)
		}
		fill(t, s, alice, 4, 6, t0)
		next, err := s.Claim(ctx, alice, 5, size)
		if err != nil || next.Token <= token {
			t.Errorf("next Claim token %d, %v; want > %d", next.Token, err, token)
		}
	})

	t.Run("due index and age claims", func(t *testing.T) {
		s, clock := newStore(t)
		fill(t, s, alice, 1, 1, t0)
		clock.Advance(time.Second)
		fill(t, s, bob, 2, 2, clock.Now())
		clock.Advance(time.Second)
		fill(t, s, colonA, 3, 3, clock.Now())

		due := func(before time.Time, limit int) []chat.Conversation {
			t.Helper()
			got, err := s.Due(ctx, before, limit)
			if err != nil {
				t.Fatalf("Due: %v", err)
			}
			return got
		}
		if diff := cmp.Diff([]chat.Conversation{alice, bob}, due(t0.Add(2*time.Second), 10)); diff != "" {
			t.Errorf("Due (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]chat.Conversation{alice}, due(t0.Add(time.Hour), 1)); diff != "" {
			t.Errorf("Due with limit 1 (-want +got):\n%s", diff)
		}
		if got := due(t0, 10); len(got) != 0 {
			t.Errorf("Due(t0) = %v, want none", got)
		}
		if o, ok, err := s.Oldest(ctx); err != nil || !ok || !o.Equal(t0) {
			t.Errorf("Oldest = %v, %v, %v; want %v", o, ok, err, t0)
		}

		age := buffer.ClaimOptions{Max: 3, Min: 3, Before: t0, Reason: chat.TriggerAge}
		if b, err := s.Claim(ctx, alice, 1, age); err != nil || b.Token != 0 {
			t.Errorf("age Claim of a buffer received at the cut = %+v, %v; want nothing", b, err)
		}
		age.Before = t0.Add(time.Millisecond)
		b, err := s.Claim(ctx, alice, 1, age)
		if err != nil || len(b.Records) != 1 || b.Reason != chat.TriggerAge {
			t.Fatalf("age Claim = %+v, %v; want the one old message", b, err)
		}
		// In flight, the conversation stays due until committed.
		if diff := cmp.Diff([]chat.Conversation{alice, bob, colonA}, due(t0.Add(time.Hour), 10)); diff != "" {
			t.Errorf("Due with a batch in flight (-want +got):\n%s", diff)
		}
		clock.Advance(time.Second)
		fill(t, s, alice, 4, 4, clock.Now())
		if _, err := s.Commit(ctx, alice, 1, b.Token, 7); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		// alice's score is now her remaining message's receive time.
		if diff := cmp.Diff([]chat.Conversation{bob, colonA, alice}, due(t0.Add(time.Hour), 10)); diff != "" {
			t.Errorf("Due after commit (-want +got):\n%s", diff)
		}
		b, err = s.Claim(ctx, alice, 1, buffer.ClaimOptions{Max: 3, Min: 1, Reason: chat.TriggerManual})
		if err != nil || len(b.Records) != 1 {
			t.Fatalf("manual Claim = %+v, %v", b, err)
		}
		if _, err := s.Commit(ctx, alice, 1, b.Token, 8); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		if diff := cmp.Diff([]chat.Conversation{bob, colonA}, due(t0.Add(time.Hour), 10)); diff != "" {
			t.Errorf("Due after draining alice (-want +got):\n%s", diff)
		}
	})

	t.Run("dedupe outlives the flush", func(t *testing.T) {
		s, _ := newStore(t)
		mustAppend(t, s, item(alice, 1, "m1", t0))
		b, err := s.Claim(ctx, alice, 1, buffer.ClaimOptions{Max: 3, Min: 1, Reason: chat.TriggerManual})
		if err != nil || b.Token == 0 {
			t.Fatalf("Claim = %+v, %v", b, err)
		}
		if _, err := s.Commit(ctx, alice, 1, b.Token, 1); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		if got := mustAppend(t, s, item(alice, 9, "m1", t0)); !got[0].Dup {
			t.Errorf("republished message_id after its flush = %+v, want a duplicate", got[0])
		}
	})

	t.Run("claim of an empty buffer clears it from the due index", func(t *testing.T) {
		s, _ := newStore(t)
		if b, err := s.Claim(ctx, bob, 1, buffer.ClaimOptions{Max: 3, Min: 1, Reason: chat.TriggerManual}); err != nil || b.Token != 0 {
			t.Errorf("Claim of nothing = %+v, %v", b, err)
		}
		if _, ok, err := s.Oldest(ctx); err != nil || ok {
			t.Errorf("Oldest of empty store = %v, %v; want none", ok, err)
		}
	})

	const ep = 1764151200000 // a CHAT_IN's creation time
	at := func(seq uint64) buffer.Pos { return buffer.Pos{Epoch: ep, Seq: seq} }

	t.Run("late records take their place in (epoch, seq) order", func(t *testing.T) {
		s, _ := newStore(t)
		mustAppend(t, s, itemAt(alice, at(5), false, t0), itemAt(alice, at(9), false, t0))
		mustAppend(t, s, itemAt(alice, at(7), false, t0))                                  // between
		mustAppend(t, s, itemAt(alice, at(2), false, t0), itemAt(alice, at(8), false, t0)) // head, then middle
		mustAppend(t, s, itemAt(alice, buffer.Pos{Epoch: ep - 1, Seq: 40}, false, t0))     // an older CHAT_IN's
		var many []buffer.Item
		for seq := uint64(100); seq > 60; seq-- { // a burst in reverse: each walks back further
			many = append(many, itemAt(alice, at(seq), false, t0))
		}
		mustAppend(t, s, many...)
		b, err := s.Claim(ctx, alice, 1, buffer.ClaimOptions{Max: 100, Min: 1, Reason: chat.TriggerManual})
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		want := []buffer.Pos{{Epoch: ep - 1, Seq: 40}, at(2), at(5), at(7), at(8), at(9)}
		for seq := uint64(61); seq <= 100; seq++ {
			want = append(want, at(seq))
		}
		if diff := cmp.Diff(want, positions(t, b)); diff != "" {
			t.Errorf("claimed (-want +got):\n%s", diff)
		}
	})

	t.Run("a claim takes only records at or before Through", func(t *testing.T) {
		s, _ := newStore(t)
		mustAppend(t, s, itemAt(alice, buffer.Pos{Epoch: ep - 1, Seq: 900}, false, t0))
		for seq := uint64(1); seq <= 6; seq++ {
			mustAppend(t, s, itemAt(alice, at(seq), false, t0))
		}
		w := size
		w.Through = &buffer.Pos{Epoch: ep, Seq: 1}
		b, err := s.Claim(ctx, alice, 1, w)
		if err != nil || b.Token != 0 || !b.Blocked || !cmp.Equal(b.Beyond, []uint64{2}) {
			t.Fatalf("size claim with 2 of 3 records allowed = %+v, %v; want nothing, blocked, beyond [2]", b, err)
		}
		w.Through = &buffer.Pos{Epoch: ep, Seq: 2}
		b, err = s.Claim(ctx, alice, 1, w)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		if diff := cmp.Diff([]buffer.Pos{{Epoch: ep - 1, Seq: 900}, at(1), at(2)}, positions(t, b)); diff != "" || b.Reason != chat.TriggerSize {
			t.Errorf("size claim: reason %q, records (-want +got):\n%s", b.Reason, diff)
		}
		commit(t, s, alice, 1, b)
		manual := buffer.ClaimOptions{Max: 10, Min: 1, Reason: chat.TriggerManual, Through: &buffer.Pos{Epoch: ep, Seq: 4}}
		b, err = s.Claim(ctx, alice, 1, manual)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		if diff := cmp.Diff([]buffer.Pos{at(3), at(4)}, positions(t, b)); diff != "" {
			t.Errorf("manual claim (-want +got):\n%s", diff)
		}
		commit(t, s, alice, 1, b)
		// A limit in an older CHAT_IN allows none of the current one's.
		manual.Through = &buffer.Pos{Epoch: ep - 1, Seq: 1 << 40}
		if b, err := s.Claim(ctx, alice, 1, manual); err != nil || b.Token != 0 {
			t.Errorf("claim limited to an older CHAT_IN = %+v, %v; want nothing", b, err)
		}
	})

	t.Run("a record marked End closes its batch", func(t *testing.T) {
		s, _ := newStore(t)
		for seq := uint64(1); seq <= 7; seq++ {
			mustAppend(t, s, itemAt(alice, at(seq), seq == 2 || seq == 7, t0))
		}
		end := buffer.ClaimOptions{Max: 3, Min: 3, Reason: chat.TriggerEnd}
		var got [][]buffer.Pos
		var reasons []chat.Trigger
		for {
			b, err := s.Claim(ctx, alice, 1, end)
			if err != nil {
				t.Fatalf("Claim: %v", err)
			}
			if b.Token == 0 {
				break
			}
			got = append(got, positions(t, b))
			reasons = append(reasons, b.Reason)
			commit(t, s, alice, 1, b)
		}
		want := [][]buffer.Pos{{at(1), at(2)}, {at(3), at(4), at(5)}, {at(6), at(7)}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("batches (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]chat.Trigger{chat.TriggerEnd, chat.TriggerSize, chat.TriggerEnd}, reasons); diff != "" {
			t.Errorf("reasons (-want +got):\n%s", diff)
		}
	})

	t.Run("MaxBytes closes a batch early", func(t *testing.T) {
		s, _ := newStore(t)
		var cost []int
		for seq := uint64(1); seq <= 4; seq++ {
			it := itemAt(alice, at(seq), false, t0)
			r, err := chat.ParseRecord(it.Record)
			if err != nil {
				t.Fatal(err)
			}
			cost = append(cost, r.Cost)
			mustAppend(t, s, it)
		}
		w := buffer.ClaimOptions{Max: 3, Min: 3, Reason: chat.TriggerSize, MaxBytes: cost[0] + cost[1]}
		b, err := s.Claim(ctx, alice, 1, w)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		if diff := cmp.Diff([]buffer.Pos{at(1), at(2)}, positions(t, b)); diff != "" || b.Reason != chat.TriggerBytes {
			t.Errorf("claim: reason %q, records (-want +got):\n%s", b.Reason, diff)
		}
		commit(t, s, alice, 1, b)
		w.MaxBytes = 1 // below one record: it goes alone
		b, err = s.Claim(ctx, alice, 1, w)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		if diff := cmp.Diff([]buffer.Pos{at(3)}, positions(t, b)); diff != "" || b.Reason != chat.TriggerBytes {
			t.Errorf("claim over the ceiling: reason %q, records (-want +got):\n%s", b.Reason, diff)
		}
	})

	t.Run("idle conversations", func(t *testing.T) {
		clock := clocktest.New(t0)
		s := open(t, buffer.Config{Now: clock.Now, DedupeWindow: time.Hour, TrackIdle: true})
		mustAppend(t, s, itemAt(alice, at(1), false, clock.Now()))
		clock.Advance(time.Minute)
		mustAppend(t, s, itemAt(alice, at(2), false, clock.Now()), itemAt(bob, at(3), false, clock.Now()))
		clock.Advance(time.Minute)
		mustAppend(t, s, itemAt(bob, at(4), false, clock.Now()))
		got, err := s.Idle(ctx, t0.Add(90*time.Second), 10)
		if err != nil || !cmp.Equal(got, []chat.Conversation{alice}) {
			t.Fatalf("Idle = %v, %v; want [alice]", got, err)
		}
		idle := buffer.ClaimOptions{Max: 10, Min: 10, Reason: chat.TriggerIdle, IdleBefore: t0.Add(30 * time.Second)}
		if b, err := s.Claim(ctx, alice, 1, idle); err != nil || b.Token != 0 {
			t.Fatalf("idle claim of a conversation appended to since = %+v, %v; want nothing", b, err)
		}
		idle.IdleBefore = t0.Add(90 * time.Second)
		b, err := s.Claim(ctx, alice, 1, idle)
		if err != nil || b.Reason != chat.TriggerIdle || !cmp.Equal(positions(t, b), []buffer.Pos{at(1), at(2)}) {
			t.Fatalf("idle claim = %+v, %v; want seqs 1, 2, reason idle", b, err)
		}
		commit(t, s, alice, 1, b)
		if got, err := s.Idle(ctx, clock.Now().Add(time.Second), 10); err != nil || !cmp.Equal(got, []chat.Conversation{bob}) {
			t.Errorf("Idle after alice's flush = %v, %v; want [bob]", got, err)
		}
	})
}

// On Redis Cluster every script must touch one slot: a one-node cluster
// rejects any script whose keys span slots (CROSSSLOT), so the suite passing
// here shows the key discipline holds.
func TestRedisClusterConformance(t *testing.T) {
	srv := redistest.Start(t, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(t.TempDir(), "nodes.conf"))
	admin := srv.Client(t)
	ctx := context.Background()
	if err := admin.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, chat.SlotCount-1).Err(); err != nil {
		t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		info, err := admin.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok after 10s: %v %s", err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { _ = cc.Close() })
	runConformance(t, func(t *testing.T, cfg buffer.Config) buffer.Store {
		if err := admin.FlushAll(ctx).Err(); err != nil {
			t.Fatalf("FLUSHALL: %v", err)
		}
		return buffer.NewRedis(cc, cfg)
	})
}

// commit commits b, failing the test on error.
func commit(t *testing.T, s buffer.Store, c chat.Conversation, fence int64, b buffer.Batch) {
	t.Helper()
	if _, err := s.Commit(context.Background(), c, fence, b.Token, uint64(b.Token)); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}
