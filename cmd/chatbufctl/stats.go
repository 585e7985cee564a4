package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/completion"
)

type chatInStats struct {
	Stream     string `json:"stream"`
	Messages   uint64 `json:"messages"`
	Consumer   string `json:"consumer"`
	Pending    uint64 `json:"pending"`
	AckPending int    `json:"ack_pending"`
	Redelivery int    `json:"redelivered"`
	Error      string `json:"error,omitempty"`
}

type workerSeen struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	Version string `json:"version"`
}

type statsOut struct {
	Conversations       int64             `json:"conversations"`
	Scanned             int               `json:"conversations_scanned"`
	Partial             bool              `json:"partial"`
	MessagesBuffered    int64             `json:"messages_buffered"`
	MessagesInflight    int64             `json:"messages_inflight"`
	InflightBatches     int               `json:"inflight_batches"`
	OldestInflightAge   float64           `json:"oldest_inflight_age_seconds"`
	Due                 int64             `json:"due"`
	OldestBufferAge     float64           `json:"oldest_buffer_age_seconds"`
	MaxAge              float64           `json:"max_age_seconds"`
	ChatIn              chatInStats       `json:"chat_in"`
	DeadLetters         map[string]uint64 `json:"dead_letters"`
	DeadLettersTotal    uint64            `json:"dead_letters_total"`
	DeadLettersError    string            `json:"dead_letters_error,omitempty"`
	Workers             []workerSeen      `json:"workers"`
	WorkersNote         string            `json:"workers_note"`
	RedisDueIndexes     int               `json:"redis_due_indexes"`
	NATSConnectionError string            `json:"nats_error,omitempty"`
}

func (a *app) stats(ctx context.Context, args []string) error {
	fs := a.flags("stats")
	limit := fs.Int("limit", 10000, "read at most this many conversations to count messages and in-flight batches")
	wait := fs.Duration("wait", time.Second, "how long to wait for workers to answer the discovery ping")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("%w: stats takes no arguments", errUsage)
	}
	in, err := a.inspector()
	if err != nil {
		return err
	}
	out := statsOut{MaxAge: in.maxAge.Seconds(), DeadLetters: map[string]uint64{}, Workers: []workerSeen{}}
	keys, err := in.dueKeys(ctx)
	if err != nil {
		return err
	}
	out.RedisDueIndexes = len(keys)
	// Exact counts from the index: ZCARD, ZCOUNT and its head, per key.
	pipe := in.rdb.Pipeline()
	before := "(" + strconv.FormatInt(in.now.Add(-in.maxAge).UnixMilli(), 10)
	var cards, dues []*redis.IntCmd
	var heads []*redis.ZSliceCmd
	for _, k := range keys {
		cards = append(cards, pipe.ZCard(ctx, k))
		dues = append(dues, pipe.ZCount(ctx, k, "-inf", before))
		heads = append(heads, pipe.ZRangeWithScores(ctx, k, 0, 0))
	}
	if len(keys) > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("redis: due index: %w", err)
		}
	}
	var oldest int64
	for i := range keys {
		out.Conversations += cards[i].Val()
		out.Due += dues[i].Val()
		if h := heads[i].Val(); len(h) > 0 && (oldest == 0 || int64(h[0].Score) < oldest) {
			oldest = int64(h[0].Score)
		}
	}
	if oldest > 0 {
		out.OldestBufferAge = age(in.now, time.UnixMilli(oldest))
	}
	// Messages and in-flight batches: the conversations' own keys, page by
	// page, up to --limit conversations.
	var after *entry
	for out.Scanned < *limit {
		es, err := in.page(ctx, keys, after, min(pageSize, *limit-out.Scanned))
		if err != nil {
			return err
		}
		if len(es) == 0 {
			break
		}
		cs, err := in.describe(ctx, es)
		if err != nil {
			return err
		}
		for _, c := range cs {
			out.MessagesBuffered += c.Buffered
			out.MessagesInflight += c.Inflight
			if c.Inflight > 0 {
				out.InflightBatches++
				out.OldestInflightAge = max(out.OldestInflightAge, c.InflightAge)
			}
		}
		out.Scanned += len(es)
		after = &es[len(es)-1]
	}
	out.Partial = int64(out.Scanned) < out.Conversations

	if err := a.natsStats(ctx, &out, *wait); err != nil {
		out.NATSConnectionError = err.Error()
	}
	return a.emit(out, func(w *tabwriter.Writer) {
		approx := ""
		if out.Partial {
			approx = fmt.Sprintf(" (approximate/partial: first %d of %d conversations read; raise --limit)", out.Scanned, out.Conversations)
		}
		fmt.Fprintf(w, "conversations buffering\t%d\n", out.Conversations)
		fmt.Fprintf(w, "messages buffered\t%d%s\n", out.MessagesBuffered, approx)
		fmt.Fprintf(w, "in-flight batches\t%d (%d messages, oldest %s)%s\n", out.InflightBatches, out.MessagesInflight, dur(out.OldestInflightAge), approx)
		fmt.Fprintf(w, "due now\t%d (oldest message older than %s)\n", out.Due, dur(out.MaxAge))
		fmt.Fprintf(w, "oldest buffer age\t%s\n", dur(out.OldestBufferAge))
		if out.NATSConnectionError != "" {
			fmt.Fprintf(w, "nats\tunreachable: %s\n", out.NATSConnectionError)
			return
		}
		if out.ChatIn.Error != "" {
			fmt.Fprintf(w, "%s\t%s\n", out.ChatIn.Stream, out.ChatIn.Error)
		} else {
			fmt.Fprintf(w, "%s\t%d pending, %d ack-pending, %d redelivered (consumer %s)\n", out.ChatIn.Stream,
				out.ChatIn.Pending, out.ChatIn.AckPending, out.ChatIn.Redelivery, out.ChatIn.Consumer)
		}
		reasons := make([]string, 0, len(out.DeadLetters))
		for r, n := range out.DeadLetters {
			reasons = append(reasons, fmt.Sprintf("%s=%d", r, n))
		}
		slices.Sort(reasons)
		fmt.Fprintf(w, "dead letters\t%d %s%s\n", out.DeadLettersTotal, strings.Join(reasons, " "), out.DeadLettersError)
		if strings.HasPrefix(out.WorkersNote, "(discovery failed") {
			fmt.Fprintf(w, "workers seen\t? %s\n", out.WorkersNote)
		} else {
			fmt.Fprintf(w, "workers seen\t%d (answering $SRV.PING.%s)\n", len(out.Workers), completion.ServiceName)
		}
	})
}

