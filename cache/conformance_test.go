package cache

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// harness returns a fresh, empty cache for one subtest and a function that
// lets time pass for it (a fake clock, or a real sleep for Redis).
type harness func(t *testing.T) (c Cache, advance func(time.Duration))

// testConformance is the one suite every Cache implementation must pass.
func testConformance(t *testing.T, h harness) {
	t.Run("strings", func(t *testing.T) { testStrings(t, h) })
	t.Run("set options", func(t *testing.T) { testSetOptions(t, h) })
	t.Run("expiry on every type", func(t *testing.T) { testExpiry(t, h) })
	t.Run("ttl", func(t *testing.T) { testTTL(t, h) })
	t.Run("json", func(t *testing.T) { testJSON(t, h) })
	t.Run("lists", func(t *testing.T) { testLists(t, h) })
	t.Run("list ranges", func(t *testing.T) { testListRanges(t, h) })
	t.Run("hashes", func(t *testing.T) { testHashes(t, h) })
	t.Run("sets", func(t *testing.T) { testSets(t, h) })
	t.Run("counters", func(t *testing.T) { testCounters(t, h) })
	t.Run("wrong type", func(t *testing.T) { testWrongType(t, h) })
	t.Run("lock", func(t *testing.T) { testLock(t, h) })
	t.Run("lock expiry", func(t *testing.T) { testLockExpiry(t, h) })
}

func must[T any](t *testing.T) func(T, error) T {
	t.Helper()
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
}

