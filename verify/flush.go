package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/stream"
)

// Manual flush tuning.
const (
	flushParallelism = 16
	flushAttempts    = 5
	flushTimeout     = 5 * time.Second
	flushPause       = 100 * time.Millisecond
	drainPoll        = 200 * time.Millisecond
	maxFlushErrors   = 10
)

// FlushResult is what the drain wait and the manual flushes of a run did.
type FlushResult struct {
	Drained   bool     `json:"drained"`          // the workers' consumer had nothing pending or unacked
	Pending   uint64   `json:"pending"`          // pending + unacked at the last look
	Requested int      `json:"requested"`        // conversations asked to flush
	Failed    int      `json:"failed"`           // of those, not flushed after retries
	Batches   int      `json:"batches"`          // batches the workers said they published
	Errors    []string `json:"errors,omitempty"` // the first few errors
}

// flushReply is a worker's answer to a manual flush request.
type flushReply struct {
	OK       bool     `json:"ok"`
	Batches  int      `json:"batches"`
	BatchIDs []string `json:"batch_ids"`
	Error    string   `json:"error"`
}

// flushRun waits until the workers' consumer on CHAT_IN has nothing pending
// or unacked (or ctx ends), then asks a worker to flush every conversation.
func flushRun(ctx context.Context, js jetstream.JetStream, cfg stream.Config, convs []chat.Conversation) *FlushResult {
	res := &FlushResult{Requested: len(convs)}
	var mu sync.Mutex
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if len(res.Errors) < maxFlushErrors {
			res.Errors = append(res.Errors, err.Error())
		}
	}

	var err error
	res.Drained, res.Pending, err = waitDrained(ctx, js, cfg)
	if err != nil {
		fail(err)
	}

	var wg sync.WaitGroup
	sem := make(chan struct{}, flushParallelism)
	for _, c := range convs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			n, err := flushOne(ctx, js.Conn(), cfg.Flush(c))
			mu.Lock()
			res.Batches += n
			if err != nil {
				res.Failed++
			}
			mu.Unlock()
			if err != nil {
				fail(fmt.Errorf("flush %s: %w", c, err))
			}
		})
	}
	wg.Wait()
	return res
}

// waitDrained polls the consumer's info until nothing is pending or unacked.
func waitDrained(ctx context.Context, js jetstream.JetStream, cfg stream.Config) (bool, uint64, error) {
	var pending uint64
	for {
		cons, err := js.Consumer(ctx, cfg.InStream, cfg.Consumer)
		if err == nil {
			var info *jetstream.ConsumerInfo
			if info, err = cons.Info(ctx); err == nil {
				pending = info.NumPending + uint64(info.NumAckPending)
				if pending == 0 {
					return true, 0, nil
				}
			}
		}
		if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			return false, pending, fmt.Errorf("consumer %s on %s: %w", cfg.Consumer, cfg.InStream, err)
		}
		select {
		case <-ctx.Done():
			return false, pending, nil
		case <-time.After(drainPoll):
		}
	}
}

// flushOne asks a worker to flush one conversation, retrying "busy",
// timeouts and missing responders a few times. It returns the number of
// batches the worker published.
func flushOne(ctx context.Context, nc *nats.Conn, subject string) (int, error) {
	var err error
	for attempt := range flushAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return 0, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
			case <-time.After(time.Duration(attempt) * flushPause):
			}
		}
		var msg *nats.Msg
		rctx, cancel := context.WithTimeout(ctx, flushTimeout)
		msg, err = nc.RequestWithContext(rctx, subject, nil)
		cancel()
		if err != nil {
			if ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)) {
				continue
			}
			return 0, err
		}
		var reply flushReply
		if err = json.Unmarshal(msg.Data, &reply); err != nil {
			return 0, fmt.Errorf("bad reply %.80q: %w", msg.Data, err)
		}
		switch {
		case reply.OK:
			return reply.Batches, nil
		case reply.Error == "busy":
			err = errors.New("busy")
		default:
			return 0, fmt.Errorf("worker: %s", reply.Error)
		}
	}
	return 0, fmt.Errorf("gave up after %d attempts: %w", flushAttempts, err)
}
