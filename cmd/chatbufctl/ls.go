package main

import (
	"context"
	"fmt"
	"slices"
	"text/tabwriter"
)

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