// natsStats fills CHAT_IN's backlog, the dead letters by reason and the
// workers seen.
func (a *app) natsStats(ctx context.Context, out *statsOut, wait time.Duration) error {
	nc, js, err := a.jetstream()
	if err != nil {
		return err
	}
	sc := a.cfg.streams()
	out.ChatIn = chatInStats{Stream: sc.InStream, Consumer: sc.Consumer}
	if s, err := js.Stream(ctx, sc.InStream); err != nil {
		out.ChatIn.Error = fmt.Sprintf("stream: %v", err)
	} else {
		out.ChatIn.Messages = s.CachedInfo().State.Msgs
		if ci, err := s.Consumer(ctx, sc.Consumer); err != nil {
			out.ChatIn.Error = fmt.Sprintf("consumer %s: %v", sc.Consumer, err)
		} else {
			info := ci.CachedInfo()
			out.ChatIn.Pending, out.ChatIn.AckPending, out.ChatIn.Redelivery = info.NumPending, info.NumAckPending, info.NumRedelivered
		}
	}
	if s, err := js.Stream(ctx, sc.DeadStream); err != nil {
		out.DeadLettersError = fmt.Sprintf(" (%s: %v)", sc.DeadStream, err)
	} else if info, err := s.Info(ctx, jetstream.WithSubjectFilter(sc.All("dead"))); err != nil {
		out.DeadLettersError = fmt.Sprintf(" (%s: %v)", sc.DeadStream, err)
	} else {
		head := sc.Prefix + ".dead."
		for subj, n := range info.State.Subjects {
			out.DeadLetters[strings.TrimPrefix(subj, head)] += n
			out.DeadLettersTotal += n
		}
	}
	ws, err := discover(ctx, nc, completion.ServiceName, wait)
	if err != nil {
		out.WorkersNote = "(discovery failed: " + err.Error() + ")"
	} else {
		out.Workers = ws
		out.WorkersNote = "(workers answering $SRV.PING." + completion.ServiceName + "; a worker with COMPLETION_ENABLED=false serves no micro service and is not seen)"
	}
	return nil
}

// discover pings a NATS micro service and collects the instances that
// answer within wait.
func discover(ctx context.Context, nc *nats.Conn, service string, wait time.Duration) ([]workerSeen, error) {
	inbox := nc.NewRespInbox()
	ch := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	subj, err := micro.ControlSubject(micro.PingVerb, service, "")
	if err != nil {
		return nil, err
	}
	if err := nc.PublishRequest(subj, inbox, nil); err != nil {
		return nil, err
	}
	seen := map[string]workerSeen{}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case m := <-ch:
			var p micro.Ping
			if json.Unmarshal(m.Data, &p) == nil && p.ID != "" {
				seen[p.ID] = workerSeen{ID: p.ID, Service: p.Name, Version: p.Version}
			}
		case <-timer.C:
			out := make([]workerSeen, 0, len(seen))
			for _, w := range seen {
				out = append(out, w)
			}
			slices.SortFunc(out, func(a, b workerSeen) int { return strings.Compare(a.ID, b.ID) })
			return out, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
