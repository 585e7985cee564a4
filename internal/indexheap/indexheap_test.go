package indexheap_test

import (
	"container/heap"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/opencontext/chatbuf/internal/indexheap"
)

type entry struct {
	key, at int
}

// Entries keep their position through pushes, fixes and removals, and pop
// least first.
func TestPositionsFollowTheirEntries(t *testing.T) {
	h := indexheap.New(func(a, b *entry) bool { return a.key < b.key }, func(e *entry) *int { return &e.at })
	r := rand.New(rand.NewPCG(1, 2))
	var all []*entry
	for range 200 {
		e := &entry{key: r.IntN(1000)}
		heap.Push(h, e)
		all = append(all, e)
	}
	check := func(when string) {
		t.Helper()
		for i, e := range h.Items {
			if e.at != i {
				t.Fatalf("%s: entry with key %d at %d says %d", when, e.key, i, e.at)
			}
		}
	}
	check("after pushes")
	for _, e := range all[:50] {
		e.key = r.IntN(1000)
		heap.Fix(h, e.at)
	}
	check("after fixes")
	removed := all[50:100]
	for _, e := range removed {
		heap.Remove(h, e.at)
		if e.at != -1 {
			t.Fatalf("removed entry keeps position %d, want -1", e.at)
		}
	}
	check("after removals")
	var keys []int
	for h.Len() > 0 {
		keys = append(keys, heap.Pop(h).(*entry).key)
	}
	if len(keys) != 150 || !slices.IsSorted(keys) {
		t.Errorf("popped %d keys, sorted %v; want 150, sorted", len(keys), slices.IsSorted(keys))
	}
}
