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

	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
)

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
