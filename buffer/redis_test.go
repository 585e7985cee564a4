package buffer_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/redistest"
)

// Every key has a TTL or a bound, except what holds a batch in flight: its
// messages were acked, so it lives until the batch is published (or
// dead-lettered), and the meta hash that holds its token with it.
func TestRedisKeysHaveTTLOrBound(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	s := buffer.NewRedis(rdb, buffer.Config{})
	now := time.Now()
	fill(t, s, alice, 1, 5, now)
	b, err := s.Claim(ctx, alice, 1, buffer.ClaimOptions{Max: 3, Min: 3, Reason: chat.TriggerSize})
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	k := chat.NewKeys("")
	check := func(when string, want map[string]string) {
		t.Helper()
		keys, err := rdb.Keys(ctx, "*").Result()
		if err != nil {
			t.Fatalf("KEYS: %v", err)
		}
		for _, key := range keys {
			kind, ok := want[key]
			if !ok {
				t.Errorf("%s: unexpected key %q", when, key)
				continue
			}
			delete(want, key)
			ttl := rdb.PTTL(ctx, key).Val()
			switch kind {
			case "bounded": // one member per conversation with pending messages
			case "no ttl":
				if ttl != -1 {
					t.Errorf("%s: key %q has PTTL %v, want none while its batch is in flight", when, key, ttl)
				}
			case "ttl":
				if ttl <= 0 {
					t.Errorf("%s: key %q has no TTL (PTTL %v)", when, key, ttl)
				}
			}
		}
		for key := range want {
			t.Errorf("%s: key %q missing", when, key)
		}
	}
	check("batch in flight", map[string]string{k.Buffer(alice): "ttl", k.Inflight(alice): "no ttl", k.Meta(alice): "no ttl",
		k.Dedupe(alice): "ttl", k.Due(): "bounded"})
	if _, err := s.Commit(ctx, alice, 1, b.Token, 7); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	check("batch committed", map[string]string{k.Buffer(alice): "ttl", k.Meta(alice): "ttl", k.Dedupe(alice): "ttl", k.Due(): "bounded"})
}

func TestRedisScriptCacheLoss(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	s := buffer.NewRedis(rdb, buffer.Config{})
	fill(t, s, alice, 1, 2, time.Now())
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	got := mustAppend(t, s, item(alice, 3, "", time.Now()), item(bob, 4, "", time.Now()))
	if got[0].Len != 3 || got[1].Len != 1 || got[0].Dup || got[1].Dup {
		t.Errorf("AppendBatch after SCRIPT FLUSH = %+v; want lengths 3 and 1", got)
	}
}

func TestRedisRefusalIsPerConversation(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	s := buffer.NewRedis(rdb, buffer.Config{})
	// A key of the wrong type where bob's buffer belongs.
	if err := rdb.Set(ctx, chat.NewKeys("").Buffer(bob), "not a list", 0).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := s.AppendBatch(ctx, []buffer.Item{item(alice, 1, "", time.Now()), item(bob, 2, "", time.Now()), item(alice, 3, "", time.Now())})
	if err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	if res[0].Err != nil || res[2].Err != nil || res[2].Len != 2 {
		t.Errorf("alice's items = %+v, %+v; want appended, length 2", res[0], res[2])
	}
	if res[1].Err == nil || !strings.Contains(res[1].Err.Error(), "WRONGTYPE") {
		t.Errorf("bob's item error = %v, want WRONGTYPE", res[1].Err)
	}
	// The refused message was not seen: once the key is gone, the same
	// message (a redelivery or a redriven dead letter) is appended, not
	// taken for a duplicate.
	if err := rdb.Del(ctx, chat.NewKeys("").Buffer(bob)).Err(); err != nil {
		t.Fatal(err)
	}
	again := mustAppend(t, s, item(bob, 2, "", time.Now()))
	if again[0].Dup || again[0].Len != 1 {
		t.Errorf("bob's refused message appended again = %+v; want appended, length 1", again[0])
	}
}

