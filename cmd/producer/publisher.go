package main

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/stream"
	"github.com/opencontext/chatbuf/verify"
)

// Publishing tuning.
const (
	ackTimeout  = 10 * time.Second       // a PubAck not back by then is an error, retried
	stallWait   = 30 * time.Second       // longest wait for a free place in the window
	maxAttempts = 8                      // publishes of one message before it counts as failed (about 15 s, longer than a leader election)
	retryPause  = 500 * time.Millisecond // times the attempt number
	maxErrors   = 5                      // distinct errors kept for the summary
)

// stats is what a load's publishing did.
type stats struct {
	Run           string         `json:"run"`
	Conversations int            `json:"conversations"`
	Hostile       bool           `json:"hostile"`
	Requested     int            `json:"requested"`      // --messages
	Published     int            `json:"published"`      // accepted: PubAck received
	DuplicateAcks int            `json:"duplicate_acks"` // PubAcks that said duplicate (after a retry)
	Failures      int            `json:"failures"`       // given up after maxAttempts
	Retries       int            `json:"retries"`
	Errors        []string       `json:"errors,omitempty"` // the first distinct publish errors
	ElapsedS      float64        `json:"elapsed_s"`
	PerSecond     float64        `json:"published_per_s"`
	PubAck        verify.Latency `json:"puback_latency"`
	Interrupted   bool           `json:"interrupted"` // stopped by a signal before all were sent
}

// publisher publishes a load asynchronously, retries failed publishes a
// bounded number of times and records every accepted message.
type publisher struct {
	js    jetstream.JetStream // with the window as its async max pending
	cfg   stream.Config
	o     loadOptions
	rec   *verify.Recorder
	convs []chat.Conversation

	published, failures, retries, duplicates atomic.Int64

	mu   sync.Mutex
	acks []time.Duration // PubAck latencies
	errs []string

	wg sync.WaitGroup
}

func newPublisher(js jetstream.JetStream, cfg stream.Config, o loadOptions, rec *verify.Recorder, convs []chat.Conversation) *publisher {
	return &publisher{js: js, cfg: cfg, o: o, rec: rec, convs: convs, acks: make([]time.Duration, 0, o.messages)}
}

// run publishes the load and waits for every PubAck or final failure.
func (p *publisher) run(ctx context.Context) stats {
	start := time.Now()
	n := 0
	for ; n < p.o.messages; n++ {
		if p.o.rate > 0 {
			sleep(ctx, time.Until(start.Add(time.Duration(float64(n)/p.o.rate*float64(time.Second)))))
		}
		if ctx.Err() != nil {
			break
		}
		p.publish(ctx, n)
	}
	p.wg.Wait()
	elapsed := time.Since(start)

	p.mu.Lock()
	defer p.mu.Unlock()
	s := stats{
		Run: p.rec.Run(), Conversations: len(p.convs), Hostile: p.o.hostile, Requested: p.o.messages,
		Published: int(p.published.Load()), DuplicateAcks: int(p.duplicates.Load()),
		Failures: int(p.failures.Load()), Retries: int(p.retries.Load()), Errors: p.errs,
		ElapsedS: elapsed.Seconds(), PubAck: verify.Summarize(p.acks), Interrupted: n < p.o.messages,
	}
	if elapsed > 0 {
		s.PerSecond = float64(s.Published) / elapsed.Seconds()
	}
	return s
}

// progress returns the counts for the progress line.
func (p *publisher) progress() progress {
	return progress{published: p.published.Load(), failed: p.failures.Load(), pending: p.js.PublishAsyncPending()}
}

// publish sends message n and hands its PubAck (or error) to a goroutine.
func (p *publisher) publish(ctx context.Context, n int) {
	c, id, msg := p.message(n)
	at := time.Now()
	paf, err := p.js.PublishMsgAsync(msg, jetstream.WithStallWait(stallWait))
	p.wg.Go(func() {
		if err == nil {
			select {
			case ack := <-paf.Ok():
				p.accepted(n, c, id, ack, at)
				return
			case err = <-paf.Err():
			}
		}
		p.retry(ctx, n, c, id, msg, err)
	})
}

// message builds message n: its conversation (round-robin), message_id and
// the NATS message.
func (p *publisher) message(n int) (chat.Conversation, string, *nats.Msg) {
	c := p.convs[n%len(p.convs)]
	var id string
	if !p.o.noMessageID {
		id = p.rec.Run() + "-" + strconv.Itoa(n)
	}
	role := [...]string{"user", "assistant"}[(n/len(p.convs))%2] // alternating within each conversation
	body, err := json.Marshal(message{Role: role, Content: p.rec.Content(n, p.o.size), MessageID: id, Timestamp: time.Now().UTC().Format(time.RFC3339Nano)})
	if err != nil {
		panic(err) // strings always marshal
	}
	msg := nats.NewMsg(p.cfg.In(c))
	msg.Data = body
	if id != "" {
		msg.Header.Set(jetstream.MsgIDHeader, id)
	}
	return c, id, msg
}

// retry publishes message n again, synchronously, until it is accepted or
// maxAttempts were made. Without message_id a retry after a lost PubAck can
// store a second copy; the verifier counts it as unexpected, not lost.
func (p *publisher) retry(ctx context.Context, n int, c chat.Conversation, id string, msg *nats.Msg, err error) {
	for attempt := 2; attempt <= maxAttempts && sleep(ctx, time.Duration(attempt-1)*retryPause); attempt++ {
		p.retries.Add(1)
		at := time.Now()
		actx, cancel := context.WithTimeout(ctx, ackTimeout)
		var ack *jetstream.PubAck
		ack, err = p.js.PublishMsg(actx, msg)
		cancel()
		if err == nil {
			p.accepted(n, c, id, ack, at)
			return
		}
	}
	p.failures.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := err.Error(); len(p.errs) < maxErrors && !slices.Contains(p.errs, e) {
		p.errs = append(p.errs, e)
	}
}

func (p *publisher) accepted(n int, c chat.Conversation, id string, ack *jetstream.PubAck, at time.Time) {
	d := time.Since(at)
	p.rec.Add(verify.Sent{Marker: p.rec.Marker(n), Conversation: c, MessageID: id, Seq: ack.Sequence, Published: at})
	p.published.Add(1)
	if ack.Duplicate {
		p.duplicates.Add(1)
	}
	p.mu.Lock()
	p.acks = append(p.acks, d)
	p.mu.Unlock()
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
