package locking_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/clocktest"
	"github.com/opencontext/chatbuf/internal/redistest"
	"github.com/opencontext/chatbuf/locking"
)

var (
	alice = chat.Conversation{User: "alice", Device: "phone", Agent: "bot"}
	bob   = chat.Conversation{User: "bob", Device: "phone", Agent: "bot"}
)

// fixture is a Locker, its lock expiry and a way to let time pass.
type fixture struct {
	locker  locking.Locker
	expiry  time.Duration
	advance func(time.Duration) // let this much time pass for the locker
}

// expire lets the locks taken so far expire.
func (f fixture) expire() { f.advance(f.expiry + 50*time.Millisecond) }

func TestRedisLocker(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	// Long enough that an extension half way reaches Redis well before the
	// original expiry on a loaded machine.
	const expiry = 2 * time.Second
	runConformance(t, func(t *testing.T) fixture {
		if err := rdb.FlushAll(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		return fixture{
			locker:  locking.NewRedis(rdb, locking.Config{Expiry: expiry}),
			expiry:  expiry,
			advance: time.Sleep, // Redis expires keys on its own clock
		}
	})
}

func TestMemoryLocker(t *testing.T) {
	runConformance(t, func(t *testing.T) fixture {
		clock := clocktest.New(time.Now())
		const expiry = 10 * time.Second
		return fixture{
			locker:  locking.NewMemory(locking.Config{Expiry: expiry, Now: clock.Now}),
			expiry:  expiry,
			advance: clock.Advance,
		}
	})
}

func runConformance(t *testing.T, open func(t *testing.T) fixture) {
	ctx := context.Background()
	mustLock := func(t *testing.T, l locking.Locker, c chat.Conversation) locking.Lock {
		t.Helper()
		lk, err := l.TryLock(ctx, c)
		if err != nil {
			t.Fatalf("TryLock(%v): %v", c, err)
		}
		return lk
	}

	t.Run("one owner at a time, per conversation", func(t *testing.T) {
		f := open(t)
		a := mustLock(t, f.locker, alice)
		if _, err := f.locker.TryLock(ctx, alice); !errors.Is(err, locking.ErrBusy) {
			t.Errorf("second TryLock: %v, want ErrBusy", err)
		}
		b := mustLock(t, f.locker, bob)
		if err := a.Unlock(ctx); err != nil {
			t.Errorf("Unlock: %v", err)
		}
		a2 := mustLock(t, f.locker, alice)
		if a2.Fence() <= a.Fence() {
			t.Errorf("fence after relock = %d, want > %d", a2.Fence(), a.Fence())
		}
		if err := b.Unlock(ctx); err != nil {
			t.Errorf("Unlock bob: %v", err)
		}
		if err := a2.Unlock(ctx); err != nil {
			t.Errorf("Unlock a2: %v", err)
		}
	})

	t.Run("extension keeps the lock past its first expiry", func(t *testing.T) {
		f := open(t)
		a := mustLock(t, f.locker, alice)
		before := a.Until()
		f.advance(f.expiry / 2)
		if err := a.Extend(ctx); err != nil {
			t.Fatalf("Extend: %v", err)
		}
		if !a.Until().After(before) {
			t.Errorf("Until did not move on after Extend: %v -> %v", before, a.Until())
		}
		// Past the original expiry, within the extended one.
		f.advance(f.expiry * 3 / 4)
		if _, err := f.locker.TryLock(ctx, alice); !errors.Is(err, locking.ErrBusy) {
			t.Errorf("TryLock of an extended lock past its first expiry: %v, want ErrBusy", err)
		}
		if err := a.Extend(ctx); err != nil {
			t.Errorf("Extend past the first expiry: %v, want the lock still held", err)
		}
		if err := a.Unlock(ctx); err != nil {
			t.Errorf("Unlock: %v", err)
		}
	})

	t.Run("many locks in one go", func(t *testing.T) {
		f := open(t)
		ml, ok := f.locker.(locking.ManyLocker)
		if !ok {
			t.Fatalf("%T is not a ManyLocker", f.locker)
		}
		prev := mustLock(t, f.locker, alice) // alice's previous lock generation
		if err := prev.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		held := mustLock(t, f.locker, bob)
		locks, err := ml.TryLockMany(ctx, []chat.Conversation{alice, bob})
		if err != nil {
			t.Fatalf("TryLockMany: %v", err)
		}
		if locks[0] == nil || locks[1] != nil {
			t.Fatalf("TryLockMany = %v; want alice locked, bob busy", locks)
		}
		if locks[0].Fence() <= prev.Fence() {
			t.Errorf("alice's fence from TryLockMany %d, want > her previous lock's %d", locks[0].Fence(), prev.Fence())
		}
		if _, err := f.locker.TryLock(ctx, alice); !errors.Is(err, locking.ErrBusy) {
			t.Errorf("TryLock of a lock taken by TryLockMany: %v, want ErrBusy", err)
		}
		if err := locks[0].Extend(ctx); err != nil {
			t.Errorf("Extend of a lock taken by TryLockMany: %v", err)
		}
		if err := ml.UnlockMany(ctx, locks); err != nil {
			t.Errorf("UnlockMany: %v", err)
		}
		again := mustLock(t, f.locker, alice)
		if again.Fence() <= locks[0].Fence() {
			t.Errorf("fence after UnlockMany %d, want > %d", again.Fence(), locks[0].Fence())
		}
		_ = again.Unlock(ctx)
		_ = held.Unlock(ctx)
	})

	t.Run("an expired owner is replaced and cannot act", func(t *testing.T) {
		f := open(t)
		stale := mustLock(t, f.locker, alice)
		f.expire()
		fresh := mustLock(t, f.locker, alice)
		if fresh.Fence() <= stale.Fence() {
			t.Errorf("new owner's fence %d, want > stale %d", fresh.Fence(), stale.Fence())
		}
		if err := stale.Extend(ctx); !errors.Is(err, locking.ErrLost) {
			t.Errorf("stale Extend: %v, want ErrLost", err)
		}
		if err := stale.Unlock(ctx); !errors.Is(err, locking.ErrLost) {
			t.Errorf("stale Unlock: %v, want ErrLost", err)
		}
		// The stale owner's unlock did not release the new owner's lock.
		if _, err := f.locker.TryLock(ctx, alice); !errors.Is(err, locking.ErrBusy) {
			t.Errorf("TryLock after a stale unlock: %v, want ErrBusy", err)
		}
		if err := fresh.Unlock(ctx); err != nil {
			t.Errorf("fresh Unlock: %v", err)
		}
	})
}

func TestKeepAliveCancelsWhenLost(t *testing.T) {
	clock := clocktest.New(time.Now())
	l := locking.NewMemory(locking.Config{Expiry: time.Hour, Now: clock.Now})
	lk, err := l.TryLock(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := locking.KeepAlive(context.Background(), lk, time.Millisecond)
	defer stop()
	clock.Advance(2 * time.Hour) // the lock expires: the next extension fails
	select {
	case <-ctx.Done():
		if !errors.Is(context.Cause(ctx), locking.ErrLost) {
			t.Errorf("cause = %v, want ErrLost", context.Cause(ctx))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("KeepAlive did not cancel after the lock was lost")
	}
}

func TestRedisLockerUnreachable(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	srv.Stop()
	l := locking.NewRedis(rdb, locking.Config{})
	_, err := l.TryLock(context.Background(), alice)
	if err == nil || errors.Is(err, locking.ErrBusy) {
		t.Errorf("TryLock with Redis down: %v, want a connection error (not ErrBusy)", err)
	}
}

// The many-lock scripts survive a server that lost its script cache
// (restart, SCRIPT FLUSH) between lock and unlock.
func TestRedisManyAfterScriptFlush(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	l := locking.NewRedis(rdb, locking.Config{})
	cs := []chat.Conversation{alice, {User: "bob", Device: "d", Agent: "a"}}
	for round := range 2 {
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		locks, err := l.TryLockMany(ctx, cs)
		if err != nil || locks[0] == nil || locks[1] == nil {
			t.Fatalf("round %d: TryLockMany: %v, %v", round, locks, err)
		}
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := l.UnlockMany(ctx, locks); err != nil {
			t.Fatalf("round %d: UnlockMany after SCRIPT FLUSH: %v", round, err)
		}
		if n, err := rdb.Exists(ctx, chat.NewKeys("").Lock(alice)).Result(); err != nil || n != 0 {
			t.Fatalf("round %d: lock key still there (%d, %v)", round, n, err)
		}
	}
}

// TestUntilIsOnTheRealClock: work under a lock runs with a context whose
// deadline is Until, so Until is on the real clock even where the locker's
// clock is injected (as in tests) and far from it; a lock taken with a clock
// in the past must not look expired, one in the future not eternal.
func TestUntilIsOnTheRealClock(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	const expiry = 5 * time.Second
	for _, at := range []time.Time{time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)} {
		clock := clocktest.New(at)
		cfg := locking.Config{Expiry: expiry, Now: clock.Now}
		for name, l := range map[string]locking.ManyLocker{"redis": locking.NewRedis(rdb, cfg), "memory": locking.NewMemory(cfg)} {
			one, err := l.TryLock(ctx, alice)
			if err != nil {
				t.Fatalf("%s, clock at %v: TryLock: %v", name, at.Year(), err)
			}
			many, err := l.TryLockMany(ctx, []chat.Conversation{bob})
			if err != nil || many[0] == nil {
				t.Fatalf("%s, clock at %v: TryLockMany: %v, %v", name, at.Year(), many, err)
			}
			for what, lk := range map[string]locking.Lock{"TryLock": one, "TryLockMany": many[0]} {
				if left := time.Until(lk.Until()); left <= 0 || left > expiry {
					t.Errorf("%s, clock at %v: a lock from %s is good for %v of real time, want (0, %v]", name, at.Year(), what, left, expiry)
				}
			}
			if err := l.UnlockMany(ctx, []locking.Lock{one, many[0]}); err != nil {
				t.Errorf("%s: UnlockMany: %v", name, err)
			}
		}
	}
}

// The memory locker forgets conversations whose lock expired and whose
// fence the clock has passed, a few on each TryLock: its maps hold recently
// locked conversations, not every conversation ever locked. Fences stay
// increasing across the forgetting.
func TestMemoryLockerForgetsIdleConversations(t *testing.T) {
	ctx := context.Background()
	clock := clocktest.New(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
	const expiry = 10 * time.Second
	m := locking.NewMemory(locking.Config{Expiry: expiry, Now: clock.Now})
	const n = 400
	conv := func(i int) chat.Conversation {
		return chat.Conversation{User: fmt.Sprintf("u%d", i), Device: "d", Agent: "a"}
	}
	var first int64
	for i := range n {
		l, err := m.TryLock(ctx, conv(i))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = l.Fence()
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Size(); got != n {
		t.Fatalf("%d conversations kept right after locking %d", got, n)
	}
	clock.Advance(expiry + time.Second)
	probe := chat.Conversation{User: "probe", Device: "d", Agent: "a"}
	for range n {
		l, err := m.TryLock(ctx, probe)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Size(); got != 1 {
		t.Errorf("%d conversations kept after their locks expired and %d more locks; want 1 (the one locked since)", got, n)
	}
	l, err := m.TryLock(ctx, conv(0))
	if err != nil {
		t.Fatal(err)
	}
	if l.Fence() <= first {
		t.Errorf("fence after being forgotten %d, want > %d", l.Fence(), first)
	}
}
