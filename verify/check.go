package verify

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/stream"
)

// Defaults of Options.
const (
	DefaultBufferSize = 10
	DefaultTimeout    = 2 * time.Minute
)

// Headers of dead letters, per the contract.
const (
	headerReason  = "Chatbuf-Reason"
	headerSubject = "Chatbuf-Subject"
)

const (
	idleWait      = 250 * time.Millisecond // a reader with nothing for this long is caught up
	maxLostSample = 10
)

// Options tune Check. Zero values mean the defaults.
type Options struct {
	// BufferSize is the workers' CHAT_BUFFER_SIZE: no batch is larger, and a
	// size batch is exactly this large. 0 means DefaultBufferSize.
	BufferSize int
	// Timeout bounds the wait for every recorded message to show up in
	// CHAT_FLUSHED or CHAT_DEAD, including the drain wait and flushes of
	// Flush. What is already stored is always read. 0 means DefaultTimeout.
	Timeout time.Duration
	// From is where the run starts in CHAT_FLUSHED and CHAT_DEAD (see
	// Tail). A zero sequence falls back to Since, then to the start.
	From Position
	// Since starts reading at batches and dead letters stored at or after
	// this time, for streams without a From sequence.
	Since time.Time
	// Flush first waits until the workers' consumer on CHAT_IN has nothing
	// pending or unacked, then asks for a manual flush of every
	// conversation of the run, so that partial buffers need not wait for
	// their age.
	Flush bool
	// AllowUnordered: order violations do not make the report fail (OK),
	// for runs that used the in-memory fallback.
	AllowUnordered bool
}

func (o Options) withDefaults() Options {
	if o.BufferSize <= 0 {
		o.BufferSize = DefaultBufferSize
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	return o
}

// Position is a pair of stream sequences: where a run starts in
// CHAT_FLUSHED and CHAT_DEAD.
type Position struct {
	Flushed uint64 `json:"flushed"`
	Dead    uint64 `json:"dead"`
}

// Tail returns the position right after the last batch and the last dead
// letter: take it before a load starts, so that Check skips older runs.
func Tail(ctx context.Context, js jetstream.JetStream, cfg stream.Config) (Position, error) {
	cfg = cfg.WithDefaults()
	var p Position
	for _, s := range [...]struct {
		name string
		seq  *uint64
	}{{cfg.FlushedStream, &p.Flushed}, {cfg.DeadStream, &p.Dead}} {
		st, err := js.Stream(ctx, s.name)
		if err != nil {
			return Position{}, fmt.Errorf("verify: stream %s: %w", s.name, err)
		}
		*s.seq = st.CachedInfo().State.LastSeq + 1
	}
	return p, nil
}

// Check reads the run's batches from CHAT_FLUSHED and its dead letters
// from CHAT_DEAD until every message rec holds was seen, or opts.Timeout
// passes, and reports what it found. Batches and dead letters that hold no
// message of the run (by marker) and are not on a conversation of the run
// are ignored. On error the report holds what was seen until then.
func Check(ctx context.Context, js jetstream.JetStream, cfg stream.Config, rec *Recorder, opts Options) (*Report, error) {
	cfg = cfg.WithDefaults()
	opts = opts.withDefaults()
	deadline := time.Now().Add(opts.Timeout)
	c := newChecker(cfg, rec, opts)
	if opts.Flush {
		fctx, cancel := context.WithDeadline(ctx, deadline)
		c.rep.Flush = flushRun(fctx, js, cfg, rec.Conversations())
		cancel()
	}
	err := c.read(ctx, js, deadline)
	return c.finish(), err
}

// checker holds the state of one Check.
type checker struct {
	cfg   stream.Config
	opts  Options
	run   string
	sent  map[string]Sent // by marker
	convs map[chat.Conversation]bool
	rep   Report

	batches   map[string]string // batch id -> identity, to tell redeliveries from reuse
	inBatches map[string]int    // marker -> distinct batches holding it
	misplaced map[string]bool   // markers seen in another conversation's batch
	dead      map[string]bool   // markers seen in CHAT_DEAD
	deadIDs   map[string]bool   // distinct dead letters of the run
	tokens    map[chat.Conversation]int64
	lastSeq   map[chat.Conversation]uint64
	seen      int // recorded messages delivered or dead-lettered

	latency, sizeLatency []time.Duration
}

func newChecker(cfg stream.Config, rec *Recorder, opts Options) *checker {
	sent, convs := rec.snapshot()
	return &checker{
		cfg: cfg, opts: opts, run: rec.Run(), sent: sent, convs: convs,
		rep:     Report{Dead: map[string]int{}, BatchesByReason: map[string]int{}, AllowUnordered: opts.AllowUnordered},
		batches: map[string]string{}, inBatches: map[string]int{}, misplaced: map[string]bool{},
		dead: map[string]bool{}, deadIDs: map[string]bool{},
		tokens: map[chat.Conversation]int64{}, lastSeq: map[chat.Conversation]uint64{},
	}
}

// event is one message from a stream reader, or none when it is caught up.
type event struct {
	dead bool
	msg  jetstream.Msg
	err  error
}

// read feeds both streams through the checker until every recorded message
// was seen or the deadline passed, and both streams are read to their end.
func (c *checker) read(ctx context.Context, js jetstream.JetStream, deadline time.Time) error {
	events := make(chan event)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	for i, s := range [...]struct {
		name  string
		start uint64
	}{{c.cfg.FlushedStream, c.opts.From.Flushed}, {c.cfg.DeadStream, c.opts.From.Dead}} {
		cons, err := js.OrderedConsumer(ctx, s.name, c.consumerConfig(s.start))
		if err != nil {
			return fmt.Errorf("verify: read %s: %w", s.name, err)
		}
		it, err := cons.Messages()
		if err != nil {
			return fmt.Errorf("verify: read %s: %w", s.name, err)
		}
		defer it.Stop()
		wg.Go(func() { pump(it, i == 1, events, stop) })
	}

	// A stream is read to its end when its reader is caught up, or, on a
	// stream others keep publishing to, past its last message at the time
	// every message was seen or the deadline passed.
	var (
		caughtUp [2]bool
		last     [2]uint64 // stream sequence of the last message read
		end      *Position
	)
	for {
		if c.seen >= len(c.sent) || !time.Now().Before(deadline) {
			if end == nil {
				p, err := Tail(ctx, js, c.cfg)
				if err != nil {
					return err
				}
				end = &p
			}
			if (caughtUp[0] || last[0]+1 >= end.Flushed) && (caughtUp[1] || last[1]+1 >= end.Dead) {
				return nil
			}
		}
		var ev event
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev = <-events:
		}
		i := 0
		if ev.dead {
			i = 1
		}
		switch {
		case ev.err != nil:
			return fmt.Errorf("verify: read: %w", ev.err)
		case ev.msg == nil:
			caughtUp[i] = true
			continue
		}
		meta, err := ev.msg.Metadata()
		if err != nil {
			return fmt.Errorf("verify: read: %w", err)
		}
		caughtUp[i] = meta.NumPending == 0
		last[i] = meta.Sequence.Stream
		if ev.dead {
			c.deadLetter(ev.msg, meta)
		} else {
			c.batch(ev.msg, meta)
		}
	}
}