func testStrings(t *testing.T, h harness) {
	ctx := t.Context()
	c, _ := h(t)
	_, err := c.Get(ctx, "k")
	wantErr(t, err, ErrMiss)
	if !must[bool](t)(c.Set(ctx, "k", "v1", SetOptions{})) {
		t.Fatal("plain Set reported no write")
	}
	if got := must[string](t)(c.Get(ctx, "k")); got != "v1" {
		t.Fatalf("Get = %q, want v1", got)
	}
	if !must[bool](t)(c.Exists(ctx, "k")) {
		t.Fatal("Exists = false after Set")
	}
	must[bool](t)(c.Set(ctx, "k2", "x", SetOptions{}))
	if n := must[int64](t)(c.Delete(ctx, "k", "k2", "absent")); n != 2 {
		t.Fatalf("Delete = %d, want 2", n)
	}
	if must[bool](t)(c.Exists(ctx, "k")) {
		t.Fatal("Exists = true after Delete")
	}
	if n := must[int64](t)(c.Delete(ctx)); n != 0 {
		t.Fatalf("Delete() = %d, want 0", n)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testSetOptions(t *testing.T, h harness) {
	tests := []struct {
		name      string
		existing  bool
		opts      SetOptions
		wantOK    bool
		wantValue string // "" means the key must be absent
		wantErr   error
	}{
		{name: "plain on absent", opts: SetOptions{}, wantOK: true, wantValue: "new"},
		{name: "plain on existing", existing: true, wantOK: true, wantValue: "new"},
		{name: "nx on absent", opts: SetOptions{NX: true}, wantOK: true, wantValue: "new"},
		{name: "nx on existing", existing: true, opts: SetOptions{NX: true}, wantOK: false, wantValue: "old"},
		{name: "xx on absent", opts: SetOptions{XX: true}, wantOK: false},
		{name: "xx on existing", existing: true, opts: SetOptions{XX: true}, wantOK: true, wantValue: "new"},
		{name: "nx and xx", opts: SetOptions{NX: true, XX: true}, wantErr: ErrInvalid},
		{name: "negative ttl", opts: SetOptions{TTL: -time.Second}, wantErr: ErrInvalid},
		{name: "sub-millisecond ttl", opts: SetOptions{TTL: time.Microsecond}, wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			c, _ := h(t)
			if tt.existing {
				must[bool](t)(c.Set(ctx, "k", "old", SetOptions{}))
			}
			ok, err := c.Set(ctx, "k", "new", tt.opts)
			if tt.wantErr != nil {
				wantErr(t, err, tt.wantErr)
				return
			}
			if err != nil || ok != tt.wantOK {
				t.Fatalf("Set = %v, %v; want %v, nil", ok, err, tt.wantOK)
			}
			got, err := c.Get(ctx, "k")
			if tt.wantValue == "" {
				wantErr(t, err, ErrMiss)
				return
			}
			if err != nil || got != tt.wantValue {
				t.Fatalf("Get = %q, %v; want %q", got, err, tt.wantValue)
			}
		})
	}
}

// kinds creates a key of each type and tells whether it can still be seen.
var kinds = []struct {
	name    string
	create  func(context.Context, Cache, string) error
	visible func(context.Context, Cache, string) (bool, error)
}{
	{
		name: "string",
		create: func(ctx context.Context, c Cache, k string) error {
			_, err := c.Set(ctx, k, "v", SetOptions{})
			return err
		},
		visible: func(ctx context.Context, c Cache, k string) (bool, error) {
			_, err := c.Get(ctx, k)
			if errors.Is(err, ErrMiss) {
				return false, nil
			}
			return err == nil, err
		},
	},
	{
		name: "list",
		create: func(ctx context.Context, c Cache, k string) error {
			_, err := c.RPush(ctx, k, "a", "b")
			return err
		},
		visible: func(ctx context.Context, c Cache, k string) (bool, error) {
			n, err := c.LLen(ctx, k)
			return n > 0, err
		},
	},
	{
		name: "hash",
		create: func(ctx context.Context, c Cache, k string) error {
			return c.HMSet(ctx, k, map[string]string{"f": "v"})
		},
		visible: func(ctx context.Context, c Cache, k string) (bool, error) {
			m, err := c.HGetAll(ctx, k)
			return len(m) > 0, err
		},
	},
	{
		name: "set",
		create: func(ctx context.Context, c Cache, k string) error {
			_, err := c.SAdd(ctx, k, "m")
			return err
		},
		visible: func(ctx context.Context, c Cache, k string) (bool, error) {
			m, err := c.SMembers(ctx, k)
			return len(m) > 0, err
		},
	},
}

func testExpiry(t *testing.T, h harness) {
	for _, kd := range kinds {
		t.Run(kd.name, func(t *testing.T) {
			ctx := t.Context()
			c, advance := h(t)
			if err := kd.create(ctx, c, "short"); err != nil {
				t.Fatal(err)
			}
			if err := kd.create(ctx, c, "long"); err != nil {
				t.Fatal(err)
			}
			if !must[bool](t)(c.Expire(ctx, "short", 50*time.Millisecond)) {
				t.Fatal("Expire on an existing key = false")
			}
			must[bool](t)(c.Expire(ctx, "long", time.Hour))
			advance(70 * time.Millisecond)
			if must[bool](t)(c.Exists(ctx, "short")) {
				t.Fatal("Exists = true after the TTL")
			}
			if must[bool](t)(kd.visible(ctx, c, "short")) {
				t.Fatal("expired key still readable")
			}
			if !must[bool](t)(kd.visible(ctx, c, "long")) {
				t.Fatal("unexpired key lost")
			}
		})
	}
}

func testTTL(t *testing.T, h harness) {
	ctx := t.Context()
	c, _ := h(t)
	_, err := c.TTL(ctx, "absent")
	wantErr(t, err, ErrMiss)
	if must[bool](t)(c.Expire(ctx, "absent", time.Second)) {
		t.Fatal("Expire on an absent key = true")
	}
	_, err = c.Expire(ctx, "absent", 0)
	wantErr(t, err, ErrInvalid)

	must[bool](t)(c.Set(ctx, "k", "v", SetOptions{TTL: 10 * time.Second}))
	if d := must[time.Duration](t)(c.TTL(ctx, "k")); d <= 9*time.Second || d > 10*time.Second {
		t.Fatalf("TTL = %v, want in (9s, 10s]", d)
	}
	must[bool](t)(c.Set(ctx, "k", "v2", SetOptions{}))
	if d := must[time.Duration](t)(c.TTL(ctx, "k")); d != NoTTL {
		t.Fatalf("TTL after a plain Set = %v, want NoTTL", d)
	}
	must[int64](t)(c.RPush(ctx, "list", "a"))
	must[bool](t)(c.Expire(ctx, "list", time.Minute))
	if d := must[time.Duration](t)(c.TTL(ctx, "list")); d <= 59*time.Second || d > time.Minute {
		t.Fatalf("list TTL = %v, want in (59s, 1m]", d)
	}
	must[int64](t)(c.RPush(ctx, "list", "b"))
	if d := must[time.Duration](t)(c.TTL(ctx, "list")); d <= 0 {
		t.Fatalf("push cleared the list TTL: %v", d)
	}
}

func testJSON(t *testing.T, h harness) {
	ctx := t.Context()
	c, _ := h(t)
	type doc struct {
		Name string            `json:"name"`
		N    int64             `json:"n"`
		Tags []string          `json:"tags"`
		Meta map[string]string `json:"meta"`
	}
	want := doc{Name: "x", N: 1 << 60, Tags: []string{"a", "b"}, Meta: map[string]string{"k": "v"}}
	must[bool](t)(c.SetJSON(ctx, "doc", want, SetOptions{}))
	var got doc
	if err := c.GetJSON(ctx, "doc", &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("GetJSON (-want +got):\n%s", diff)
	}
	wantErr(t, c.GetJSON(ctx, "absent", &got), ErrMiss)
	must[bool](t)(c.Set(ctx, "bad", "{not json", SetOptions{}))
	if err := c.GetJSON(ctx, "bad", &got); err == nil || errors.Is(err, ErrMiss) {
		t.Fatalf("GetJSON of bad JSON = %v, want a decode error", err)
	}
	if _, err := c.SetJSON(ctx, "ch", make(chan int), SetOptions{}); err == nil {
		t.Fatal("SetJSON of a channel succeeded")
	}
}

func testLists(t *testing.T, h harness) {
	ctx := t.Context()
	c, _ := h(t)
	_, err := c.LPop(ctx, "l")
	wantErr(t, err, ErrMiss)
	if n := must[int64](t)(c.RPush(ctx, "l", "a", "b", "c")); n != 3 {
		t.Fatalf("RPush = %d", n)
	}
	if n := must[int64](t)(c.LPush(ctx, "l", "x", "y")); n != 5 {
		t.Fatalf("LPush = %d", n)
	}
	if n := must[int64](t)(c.LPush(ctx, "l")); n != 5 {
		t.Fatalf("LPush of nothing = %d, want the length 5", n)
	}
	want := []string{"y", "x", "a", "b", "c"}
	if diff := cmp.Diff(want, must[[]string](t)(c.LRange(ctx, "l", 0, -1))); diff != "" {
		t.Fatalf("LRange (-want +got):\n%s", diff)
	}
	if v := must[string](t)(c.LPop(ctx, "l")); v != "y" {
		t.Fatalf("LPop = %q", v)
	}
	if v := must[string](t)(c.RPop(ctx, "l")); v != "c" {
		t.Fatalf("RPop = %q", v)
	}
	if err := c.LTrim(ctx, "l", 1, -1); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a", "b"}, must[[]string](t)(c.LRange(ctx, "l", 0, -1))); diff != "" {
		t.Fatalf("after LTrim (-want +got):\n%s", diff)
	}
	if n := must[int64](t)(c.LLen(ctx, "l")); n != 2 {
		t.Fatalf("LLen = %d", n)
	}
	if err := c.LTrim(ctx, "l", 5, 10); err != nil {
		t.Fatal(err)
	}
	if must[bool](t)(c.Exists(ctx, "l")) {
		t.Fatal("a list trimmed to nothing still exists")
	}
	must[int64](t)(c.RPush(ctx, "p", "only"))
	must[string](t)(c.RPop(ctx, "p"))
	if must[bool](t)(c.Exists(ctx, "p")) {
		t.Fatal("a list popped empty still exists")
	}
	if n := must[int64](t)(c.LLen(ctx, "absent")); n != 0 {
		t.Fatalf("LLen of absent = %d", n)
	}
}

