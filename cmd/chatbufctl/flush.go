package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/worker"
)

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
