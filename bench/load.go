package main

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

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/corpus"
	"github.com/opencontext/chatbuf/stream"
)

// messageBytes is the size of every chat message body the harness publishes.
const messageBytes = 256

// publishWindow is how many PubAcks an async publisher may wait for at once.
const publishWindow = 4096

// conversation returns the i-th conversation of a load.
func conversation(i int) chat.Conversation {
	return chat.Conversation{User: "u" + strconv.Itoa(i), Device: "phone", Agent: "bot"}
}

// body returns a chat message of exactly messageBytes bytes (when content
// leaves room): role, message_id and content, the content being content
// followed by as many "x" as fit.
func body(messageID, content string) []byte {
	const head, mid, tail = `{"role":"user","message_id":"`, `","content":"`, `"}`
	pad := messageBytes - len(head) - len(messageID) - len(mid) - len(content) - len(tail)
	var b strings.Builder
	b.Grow(messageBytes)
	b.WriteString(head)
	b.WriteString(messageID)
	b.WriteString(mid)
	b.WriteString(content)
	b.WriteString(strings.Repeat("x", max(pad, 0)))
	b.WriteString(tail)
	return []byte(b.String())
}

// chatMsg is message n of a load: conversation n mod convs, round-robin, the
// way producer load spreads its messages.
func chatMsg(cfg stream.Config, run string, n, convs int) *nats.Msg {
	id := run + "-" + strconv.Itoa(n)
	m := &nats.Msg{Subject: cfg.In(conversation(n % convs)), Data: body(id, ""), Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, id)
	return m
}

// preload publishes msgs messages over convs conversations, then extra, to CHAT_IN with
// asynchronous JetStream publishing, waits for every PubAck, and returns the
// publish rate. Publishes that fail are repeated (the Nats-Msg-Id makes that
// safe); the stream must then hold exactly msgs messages.
func preload(ctx context.Context, n *natsServer, cfg stream.Config, run string, msgs, convs int, extra []corpusMsg) (float64, error) {
	var (
		mu     sync.Mutex
		failed []*nats.Msg
	)
	nc, js, err := n.connect(
		jetstream.WithPublishAsyncMaxPending(publishWindow),
		jetstream.WithPublishAsyncTimeout(30*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, _ error) {
			mu.Lock()
			failed = append(failed, m)
			mu.Unlock()
		}))
	if err != nil {
		return 0, err
	}
	defer nc.Close()

	start := time.Now()
	for i := range msgs {
		if i%10000 == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if _, err := js.PublishMsgAsync(chatMsg(cfg, run, i, convs), jetstream.WithStallWait(30*time.Second)); err != nil {
			mu.Lock()
			failed = append(failed, chatMsg(cfg, run, i, convs))
			mu.Unlock()
		}
	}
	for i, c := range extra {
		m := c.msg(cfg, run, i)
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(30*time.Second)); err != nil {
			mu.Lock()
			failed = append(failed, c.msg(cfg, run, i))
			mu.Unlock()
		}
	}
	msgs += len(extra)
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(2 * time.Minute):
		return 0, fmt.Errorf("preload: %d PubAcks still pending after 2m", js.PublishAsyncPending())
	}
	elapsed := time.Since(start)
	for _, m := range failed {
		var err error
		for range 3 {
			if _, err = js.PublishMsg(ctx, m); err == nil {
				break
			}
		}
		if err != nil {
			return 0, fmt.Errorf("preload: publish %s: %w", m.Subject, err)
		}
	}
	st, err := js.Stream(ctx, cfg.InStream)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	if info.State.Msgs != uint64(msgs) {
		return 0, fmt.Errorf("preload: %s holds %d messages, want %d", cfg.InStream, info.State.Msgs, msgs)
	}
	return float64(msgs) / elapsed.Seconds(), nil
}

// ensureStreams creates CHAT_IN, CHAT_FLUSHED, CHAT_DEAD and the workers'
// consumer on a fresh server, as a worker would.
func ensureStreams(ctx context.Context, n *natsServer, cfg stream.Config) error {
	nc, js, err := n.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	if _, err := stream.Ensure(ctx, js, cfg); err != nil {
		return errors.Join(errors.New("stream.Ensure"), err)
	}
	return nil
}

// corpusMsg is a message of the repository's corpus (testdata/conversations).
type corpusMsg struct {
	conv chat.Conversation
	body []byte
}

func (c corpusMsg) msg(cfg stream.Config, run string, i int) *nats.Msg {
	m := &nats.Msg{Subject: cfg.In(c.conv), Data: c.body, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, run+"-corpus-"+strconv.Itoa(i))
	return m
}

// loadCorpus reads the corpus and returns the messages of the conversations
// a subject can name, in order, and the names of those it cannot (ids with
// characters this build's subjects do not encode).
func loadCorpus(cfg stream.Config) (msgs []corpusMsg, convs int, skipped []string, err error) {
	all, err := corpus.Default()
	if err != nil {
		return nil, 0, nil, err
	}
	for _, c := range all {
		back, err := chat.ParseSubject(cfg.Prefix, stream.KindIn, cfg.In(c.Conv))
		if err != nil || back != c.Conv {
			skipped = append(skipped, c.Name)
			continue
		}
		convs++
		for _, b := range c.Messages {
			msgs = append(msgs, corpusMsg{conv: c.Conv, body: b})
		}
	}
	return msgs, convs, skipped, nil
}