func testListRanges(t *testing.T, h harness) {
	ctx := t.Context()
	c, _ := h(t)
	must[int64](t)(c.RPush(ctx, "l", "0", "1", "2", "3", "4"))
	tests := []struct {
		name        string
		start, stop int64
		want        []string
	}{
		{name: "all", start: 0, stop: -1, want: []string{"0", "1", "2", "3", "4"}},
		{name: "middle", start: 1, stop: 2, want: []string{"1", "2"}},
		{name: "negative", start: -2, stop: -1, want: []string{"3", "4"}},
		{name: "clamped", start: -100, stop: 100, want: []string{"0", "1", "2", "3", "4"}},
		{name: "past the end", start: 5, stop: 10, want: []string{}},
		{name: "reversed", start: 3, stop: 1, want: []string{}},
		{name: "stop before start of list", start: 0, stop: -6, want: []string{}},
		{name: "single", start: -1, stop: -1, want: []string{"4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := must[[]string](t)(c.LRange(ctx, "l", tt.start, tt.stop))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("LRange(%d, %d) (-want +got):\n%s", tt.start, tt.stop, diff)
			}
		})
	}
	if diff := cmp.Diff([]string{}, must[[]string](t)(c.LRange(ctx, "absent", 0, -1))); diff != "" {
		t.Fatalf("LRange of absent (-want +got):\n%s", diff)
	}
}