// pump sends what a stream's iterator yields to events until stopped.
func pump(it jetstream.MessagesContext, dead bool, events chan<- event, stop <-chan struct{}) {
	for {
		msg, err := it.Next(jetstream.NextMaxWait(idleWait))
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		ev := event{dead: dead, msg: msg, err: err}
		if errors.Is(err, nats.ErrTimeout) {
			ev.err = nil
		}
		select {
		case events <- ev:
		case <-stop:
			return
		}
		if ev.err != nil {
			return
		}
	}
}

func (c *checker) consumerConfig(start uint64) jetstream.OrderedConsumerConfig {
	switch {
	case start > 0:
		return jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start}
	case !c.opts.Since.IsZero():
		since := c.opts.Since
		return jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since}
	default:
		return jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	}
}

// batch checks one message of CHAT_FLUSHED.
func (c *checker) batch(msg jetstream.Msg, meta *jetstream.MsgMetadata) {
	conv, subjectErr := chat.ParseSubject(c.cfg.Prefix, stream.KindFlushed, msg.Subject())
	where := fmt.Sprintf("stream seq %d", meta.Sequence.Stream)
	var b chat.Batch
	if err := json.Unmarshal(msg.Data(), &b); err != nil {
		if subjectErr == nil && c.convs[conv] {
			c.malformed(where, []string{"not a batch: " + err.Error()})
		}
		return
	}
	markers := make([]string, len(b.Messages))
	ours := subjectErr == nil && c.convs[conv]
	for i, m := range b.Messages {
		if markers[i] = markerIn(c.run, m.Content); markers[i] != "" {
			ours = true
		}
	}
	if !ours {
		return
	}
	if subjectErr != nil {
		conv = chat.Conversation{User: b.UserID, Device: b.DeviceID, Agent: b.AgentID}
	}
	where = fmt.Sprintf("batch %q (%s)", b.BatchID, where)

	problems := batchProblems(msg.Data(), &b, msg.Headers().Get(jetstream.MsgIDHeader), conv, c.opts.BufferSize)
	id := identity(&b)
	switch prev, ok := c.batches[b.BatchID]; {
	case ok && prev == id:
		c.rep.RedeliveredBatches++
		return
	case ok:
		problems = append(problems, "batch_id already used by a different batch")
	default:
		c.batches[b.BatchID] = id
	}
	if last, ok := c.tokens[conv]; ok && b.FencingToken <= last {
		problems = append(problems, fmt.Sprintf("fencing_token %d not above %d of an earlier batch of the conversation", b.FencingToken, last))
	} else {
		c.tokens[conv] = b.FencingToken
	}
	c.rep.Batches++
	c.rep.BatchesByReason[string(b.Reason)]++

	for i, m := range b.Messages {
		if i > 0 && m.Seq <= b.Messages[i-1].Seq {
			c.rep.UnorderedInBatch++
		}
		if last, ok := c.lastSeq[conv]; i == 0 && ok && m.Seq < last {
			c.rep.OutOfOrder++
			if len(c.rep.Problems) < maxProblems {
				c.rep.Problems = append(c.rep.Problems, fmt.Sprintf("out of order: batch %q (%s, %d messages, seqs %d..%d) after seq %d of an earlier batch of %s",
					b.BatchID, b.Reason, len(b.Messages), m.Seq, b.Messages[len(b.Messages)-1].Seq, last, conv))
			}
		}
		marker := markers[i]
		s, ok := c.sent[marker]
		// A message with a message_id is one message whatever its CHAT_IN
		// copy (a retry after a lost PubAck can store a second copy, which
		// the workers deduplicate); without one, only the acked copy counts.
		if !ok || (s.MessageID == "" && s.Seq != 0 && s.Seq != m.Seq) {
			c.rep.Unexpected++
			continue
		}
		if m.MessageID != s.MessageID {
			problems = append(problems, fmt.Sprintf("message %s: message_id %q, published with %q", marker, m.MessageID, s.MessageID))
		}
		if s.Conversation != conv && !c.misplaced[marker] {
			c.misplaced[marker] = true
			c.rep.Misplaced++
		}
		c.inBatches[marker]++
		switch c.inBatches[marker] {
		case 1:
			if !c.dead[marker] {
				c.seen++
			} else {
				c.rep.Duplicated++ // dead-lettered and batched: delivered twice
			}
			d := meta.Timestamp.Sub(s.Published)
			c.latency = append(c.latency, d)
			if b.Reason == chat.TriggerSize {
				c.sizeLatency = append(c.sizeLatency, d)
			}
		case 2:
			c.rep.Duplicated++
		}
	}
	if n := len(b.Messages); n > 0 {
		c.lastSeq[conv] = b.Messages[n-1].Seq
	}
	if len(problems) > 0 {
		c.malformed(where, problems)
	}
}

