package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/completion"
	"github.com/opencontext/chatbuf/worker"
)

func (a *app) inspector() (*inspector, error) {
	rdb, err := a.redis()
	if err != nil {
		return nil, err
	}
	return &inspector{rdb: rdb, keys: a.cfg.keys(), maxAge: a.cfg.maxAge(), now: a.now()}, nil
}

// pageSize is how many due index entries one round trip reads.
const pageSize = 500

// ---- stats

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

// ---- ls

type lsOut struct {
	Conversations []conv `json:"conversations"`
	Scanned       int    `json:"scanned"`
	NextCursor    string `json:"next_cursor"`
}

func (a *app) ls(ctx context.Context, args []string) error {
	fs := a.flags("ls")
	state := fs.String("state", "", "buffering, due, inflight or stuck")
	sortBy := fs.String("sort", "age", "age (oldest first) or size (largest first, within the page)")
	limit := fs.Int("limit", 50, "conversations per page")
	cursor := fs.String("cursor", "", "continue after this cursor (next_cursor of the previous page)")
	scan := fs.Int("scan", 10000, "with --state: read at most this many index entries for one page")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("%w: ls takes no arguments", errUsage)
	}
	switch *state {
	case "", stateBuffering, stateDue, stateInflight, stateStuck:
	default:
		return fmt.Errorf("%w: --state %q: want buffering, due, inflight or stuck", errUsage, *state)
	}
	if *sortBy != "age" && *sortBy != "size" {
		return fmt.Errorf("%w: --sort %q: want age or size", errUsage, *sortBy)
	}
	if *limit < 1 {
		return fmt.Errorf("%w: --limit must be at least 1", errUsage)
	}
	in, err := a.inspector()
	if err != nil {
		return err
	}
	var after *entry
	if *cursor != "" {
		e, err := parseCursor(*cursor)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		after = &e
	}
	keys, err := in.dueKeys(ctx)
	if err != nil {
		return err
	}
	out := lsOut{Conversations: []conv{}}
	for len(out.Conversations) < *limit && out.Scanned < *scan {
		n := min(pageSize, *scan-out.Scanned)
		if *state == "" {
			n = min(n, *limit-len(out.Conversations))
		}
		es, err := in.page(ctx, keys, after, n)
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
		for i, c := range cs {
			out.Scanned++
			after = &es[i]
			if matches(c.State, *state) {
				out.Conversations = append(out.Conversations, c)
				if len(out.Conversations) == *limit {
					break
				}
			}
		}
		if len(es) < n {
			break
		}
	}
	if after != nil {
		// A next page exists if the index holds more after the last entry read.
		more, err := in.page(ctx, keys, after, 1)
		if err != nil {
			return err
		}
		if len(more) > 0 {
			out.NextCursor = after.cursor()
		}
	}
	if *sortBy == "size" {
		slices.SortStableFunc(out.Conversations, func(x, y conv) int {
			return int((y.Buffered + y.Inflight) - (x.Buffered + x.Inflight))
		})
	}
	return a.emit(out, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "USER\tDEVICE\tAGENT\tSTATE\tBUFFERED\tIN FLIGHT\tOLDEST AGE")
		for _, c := range out.Conversations {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", c.User, c.Device, c.Agent, c.State, c.Buffered, c.Inflight, dur(c.OldestAge))
		}
		if out.NextCursor != "" {
			fmt.Fprintf(w, "(more: --cursor %s)\n", out.NextCursor)
		}
	})
}

// ---- show

type recordOut struct {
	Seq        uint64          `json:"seq"`
	ReceivedAt time.Time       `json:"received_at"`
	Role       string          `json:"role"`
	Message    json.RawMessage `json:"message"`
}

type inflightOut struct {
	BatchID string     `json:"batch_id"`
	Token   int64      `json:"token"`
	Reason  string     `json:"reason"`
	Created *time.Time `json:"created,omitempty"`
	Age     float64    `json:"age_seconds"`
	// RefusedSince is when CHAT_FLUSHED first refused the batch (the meta
	// hash's refused field), if it did.
	RefusedSince *time.Time  `json:"refused_since,omitempty"`
	Messages     []recordOut `json:"messages"`
}