func testHashes(t *testing.T, h harness) {
	ctx := t.Context()
	c, _ := h(t)
	_, err := c.HGet(ctx, "h", "f")
	wantErr(t, err, ErrMiss)
	if !must[bool](t)(c.HSet(ctx, "h", "f", "1")) {
		t.Fatal("HSet of a new field = false")
	}
	if must[bool](t)(c.HSet(ctx, "h", "f", "2")) {
		t.Fatal("HSet of an existing field = true")
	}
	if err := c.HMSet(ctx, "h", map[string]string{"g": "3", "h": "4"}); err != nil {
		t.Fatal(err)
	}
	if err := c.HMSet(ctx, "h", nil); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"f": "2", "g": "3", "h": "4"}
	if diff := cmp.Diff(want, must[map[string]string](t)(c.HGetAll(ctx, "h"))); diff != "" {
		t.Fatalf("HGetAll (-want +got):\n%s", diff)
	}
	if v := must[string](t)(c.HGet(ctx, "h", "g")); v != "3" {
		t.Fatalf("HGet = %q", v)
	}
	_, err = c.HGet(ctx, "h", "absent")
	wantErr(t, err, ErrMiss)
	if n := must[int64](t)(c.HDel(ctx, "h", "f", "g", "absent")); n != 2 {
		t.Fatalf("HDel = %d", n)
	}
	must[int64](t)(c.HDel(ctx, "h", "h"))
	if must[bool](t)(c.Exists(ctx, "h")) {
		t.Fatal("an emptied hash still exists")
	}
	if diff := cmp.Diff(map[string]string{}, must[map[string]string](t)(c.HGetAll(ctx, "h"))); diff != "" {
		t.Fatalf("HGetAll of absent (-want +got):\n%s", diff)
	}
}