// identity is what makes two batches under one batch_id the same batch.
func identity(b *chat.Batch) string {
	seqs := make([]byte, 0, 8*len(b.Messages))
	for _, m := range b.Messages {
		seqs = strconv.AppendUint(append(seqs, ' '), m.Seq, 10)
	}
	return strconv.FormatInt(b.FencingToken, 10) + string(b.Reason) + ":" + string(seqs)
}

func (c *checker) malformed(where string, problems []string) {
	c.rep.Malformed++
	for _, p := range problems {
		if len(c.rep.Problems) < maxProblems {
			c.rep.Problems = append(c.rep.Problems, where+": "+p)
		}
	}
}

// deadLetter accounts one message of CHAT_DEAD.
func (c *checker) deadLetter(msg jetstream.Msg, meta *jetstream.MsgMetadata) {
	marker := ""
	head := []byte(`"` + c.run + "/")
	if i := bytes.Index(msg.Data(), head); i >= 0 {
		marker = digitsAfter(msg.Data()[i+1:], len(head)-1)
	}
	conv, _ := chat.ParseSubject(c.cfg.Prefix, stream.KindIn, msg.Headers().Get(headerSubject)) // a bad id still yields its ids, decoded where they decode
	if marker == "" && !c.convs[conv] {
		return
	}
	id := msg.Headers().Get(jetstream.MsgIDHeader)
	if id == "" {
		id = "stream seq " + strconv.FormatUint(meta.Sequence.Stream, 10)
	}
	if !c.deadIDs[id] {
		c.deadIDs[id] = true
		c.rep.Dead[msg.Headers().Get(headerReason)]++
	}
	if _, ok := c.sent[marker]; ok && !c.dead[marker] {
		c.dead[marker] = true
		c.rep.DeadLettered++
		if c.inBatches[marker] == 0 {
			c.seen++
		} else {
			c.rep.Duplicated++ // batched and dead-lettered: delivered twice
		}
	}
}

// finish completes the report.
func (c *checker) finish() *Report {
	r := c.rep
	r.Run, r.Published = c.run, len(c.sent)
	var lost []string
	for marker := range c.sent {
		switch {
		case c.inBatches[marker] > 0:
			r.Delivered++
		case !c.dead[marker]:
			lost = append(lost, marker)
		}
	}
	r.Lost = len(lost)
	r.TimedOut = c.seen < len(c.sent)
	// Markers "<run>/<n>" of one run sort by n when shorter ones go first.
	slices.SortFunc(lost, func(a, b string) int { return cmp.Or(cmp.Compare(len(a), len(b)), cmp.Compare(a, b)) })
	for _, m := range lost[:min(len(lost), maxLostSample)] {
		r.LostSample = append(r.LostSample, m+" in "+c.sent[m].Conversation.Tag())
	}
	r.Latency = Summarize(c.latency)
	r.SizeLatency = Summarize(c.sizeLatency)
	return &r
}
