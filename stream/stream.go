// Package stream is chatbuf's JetStream side: the subjects and streams of the
// contract, their idempotent creation, the batch sink and dead letters.
package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
)

// Defaults of Config.
const (
	DefaultPrefix          = "opencontext.chat"
	DefaultInStream        = "CHAT_IN"
	DefaultFlushedStream   = "CHAT_FLUSHED"
	DefaultDeadStream      = "CHAT_DEAD"
	DefaultConsumer        = "chatbuf-worker"
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultAckWait         = 30 * time.Second
	DefaultMaxAckPending   = 20000
)

// HeaderEndBatch on a chat message, with value "true", closes its
// conversation's batch right after it (reason end).
const HeaderEndBatch = "Chatbuf-End-Batch"

// EndsBatch reports whether a chat message's headers close its batch.
func EndsBatch(h map[string][]string) bool {
	v := h[HeaderEndBatch]
	return len(v) > 0 && v[0] == "true"
}

// Subject kinds after the prefix.
const (
	KindIn      = "in"
	KindFlushed = "flushed"
	KindFlush   = "flush"
	KindDead    = "dead"
)

// Config names chatbuf's streams and sets their limits. Zero values mean the
// defaults above.
type Config struct {
	Prefix          string
	InStream        string
	FlushedStream   string
	DeadStream      string
	Consumer        string
	DuplicateWindow time.Duration // CHAT_IN's, CHAT_FLUSHED's and CHAT_DEAD's; at least 2m
	AckWait         time.Duration
	MaxAckPending   int
	Replicas        int
	FlushedMaxAge   time.Duration // 0: batches are kept until removed by hand
	DeadMaxAge      time.Duration // 0: dead letters are kept until removed by hand
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Prefix, DefaultPrefix)
	def(&c.InStream, DefaultInStream)
	def(&c.FlushedStream, DefaultFlushedStream)
	def(&c.DeadStream, DefaultDeadStream)
	def(&c.Consumer, DefaultConsumer)
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = DefaultMaxAckPending
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	return c
}

// In is the subject a conversation's messages are published to.
func (c Config) In(conv chat.Conversation) string { return conv.Subject(c.Prefix, KindIn) }

// Flushed is the subject a conversation's batches are published to.
func (c Config) Flushed(conv chat.Conversation) string { return conv.Subject(c.Prefix, KindFlushed) }

// Flush is the request/reply subject of a conversation's manual flush.
func (c Config) Flush(conv chat.Conversation) string { return conv.Subject(c.Prefix, KindFlush) }

// Dead is the subject of dead letters with the given reason.
func (c Config) Dead(reason chat.Reason) string {
	return c.Prefix + "." + KindDead + "." + string(reason)
}

// All returns the wildcard subject of one kind, e.g. "opencontext.chat.in.>".
func (c Config) All(kind string) string { return c.Prefix + "." + kind + ".>" }

// Streams returns the configurations of CHAT_IN, CHAT_FLUSHED and CHAT_DEAD.
func (c Config) Streams() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{{
		Name:        c.InStream,
		Description: "chatbuf: chat messages in",
		Subjects:    []string{c.All(KindIn)},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  c.DuplicateWindow,
		Replicas:    c.Replicas,
		// Direct gets answer the flushers' "first message still stored on
		// this subject" (Pending) from the stream itself, without the API
		// queue.
		AllowDirect: true,
	}, {
		Name:        c.FlushedStream,
		Description: "chatbuf: flushed batches out",
		Subjects:    []string{c.All(KindFlushed)},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  c.DuplicateWindow,
		MaxAge:      c.FlushedMaxAge,
		Replicas:    c.Replicas,
	}, {
		Name:        c.DeadStream,
		Description: "chatbuf: dead letters",
		Subjects:    []string{c.All(KindDead)},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  c.DuplicateWindow,
		MaxAge:      c.DeadMaxAge,
		Replicas:    c.Replicas,
	}}
}

// ConsumerConfig is the durable pull consumer the workers share on CHAT_IN.
func (c Config) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       c.Consumer,
		Description:   "chatbuf workers",
		FilterSubject: c.All(KindIn),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxAckPending: c.MaxAckPending,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas:      c.Replicas,
	}
}

// Ensure creates or updates the three streams and the workers' consumer.
// Any number of workers may call it at once.
func Ensure(ctx context.Context, js jetstream.JetStream, c Config) (jetstream.Consumer, error) {
	for _, sc := range c.Streams() {
		if err := ensureStream(ctx, js, sc); err != nil {
			return nil, err
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, c.InStream, c.ConsumerConfig())
	if err != nil {
		return nil, fmt.Errorf("stream: consumer %s on %s: %w", c.Consumer, c.InStream, err)
	}
	return cons, nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) error {
	var err error
	for attempt := range 5 {
		if _, err = js.CreateOrUpdateStream(ctx, sc); err == nil {
			return nil
		}
		// Two workers creating the same stream at once: one wins, the other
		// sees "already in use" and updates on the next attempt.
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	return fmt.Errorf("stream: create or update %s: %w", sc.Name, err)
}