func testSets(t *testing.T, h harness) {
	ctx := t.Context()
	c, _ := h(t)
	if n := must[int64](t)(c.SAdd(ctx, "s", "a", "b", "a")); n != 2 {
		t.Fatalf("SAdd = %d", n)
	}
	if n := must[int64](t)(c.SAdd(ctx, "s", "b", "c")); n != 1 {
		t.Fatalf("SAdd = %d", n)
	}
	if !must[bool](t)(c.SIsMember(ctx, "s", "c")) || must[bool](t)(c.SIsMember(ctx, "s", "z")) {
		t.Fatal("SIsMember is wrong")
	}
	got := must[[]string](t)(c.SMembers(ctx, "s"))
	slices.Sort(got)
	if diff := cmp.Diff([]string{"a", "b", "c"}, got); diff != "" {
		t.Fatalf("SMembers (-want +got):\n%s", diff)
	}
	if n := must[int64](t)(c.SRem(ctx, "s", "a", "b", "c", "z")); n != 3 {
		t.Fatalf("SRem = %d", n)
	}
	if must[bool](t)(c.Exists(ctx, "s")) {
		t.Fatal("an emptied set still exists")
	}
	if must[bool](t)(c.SIsMember(ctx, "absent", "a")) {
		t.Fatal("SIsMember of absent = true")
	}
}

func testCounters(t *testing.T, h harness) {
	ctx := t.Context()
	c, _ := h(t)
	if v := must[int64](t)(c.Incr(ctx, "n", 5)); v != 5 {
		t.Fatalf("Incr = %d", v)
	}
	if v := must[int64](t)(c.Decr(ctx, "n", 7)); v != -2 {
		t.Fatalf("Decr = %d", v)
	}
	if v := must[string](t)(c.Get(ctx, "n")); v != "-2" {
		t.Fatalf("Get = %q", v)
	}
	must[bool](t)(c.Expire(ctx, "n", time.Minute))
	must[int64](t)(c.Incr(ctx, "n", 1))
	if d := must[time.Duration](t)(c.TTL(ctx, "n")); d <= 0 {
		t.Fatalf("Incr cleared the TTL: %v", d)
	}

	for _, tt := range []struct{ name, value string }{
		{"text", "abc"},
		{"leading zero", "01"},
		{"plus sign", "+1"},
		{"space", " 1"},
		{"float", "1.5"},
		{"overflow", "9223372036854775807"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			must[bool](t)(c.Set(ctx, "bad", tt.value, SetOptions{}))
			_, err := c.Incr(ctx, "bad", 1)
			wantErr(t, err, ErrNotInteger)
			if v := must[string](t)(c.Get(ctx, "bad")); v != tt.value {
				t.Fatalf("a failed Incr changed the value to %q", v)
			}
		})
	}

	old, existed, err := c.GetSet(ctx, "gs", "first")
	if err != nil || existed || old != "" {
		t.Fatalf("GetSet on absent = %q, %v, %v", old, existed, err)
	}
	must[bool](t)(c.Expire(ctx, "gs", time.Minute))
	old, existed, err = c.GetSet(ctx, "gs", "second")
	if err != nil || !existed || old != "first" {
		t.Fatalf("GetSet = %q, %v, %v; want first, true", old, existed, err)
	}
	if v := must[string](t)(c.Get(ctx, "gs")); v != "second" {
		t.Fatalf("Get after GetSet = %q", v)
	}
	if d := must[time.Duration](t)(c.TTL(ctx, "gs")); d != NoTTL {
		t.Fatalf("TTL after GetSet = %v, want NoTTL", d)
	}
}

