// Package indexheap is a container/heap of entries that keep their own
// position in it, so that one can be fixed or removed where it stands:
// buffer's in-memory due index and cache's in-memory deadlines.
package indexheap

// Heap implements heap.Interface over Items, least first. pos returns the
// field where an entry keeps its position: Push and Swap set it, Pop sets
// it to -1, and heap.Fix or heap.Remove take it.
type Heap[T any] struct {
	Items []T
	less  func(a, b T) bool
	pos   func(T) *int
}

// New returns an empty Heap ordered by less.
func New[T any](less func(a, b T) bool, pos func(T) *int) *Heap[T] {
	return &Heap[T]{less: less, pos: pos}
}

func (h *Heap[T]) Len() int           { return len(h.Items) }
func (h *Heap[T]) Less(i, j int) bool { return h.less(h.Items[i], h.Items[j]) }

func (h *Heap[T]) Swap(i, j int) {
	h.Items[i], h.Items[j] = h.Items[j], h.Items[i]
	*h.pos(h.Items[i]), *h.pos(h.Items[j]) = i, j
}

func (h *Heap[T]) Push(x any) {
	e := x.(T)
	*h.pos(e) = len(h.Items)
	h.Items = append(h.Items, e)
}

func (h *Heap[T]) Pop() any {
	n := len(h.Items) - 1
	e := h.Items[n]
	var zero T
	h.Items[n] = zero
	h.Items = h.Items[:n]
	*h.pos(e) = -1
	return e
}
