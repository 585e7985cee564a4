package worker

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// laneQueue is one lane's queue of delivered messages. The consume loop
// never blocks on it, so every delivered message reaches the worker at once,
// where keepAlive covers it while it waits behind a slow append; the
// consumer's MaxAckPending bounds how many can wait.
type laneQueue struct {
	mu     sync.Mutex
	msgs   []jetstream.Msg
	closed bool
	ready  chan struct{} // a token while msgs is non-empty or closed
}

func newLaneQueue() *laneQueue { return &laneQueue{ready: make(chan struct{}, 1)} }

func (q *laneQueue) push(m jetstream.Msg) {
	q.mu.Lock()
	q.msgs = append(q.msgs, m)
	q.mu.Unlock()
	q.signal()
}

// close lets take return what is left, then nil.
func (q *laneQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

func (q *laneQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take waits until messages are queued and moves up to n of them into
// buf[:0]; it returns nil once the queue is closed and empty.
func (q *laneQueue) take(n int, buf []jetstream.Msg) []jetstream.Msg {
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

// intake is what the worker has taken in: its lanes, and a count of the
// messages waiting in them. The consume loop waits for room once limit of
// them wait, so a worker does not pull far ahead of its appends; but it waits
// at most patience, because messages left in the client's pull buffer are not
// kept alive: when appends stall for long, the worker takes them in anyway
// (up to the consumer's MaxAckPending) rather than let their ack deadlines
// lapse.
type intake struct {
	lanes    []*laneQueue
	waiting  atomic.Int64
	limit    int64
	patience time.Duration
	room     chan struct{}
}

func newIntake(lanes, limit int, patience time.Duration) *intake {
	in := &intake{lanes: make([]*laneQueue, lanes), limit: int64(limit), patience: patience, room: make(chan struct{}, 1)}
	for i := range in.lanes {
		in.lanes[i] = newLaneQueue()
	}
	return in
}

// put queues m in lane i, then waits for room (see intake).
func (in *intake) put(i int, m jetstream.Msg, done <-chan struct{}) {
	in.waiting.Add(1)
	in.lanes[i].push(m)
	if in.waiting.Load() < in.limit {
		return
	}
	timeout := time.NewTimer(in.patience)
	defer timeout.Stop()
	for in.waiting.Load() >= in.limit {
		select {
		case <-in.room:
		case <-timeout.C:
			return
		case <-done:
			return
		}
	}
}

// took reports n messages taken out of a lane.
func (in *intake) took(n int) {
	if in.waiting.Add(-int64(n)) < in.limit {
		select {
		case in.room <- struct{}{}:
		default:
		}
	}
}

func (in *intake) close() {
	for _, q := range in.lanes {
		q.close()
	}
}