type lockOut struct {
	Held   bool   `json:"held"`
	Holder string `json:"holder,omitempty"`
	TTLms  int64  `json:"ttl_ms,omitempty"`
	Fence  string `json:"fence,omitempty"`
}

type lastBatchOut struct {
	BatchID    string `json:"batch_id"`
	Token      int64  `json:"token"`
	Seq        uint64 `json:"chat_flushed_seq,omitempty"`
	CreateTime string `json:"create_time,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Note       string `json:"note,omitempty"`
}

type showOut struct {
	User       string            `json:"user"`
	Device     string            `json:"device"`
	Agent      string            `json:"agent"`
	Tag        string            `json:"tag"`
	InDueIndex bool              `json:"in_due_index"`
	Oldest     *time.Time        `json:"oldest,omitempty"`
	Buffered   int64             `json:"buffered"`
	Messages   []recordOut       `json:"messages"`
	Inflight   *inflightOut      `json:"inflight"`
	Lock       lockOut           `json:"lock"`
	LastBatch  *lastBatchOut     `json:"last_batch"`
	Meta       map[string]string `json:"meta"`
}

// conversation takes the ids as the producer takes them.
func conversation(pos []string) (chat.Conversation, error) {
	if len(pos) != 3 {
		return chat.Conversation{}, fmt.Errorf("%w: want <user> <device> <agent>, got %d arguments", errUsage, len(pos))
	}
	c := chat.Conversation{User: pos[0], Device: pos[1], Agent: pos[2]}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%w: %v", errUsage, err)
	}
	return c, nil
}

func records(raw []string) ([]recordOut, error) {
	out := make([]recordOut, 0, len(raw))
	for _, s := range raw {
		r, err := chat.ParseRecord([]byte(s))
		if err != nil {
			return nil, err
		}
		out = append(out, recordOut{Seq: r.Seq, ReceivedAt: time.UnixMilli(r.ReceivedMS).UTC(), Role: r.Role, Message: json.RawMessage(r.JSON)})
	}
	return out, nil
}

func (a *app) show(ctx context.Context, args []string) error {
	fs := a.flags("show")
	all := fs.Bool("all", false, "every buffered message, not the first few")
	first := fs.Int("first", 5, "how many buffered messages to show without --all")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	c, err := conversation(pos)
	if err != nil {
		return err
	}
	in, err := a.inspector()
	if err != nil {
		return err
	}
	k := in.keys
	dueKey := k.Due()
	if _, ok := in.rdb.(*redis.ClusterClient); ok {
		dueKey = k.DueSlot(chat.SlotTag(chat.Slot(k.Buffer(c))))
	}
	stop := int64(*first - 1)
	if *all {
		stop = -1
	}
	pipe := in.rdb.Pipeline()
	llen := pipe.LLen(ctx, k.Buffer(c))
	bufCmd := pipe.LRange(ctx, k.Buffer(c), 0, stop)
	infCmd := pipe.LRange(ctx, k.Inflight(c), 0, -1)
	metaCmd := pipe.HGetAll(ctx, k.Meta(c))
	lockCmd := pipe.Get(ctx, k.Lock(c))
	lockTTL := pipe.PTTL(ctx, k.Lock(c))
	fenceCmd := pipe.Get(ctx, k.Fence(c))
	score := pipe.ZScore(ctx, dueKey, c.Tag())
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redis: %w", err)
	}
	out := showOut{User: c.User, Device: c.Device, Agent: c.Agent, Tag: c.Tag(), Buffered: llen.Val(), Meta: metaCmd.Val()}
	if s, err := score.Result(); err == nil {
		t := time.UnixMilli(int64(s)).UTC()
		out.InDueIndex, out.Oldest = true, &t
	}
	if out.Messages, err = records(bufCmd.Val()); err != nil {
		return err
	}
	meta := metaCmd.Val()
	if recs := infCmd.Val(); len(recs) > 0 {
		token, _ := strconv.ParseInt(meta["batch"], 10, 64)
		inf := &inflightOut{BatchID: chat.BatchID(c, token), Token: token, Reason: meta["reason"]}
		if t, ok := msField(meta, "created"); ok {
			inf.Created, inf.Age = &t, age(in.now, t)
		}
		if t, ok := msField(meta, "refused"); ok {
			inf.RefusedSince = &t
		}
		if inf.Messages, err = records(recs); err != nil {
			return err
		}
		out.Inflight = inf
	}
	if v, err := lockCmd.Result(); err == nil {
		out.Lock = lockOut{Held: true, Holder: v, TTLms: lockTTL.Val().Milliseconds()}
	}
	out.Lock.Fence = fenceCmd.Val()
	if out.Lock.Fence == "" {
		out.Lock.Fence = meta["fence"]
	}
	out.LastBatch = a.lastBatch(ctx, c, meta)

	return a.emit(out, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "conversation\t%s / %s / %s (tag %s)\n", c.User, c.Device, c.Agent, out.Tag)
		oldest := "-"
		if out.Oldest != nil {
			oldest = out.Oldest.Format(time.RFC3339Nano) + " (" + dur(age(in.now, *out.Oldest)) + " ago)"
		}
		fmt.Fprintf(w, "oldest message\t%s\n", oldest)
		fmt.Fprintf(w, "buffered\t%d (showing %d)\n", out.Buffered, len(out.Messages))
		for _, r := range out.Messages {
			fmt.Fprintf(w, "  seq %d\t%s\t%s\t%s\n", r.Seq, r.ReceivedAt.Format(time.RFC3339Nano), r.Role, clip(string(r.Message), 100))
		}
		if out.Inflight == nil {
			fmt.Fprintf(w, "in flight\tnone\n")
		} else {
			refused := ""
			if out.Inflight.RefusedSince != nil {
				refused = ", CHAT_FLUSHED refusing it since " + out.Inflight.RefusedSince.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "in flight\t%s, reason %s, %d messages, age %s%s\n", out.Inflight.BatchID, out.Inflight.Reason,
				len(out.Inflight.Messages), dur(out.Inflight.Age), refused)
		}
		if out.Lock.Held {
			fmt.Fprintf(w, "lock\theld by %s for %dms more, fence %s\n", out.Lock.Holder, out.Lock.TTLms, out.Lock.Fence)
		} else {
			fmt.Fprintf(w, "lock\tfree (last fence %s)\n", orDash(out.Lock.Fence))
		}
		if out.LastBatch == nil {
			fmt.Fprintf(w, "last batch\tnone\n")
		} else {
			fmt.Fprintf(w, "last batch\t%s\n", strings.Join(slices.DeleteFunc([]string{out.LastBatch.BatchID, out.LastBatch.Reason,
				out.LastBatch.CreateTime, out.LastBatch.Note}, func(s string) bool { return s == "" }), " "))
		}
	})
}

// lastBatch is the conversation's last published batch: the meta hash's
// counter and the CHAT_FLUSHED position the commit recorded, read from
// CHAT_FLUSHED for its create_time.
func (a *app) lastBatch(ctx context.Context, c chat.Conversation, meta map[string]string) *lastBatchOut {
	ctr, err := strconv.ParseInt(meta["ctr"], 10, 64)
	if err != nil {
		return nil
	}
	lb := &lastBatchOut{BatchID: chat.BatchID(c, ctr), Token: ctr}
	if meta["batch"] == meta["ctr"] {
		lb.Note = "(the batch in flight holds the last token; the last published one is earlier)"
	}
	seq, err := strconv.ParseUint(meta["pos"], 10, 64)
	if err != nil || seq == 0 {
		return lb
	}
	lb.Seq = seq
	_, js, err := a.jetstream()
	if err != nil {
		lb.Note = "(CHAT_FLUSHED not read: " + err.Error() + ")"
		return lb
	}
	s, err := js.Stream(ctx, a.cfg.streams().FlushedStream)
	if err != nil {
		lb.Note = "(CHAT_FLUSHED not read: " + err.Error() + ")"
		return lb
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		lb.Note = fmt.Sprintf("(CHAT_FLUSHED seq %d: %v)", seq, err)
		return lb
	}
	var b struct {
		BatchID    string `json:"batch_id"`
		CreateTime string `json:"create_time"`
		Reason     string `json:"reason"`
	}
	if json.Unmarshal(m.Data, &b) == nil && b.BatchID != "" {
		lb.BatchID, lb.CreateTime, lb.Reason = b.BatchID, b.CreateTime, b.Reason
		if i := strings.LastIndexByte(b.BatchID, '#'); i >= 0 {
			lb.Token, _ = strconv.ParseInt(b.BatchID[i+1:], 10, 64)
		}
	}
	return lb
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ---- flush

type flushOut struct {
	User    string   `json:"user"`
	Device  string   `json:"device"`
	Agent   string   `json:"agent"`
	OK      bool     `json:"ok"`
	Batches int      `json:"batches"`
	IDs     []string `json:"batch_ids"`
	Error   string   `json:"error,omitempty"`
}

type flushAllOut struct {
	Flushes []flushOut `json:"flushes"`
	Batches int        `json:"batches"`
	Failed  int        `json:"failed"`
}

func (a *app) flush(ctx context.Context, args []string) error {
	fs := a.flags("flush")
	due := fs.Bool("due", false, "flush every due conversation (oldest message older than CHAT_FLUSH_MAX_AGE)")
	limit := fs.Int("limit", 1000, "with --due: at most this many conversations")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for a worker's reply")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	nc, _, err := a.jetstream()
	if err != nil {
		return err
	}
	var convs []chat.Conversation
	if *due {
		if len(pos) > 0 {
			return fmt.Errorf("%w: flush --due takes no ids", errUsage)
		}
		in, err := a.inspector()
		if err != nil {
			return err
		}
		keys, err := in.dueKeys(ctx)
		if err != nil {
			return err
		}
		horizon := in.now.Add(-in.maxAge).UnixMilli()
		var after *entry
	scan:
		for len(convs) < *limit {
			es, err := in.page(ctx, keys, after, min(pageSize, *limit-len(convs)))
			if err != nil {
				return err
			}
			for _, e := range es {
				if e.oldest >= horizon {
					break scan
				}
				c, err := chat.ParseTag(e.tag)
				if err != nil {
					return fmt.Errorf("due index holds %q: %w", e.tag, err)
				}
				convs = append(convs, c)
			}
			if len(es) == 0 {
				break
			}
			after = &es[len(es)-1]
		}
	} else {
		c, err := conversation(pos)
		if err != nil {
			return err
		}
		convs = []chat.Conversation{c}
	}
	results := make([]flushOut, len(convs))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, c := range convs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i] = a.flushOne(ctx, nc, c, *timeout)
		}()
	}
	wg.Wait()
	if !*due {
		r := results[0]
		if err := a.emit(r, func(w *tabwriter.Writer) { printFlush(w, r) }); err != nil {
			return err
		}
		if !r.OK {
			return errors.New(r.Error)
		}
		return nil
	}
	out := flushAllOut{Flushes: results}
	for _, r := range results {
		out.Batches += r.Batches
		if !r.OK {
			out.Failed++
		}
	}
	if err := a.emit(out, func(w *tabwriter.Writer) {
		for _, r := range results {
			printFlush(w, r)
		}
		fmt.Fprintf(w, "%d conversations flushed, %d batches, %d failed\n", len(results)-out.Failed, out.Batches, out.Failed)
	}); err != nil {
		return err
	}
	if out.Failed > 0 {
		return fmt.Errorf("%d of %d flushes failed", out.Failed, len(results))
	}
	return nil
}

func printFlush(w *tabwriter.Writer, r flushOut) {
	if r.OK {
		fmt.Fprintf(w, "%s / %s / %s\tflushed\t%d batches\t%s\n", r.User, r.Device, r.Agent, r.Batches, strings.Join(r.IDs, " "))
	} else {
		fmt.Fprintf(w, "%s / %s / %s\tfailed\t%s\n", r.User, r.Device, r.Agent, r.Error)
	}
}

// flushOne asks a worker to flush c on the flush subject.
func (a *app) flushOne(ctx context.Context, nc *nats.Conn, c chat.Conversation, timeout time.Duration) flushOut {
	out := flushOut{User: c.User, Device: c.Device, Agent: c.Agent, IDs: []string{}}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	subj := a.cfg.streams().Flush(c)
	m, err := nc.RequestWithContext(ctx, subj, nil)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			err = fmt.Errorf("no worker answers on %s", subj)
		}
		out.Error = err.Error()
		return out
	}
	var r worker.FlushReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		out.Error = fmt.Sprintf("reply not understood: %v", err)
		return out
	}
	out.OK, out.Batches, out.Error = r.OK, r.Batches, r.Error
	if r.BatchIDs != nil {
		out.IDs = r.BatchIDs
	}
	return out
}
