package worker

import (
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// queue is a lane's inbox. The consume loop never blocks on it, so every
// delivered message reaches the worker at once, where keepAlive covers it
// while it waits behind a slow append; the consumer's MaxAckPending bounds
// how many can wait.
type queue struct {
	mu     sync.Mutex
	msgs   []jetstream.Msg
	closed bool
	ready  chan struct{} // a token while msgs is non-empty or closed
}

func newQueue() *queue { return &queue{ready: make(chan struct{}, 1)} }

func (q *queue) push(m jetstream.Msg) {
	q.mu.Lock()
	q.msgs = append(q.msgs, m)
	q.mu.Unlock()
	q.signal()
}

// close lets take return what is left, then nil.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

func (q *queue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take waits until messages are queued and moves up to n of them into
// buf[:0]; it returns nil once the queue is closed and empty.
func (q *queue) take(n int, buf []jetstream.Msg) []jetstream.Msg {
	for {
		q.mu.Lock()
		if len(q.msgs) > 0 {
			k := min(n, len(q.msgs))
			buf = append(buf[:0], q.msgs[:k]...)
			clear(q.msgs[:k])
			q.msgs = q.msgs[k:]
			if len(q.msgs) == 0 {
				q.msgs = nil // let the backing array go after a burst
			}
			more := len(q.msgs) > 0 || q.closed
			q.mu.Unlock()
			if more {
				q.signal()
			}
			return buf
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil
		}
		<-q.ready
	}
}
