package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/flush"
)

// HeaderToken carries a batch's fencing token on CHAT_FLUSHED.
const HeaderToken = "Chatbuf-Fencing-Token"

// Sink publishes batches to CHAT_FLUSHED. It is a flush.Sink that makes the
// stream itself refuse a stale batch: each publish expects the subject's
// last sequence to be the conversation's previous batch
// (Nats-Expected-Last-Subject-Sequence), and on a mismatch it reads the
// subject's last batch to decide whether its batch is already there, is
// stale, or may follow.
type Sink struct {
	js  jetstream.JetStream
	cfg Config

	mu     sync.Mutex
	stream jetstream.Stream
}

var _ flush.ManySink = (*Sink)(nil)

// NewSink returns a Sink on js.
func NewSink(js jetstream.JetStream, cfg Config) *Sink {
	return &Sink{js: js, cfg: cfg.WithDefaults()}
}

// maxCASAttempts bounds the compare-and-set loop; each retry follows a
// batch another flusher published meanwhile, which the lock makes rare.
const maxCASAttempts = 5

// Publish implements flush.Sink.
func (s *Sink) Publish(ctx context.Context, b flush.Envelope) (uint64, error) {
	subject := s.cfg.Flushed(b.Conv)
	after := b.PrevPos
	for range maxCASAttempts {
		msg := batchMsg(subject, b)
		ack, err := s.js.PublishMsg(ctx, msg,
			jetstream.WithMsgID(b.ID),
			jetstream.WithExpectLastSequencePerSubject(after))
		if err == nil {
			return ack.Sequence, nil
		}
		if !isWrongLastSeq(err) {
			return 0, refused(b.ID, err)
		}
		last, err := s.lastBatch(ctx, subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			after = 0 // the subject's batches were removed (stream limits)
			continue
		case err != nil:
			return 0, fmt.Errorf("stream: last batch on %s: %w", subject, err)
		case last.Header.Get(jetstream.MsgIDHeader) == b.ID:
			return last.Sequence, nil // published before, not committed
		}
		token, err := strconv.ParseInt(last.Header.Get(HeaderToken), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stream: last batch on %s (seq %d) has no valid %s header", subject, last.Sequence, HeaderToken)
		}
		if token >= b.Token {
			// A later batch is last. Ours may still be in the stream before
			// it (published, then the commit failed, then the fallback
			// published more): look among the subject's batches since ours
			// was claimed before calling it stale.
			seq, found, err := s.find(ctx, subject, b.ID, b.Created.Add(-clockSkew), last.Sequence)
			if err != nil {
				return 0, fmt.Errorf("stream: look for batch %s on %s: %w", b.ID, subject, err)
			}
			if found {
				return seq, nil
			}
			return 0, fmt.Errorf("stream: batch %s (token %d): %w", b.ID, b.Token, &flush.StaleError{Last: token})
		}
		after = last.Sequence
	}
	return 0, fmt.Errorf("stream: publish batch %s: subject %s kept changing", b.ID, subject)
}

// batchMsg is the message of batch b: its fencing token, and the trace
// context of its flush when it is traced.
func batchMsg(subject string, b flush.Envelope) *nats.Msg {
	msg := &nats.Msg{Subject: subject, Data: b.Data, Header: nats.Header{}}
	msg.Header.Set(HeaderToken, strconv.FormatInt(b.Token, 10))
	SetTraceContext(msg.Header, b.Trace)
	return msg
}

// clockSkew is how far a worker's clock may be ahead of the NATS server's,
// when find looks for batches stored since a worker-side time.
const clockSkew = time.Minute

// find looks for the batch with the given id among the subject's batches
// stored since since, up to sequence until.
func (s *Sink) find(ctx context.Context, subject, id string, since time.Time, until uint64) (uint64, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := s.js.OrderedConsumer(ctx, s.cfg.FlushedStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
		HeadersOnly:    true,
	})
	if err != nil {
		return 0, false, err
	}
	for {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return 0, false, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return 0, false, err
			}
			if m.Headers().Get(jetstream.MsgIDHeader) == id {
				return meta.Sequence.Stream, true, nil
			}
			if meta.Sequence.Stream >= until {
				return 0, false, nil
			}
		}
		if err := batch.Error(); err != nil {
			return 0, false, err
		}
		if n == 0 {
			return 0, false, nil
		}
	}
}

func (s *Sink) lastBatch(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	s.mu.Lock()
	st := s.stream
	s.mu.Unlock()
	if st == nil {
		var err error
		if st, err = s.js.Stream(ctx, s.cfg.FlushedStream); err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.stream = st
		s.mu.Unlock()
	}
	return st.GetLastMsgForSubject(ctx, subject)
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// PublishMany implements flush.ManySink: every batch is published
// asynchronously and the PubAcks are awaited together, so many batches cost
// about one round trip. A batch the stream refuses for its expected last
// sequence goes through Publish, which sorts it out.
func (s *Sink) PublishMany(ctx context.Context, outs []flush.Envelope) ([]uint64, []error) {
	pos, errs := make([]uint64, len(outs)), make([]error, len(outs))
	futures := make([]jetstream.PubAckFuture, len(outs))
	for i, b := range outs {
		msg := batchMsg(s.cfg.Flushed(b.Conv), b)
		f, err := s.js.PublishMsgAsync(msg, jetstream.WithMsgID(b.ID), jetstream.WithExpectLastSequencePerSubject(b.PrevPos))
		if err != nil {
			errs[i] = refused(b.ID, err)
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			pos[i] = ack.Sequence
		case err := <-f.Err():
			if isWrongLastSeq(err) {
				pos[i], errs[i] = s.Publish(ctx, outs[i])
			} else {
				errs[i] = refused(outs[i].ID, err)
			}
		case <-ctx.Done():
			errs[i] = fmt.Errorf("stream: publish batch %s: %w", outs[i].ID, ctx.Err())
		}
	}
	return pos, errs
}

// refused wraps the error of a batch's publish with its kind of refusal.
func refused(id string, err error) error {
	return &flush.RefusedError{Kind: refusalKind(err), Err: fmt.Errorf("stream: publish batch %s: %w", id, err)}
}

// refusalKind classifies a publish error (flush.RefusedError.Kind).
func refusalKind(err error) string {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		d := strings.ToLower(apiErr.Description)
		switch {
		case apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum, strings.Contains(d, "exceeds maximum"):
			return flush.KindTooLarge
		case strings.Contains(d, "maximum messages"), strings.Contains(d, "maximum bytes"):
			return flush.KindFull
		case strings.Contains(d, "resource"), strings.Contains(d, "limit"):
			return flush.KindLimits
		case apiErr.ErrorCode == jetstream.JSErrCodeStreamNotFound, apiErr.Code == 503:
			return flush.KindUnavailable
		}
		return flush.KindOther
	}
	msg := strings.ToLower(err.Error())
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return flush.KindTooLarge
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return flush.KindUnavailable
	case strings.Contains(msg, "permissions violation"), strings.Contains(msg, "authorization"):
		return flush.KindPermission
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return flush.KindTimeout
	}
	return flush.KindOther
}