func TestRedisRestartKeepsBuffers(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	s := buffer.NewRedis(rdb, buffer.Config{})
	fill(t, s, alice, 1, 4, time.Now())
	srv.Shutdown()
	if _, err := s.Len(ctx, alice); err == nil {
		t.Fatal("Len with Redis down succeeded")
	}
	srv.Restart()
	if n, err := s.Len(ctx, alice); err != nil || n != 4 {
		t.Fatalf("Len after restart = %d, %v; want 4", n, err)
	}
	b, err := s.Claim(ctx, alice, 1, buffer.ClaimOptions{Max: 10, Min: 1, Reason: chat.TriggerManual})
	if err != nil || len(b.Records) != 4 {
		t.Fatalf("Claim after restart = %d records, %v; want 4", len(b.Records), err)
	}
}

// With WaitReplicas, an append reports success only once a replica has it.
func TestRedisWaitReplicas(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port))
	ctx := context.Background()
	rc := replica.Client(t)
	for deadline := time.Now().Add(10 * time.Second); ; {
		info, _ := rc.Info(ctx, "replication").Result()
		if strings.Contains(info, "master_link_status:up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica not linked after 10s:\n%s", info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := buffer.NewRedis(primary.Client(t), buffer.Config{WaitReplicas: 1, WaitTimeout: 300 * time.Millisecond})
	if _, err := s.AppendBatch(ctx, []buffer.Item{item(alice, 1, "", time.Now())}); err != nil {
		t.Fatalf("AppendBatch with a live replica: %v", err)
	}
	if n, err := rc.LLen(ctx, chat.NewKeys("").Buffer(alice)).Result(); err != nil || n != 1 {
		t.Errorf("replica's buffer length = %d, %v; want 1 as soon as the append returned", n, err)
	}
	replica.Stop()
	if _, err := s.AppendBatch(ctx, []buffer.Item{item(alice, 2, "", time.Now())}); err == nil || !strings.Contains(err.Error(), "replicas acknowledged") {
		t.Errorf("AppendBatch without a replica: %v, want a replicas error", err)
	}
}

// A buffer and its dedupe keys live at least CHAT_BUFFER_TTL and the dedupe
// window after each append, but an append renews a TTL only once it fell
// below that: back-to-back appends write no PEXPIRE (under persistence each
// write is appended to the AOF).
func TestRedisAppendRenewsTTLsOnlyWhenLow(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	const ttl, window = 2 * time.Second, 3 * time.Second
	s := buffer.NewRedis(rdb, buffer.Config{TTL: ttl, DedupeWindow: window})
	k := chat.NewKeys("")
	pexpires := func() int {
		t.Helper()
		info, err := rdb.Info(ctx, "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(info, "\n") {
			if rest, ok := strings.CutPrefix(line, "cmdstat_pexpire:calls="); ok {
				n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
				return n
			}
		}
		return 0
	}
	atLeast := func(when string, key string, min time.Duration) {
		t.Helper()
		if got := rdb.PTTL(ctx, key).Val(); got < min || got > min+min/8 {
			t.Errorf("%s: PTTL(%s) = %v, want between %v and %v", when, key, got, min, min+min/8)
		}
	}
	fill(t, s, alice, 1, 1, time.Now())
	atLeast("after the first append", k.Buffer(alice), ttl)
	atLeast("after the first append", k.Dedupe(alice), window)
	before := pexpires()
	fill(t, s, alice, 2, 3, time.Now())
	if n := pexpires() - before; n != 0 {
		t.Errorf("back-to-back append wrote %d PEXPIREs, want 0", n)
	}
	time.Sleep(max(ttl, window)/8 + 100*time.Millisecond) // both TTLs fall below their floor
	fill(t, s, alice, 4, 4, time.Now())
	if n := pexpires() - before; n != 2 {
		t.Errorf("append after the TTLs fell below their floor wrote %d PEXPIREs, want 2", n)
	}
	atLeast("after the renewing append", k.Buffer(alice), ttl)
	atLeast("after the renewing append", k.Dedupe(alice), window)
}
