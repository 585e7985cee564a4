package worker

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
)

// holdKey names a held message: its conversation and its dedupe key, which
// is unique only within the conversation.
type holdKey struct {
	conv chat.Conversation
	key  string
}

// unacked tracks messages that must not be acked yet (held), by
// conversation and dedupe key: every message from just before its append
// until the append's outcome is known, and messages the fallback holds in
// local memory until Release. Registering before the append means a Release
// that races ahead of the append's result still finds the message.
//
// It also tracks queued messages: delivered, waiting in a lane for their
// turn. Those are kept alive too once they have waited half an interval, so
// that a slow append (Redis failing over, say) does not let the ack deadline
// of the messages behind it lapse and the server hand them to another worker.
type unacked struct {
	mu     sync.Mutex
	m      map[holdKey][]jetstream.Msg
	queued map[jetstream.Msg]time.Time
}

func newUnacked() *unacked {
	return &unacked{m: map[holdKey][]jetstream.Msg{}, queued: map[jetstream.Msg]time.Time{}}
}

// queue registers m as waiting in a lane since now.
func (u *unacked) queue(m jetstream.Msg) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.queued[m] = time.Now()
}

// dequeue: ms leave their lane for processing.
func (u *unacked) dequeue(ms []jetstream.Msg) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, m := range ms {
		delete(u.queued, m)
	}
}

func (u *unacked) add(c chat.Conversation, key string, m jetstream.Msg) {
	u.mu.Lock()
	defer u.mu.Unlock()
	k := holdKey{c, key}
	u.m[k] = append(u.m[k], m)
}

// drop removes m from c's key's held messages and reports whether it was there
// (false: a Release acked it already).
func (u *unacked) drop(c chat.Conversation, dkey string, m jetstream.Msg) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	key := holdKey{c, dkey}
	ms := u.m[key]
	for i, x := range ms {
		if x == m {
			ms = append(ms[:i], ms[i+1:]...)
			if len(ms) == 0 {
				delete(u.m, key)
			} else {
				u.m[key] = ms
			}
			return true
		}
	}
	return false
}

// others reports whether c's key has held messages besides m.
func (u *unacked) others(c chat.Conversation, key string, m jetstream.Msg) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, x := range u.m[holdKey{c, key}] {
		if x != m {
			return true
		}
	}
	return false
}

// release removes and returns the messages of c held under keys.
func (u *unacked) release(c chat.Conversation, keys []string) []jetstream.Msg {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []jetstream.Msg
	for _, key := range keys {
		k := holdKey{c, key}
		out = append(out, u.m[k]...)
		delete(u.m, k)
	}
	return out
}

// keepAlive tells the server every interval that held messages are still in
// progress, so they are not redelivered while held, until ctx is done.
func (u *unacked) keepAlive(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(max(interval, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		u.mu.Lock()
		var ms []jetstream.Msg
		for _, l := range u.m {
			ms = append(ms, l...)
		}
		waited := time.Now().Add(-interval / 2)
		for m, since := range u.queued {
			if since.Before(waited) {
				ms = append(ms, m)
			}
		}
		u.mu.Unlock()
		for _, m := range ms {
			_ = m.InProgress()
		}
	}
}

// giveBack naks every held message (at shutdown: the local memory they live
// in is going away) and returns how many there were.
func (u *unacked) giveBack() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for k, ms := range u.m {
		for _, m := range ms {
			_ = m.Nak()
			n++
		}
		delete(u.m, k)
	}
	return n
}