func testWrongType(t *testing.T, h harness) {
	ops := []struct {
		name string
		on   string // the kind of key the op is wrong for
		op   func(context.Context, Cache, string) error
	}{
		{"Get", "list", func(ctx context.Context, c Cache, k string) error { _, err := c.Get(ctx, k); return err }},
		{"GetSet", "hash", func(ctx context.Context, c Cache, k string) error { _, _, err := c.GetSet(ctx, k, "v"); return err }},
		{"Incr", "set", func(ctx context.Context, c Cache, k string) error { _, err := c.Incr(ctx, k, 1); return err }},
		{"LPush", "string", func(ctx context.Context, c Cache, k string) error { _, err := c.LPush(ctx, k, "v"); return err }},
		{"RPop", "hash", func(ctx context.Context, c Cache, k string) error { _, err := c.RPop(ctx, k); return err }},
		{"LRange", "string", func(ctx context.Context, c Cache, k string) error { _, err := c.LRange(ctx, k, 0, -1); return err }},
		{"LLen", "set", func(ctx context.Context, c Cache, k string) error { _, err := c.LLen(ctx, k); return err }},
		{"HGet", "list", func(ctx context.Context, c Cache, k string) error { _, err := c.HGet(ctx, k, "f"); return err }},
		{"HSet", "string", func(ctx context.Context, c Cache, k string) error { _, err := c.HSet(ctx, k, "f", "v"); return err }},
		{"HGetAll", "set", func(ctx context.Context, c Cache, k string) error { _, err := c.HGetAll(ctx, k); return err }},
		{"SAdd", "hash", func(ctx context.Context, c Cache, k string) error { _, err := c.SAdd(ctx, k, "m"); return err }},
		{"SMembers", "list", func(ctx context.Context, c Cache, k string) error { _, err := c.SMembers(ctx, k); return err }},
		{"SIsMember", "string", func(ctx context.Context, c Cache, k string) error { _, err := c.SIsMember(ctx, k, "m"); return err }},
	}
	ctx := t.Context()
	c, _ := h(t)
	for _, kd := range kinds {
		if err := kd.create(ctx, c, kd.name); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range ops {
		t.Run(tt.name+" on "+tt.on, func(t *testing.T) {
			err := tt.op(ctx, c, tt.on)
			wantErr(t, err, ErrWrongType)
			if errors.Is(err, ErrMiss) || errors.Is(err, ErrUnavailable) {
				t.Fatalf("WRONGTYPE also reads as a miss or an outage: %v", err)
			}
		})
	}
	// Set replaces a value of any type.
	must[bool](t)(c.Set(ctx, "list", "now a string", SetOptions{}))
	if v := must[string](t)(c.Get(ctx, "list")); v != "now a string" {
		t.Fatalf("Get = %q", v)
	}
}

func testLock(t *testing.T, h harness) {
	ctx := t.Context()
	c, _ := h(t)
	if !must[bool](t)(c.TryLock(ctx, "job", "alice", time.Minute)) {
		t.Fatal("TryLock on a free lock = false")
	}
	if must[bool](t)(c.TryLock(ctx, "job", "bob", time.Minute)) {
		t.Fatal("TryLock on a held lock = true")
	}
	if must[bool](t)(c.Unlock(ctx, "job", "bob")) {
		t.Fatal("Unlock by a non-owner = true")
	}
	if !must[bool](t)(c.Unlock(ctx, "job", "alice")) {
		t.Fatal("Unlock by the owner = false")
	}
	_, err := c.TryLock(ctx, "job", "bob", 0)
	wantErr(t, err, ErrInvalid)

	l1, err := Acquire(ctx, c, "job", LockOptions{Expiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(ctx, c, "job", LockOptions{Wait: 30 * time.Millisecond, RetryInterval: 5 * time.Millisecond})
	wantErr(t, err, ErrLockHeld)

	// A waiter gets the lock once it is released.
	var wg sync.WaitGroup
	var l2 *Lock
	var err2 error
	wg.Go(func() {
		l2, err2 = Acquire(ctx, c, "job", LockOptions{Wait: 10 * time.Second, RetryInterval: 5 * time.Millisecond})
	})
	time.Sleep(20 * time.Millisecond) // let the waiter find the lock held
	if err := l1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err2 != nil {
		t.Fatalf("waiter: %v", err2)
	}
	if err := l2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wantErr(t, l2.Release(ctx), ErrNotOwner)
}

func testLockExpiry(t *testing.T, h harness) {
	ctx := t.Context()
	c, advance := h(t)
	l1, err := Acquire(ctx, c, "job", LockOptions{Expiry: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	advance(70 * time.Millisecond)
	l2, err := Acquire(ctx, c, "job", LockOptions{Expiry: time.Minute})
	if err != nil {
		t.Fatalf("an expired lock was not free: %v", err)
	}
	wantErr(t, l1.Release(ctx), ErrNotOwner)
	if err := l2.Release(ctx); err != nil {
		t.Fatalf("the new owner's release failed after the old owner's: %v", err)
	}
}
