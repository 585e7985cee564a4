package main

import (
	"context"
	"fmt"
	"slices"
)

// longRow: growth rows of more messages than this run --growth-rounds
// rounds (a drain of 10,000,000 takes minutes).
const longRow = 1_000_000

// measureGrowth drains at each conversation count of --growth, then the
// --growth-age row of one message per conversation.
func (h *harness) measureGrowth(ctx context.Context) {
	o := h.opts
	for _, convs := range o.growth {
		if convs > o.maxConvs {
			h.logf("growth: %s conversations skipped (--max-conversations %s)", num(float64(convs), 0), num(float64(o.maxConvs), 0))
			h.res.Notes = append(h.res.Notes, fmt.Sprintf("growth row of %s conversations skipped (--max-conversations=%d)", num(float64(convs), 0), o.maxConvs))
			continue
		}
		msgs := min(max(o.messages, bufferSize*convs), o.growthCap)
		if msgs >= convs {
			msgs = msgs / convs * convs // the same number for every conversation
		}
		h.res.Growth = append(h.res.Growth, h.growthRow(ctx, "growth", convs, msgs))
	}
	h.res.growthTable = h.growthRows()
	rows := slices.DeleteFunc(slices.Clone(h.res.growthTable), func(x *Row[drainResult]) bool { return !x.ok() })
	if len(rows) > 0 {
		for _, x := range rows[1:] {
			x.Relative, x.RelativeTo = x.Median.Rate/rows[0].Median.Rate, num(float64(rows[0].Conversations), 0)+" conversations"
		}
	}
	if o.growthAge > 0 && o.growthAge <= o.maxConvs {
		row := h.growthRow(ctx, "one message per conversation", o.growthAge, o.growthAge)
		if len(rows) > 0 && row.ok() {
			row.Relative, row.RelativeTo = row.Median.Rate/rows[0].Median.Rate, num(float64(rows[0].Conversations), 0)+" conversations"
		}
		h.res.GrowthAge = row
	}
}

// growthRow measures one growth drain of msgs messages over convs
// conversations, time-boxed.
func (h *harness) growthRow(ctx context.Context, name string, convs, msgs int) *Row[drainResult] {
	o := h.opts
	spec := h.drainSpec(h.current, convs, msgs, nil, nil)
	spec.timebox = o.growthTimebox
	rounds := o.rounds
	if !spec.fullBuffers() || msgs > longRow {
		rounds = o.growthRounds
	}
	row := &Row[drainResult]{Name: name, NATS: h.current, Redis: spec.redis.cfg.Label(), Conversations: convs, Messages: msgs, Env: spec.env, Notes: spec.notes}
	for i := range rounds {
		h.drainRound(ctx, row, spec, fmt.Sprintf("round %d/%d: %s drain", i+1, rounds, name))
	}
	row.finish()
	h.ratioToRef(row)
	if row.ok() && !row.Median.Complete {
		row.Notes = append(row.Notes, fmt.Sprintf("time-boxed at %v: %s of %s messages appended and %s in batches by then; "+
			"msgs/s is of those in batches, per-message costs are per appended message",
			o.growthTimebox, num(row.Median.Appended+row.Median.Duplicates, 0), num(float64(msgs), 0), num(row.Median.InBatches, 0)))
	}
	return row
}

// growthRows are the growth rows and the main drain (on the same server),
// by conversations.
func (h *harness) growthRows() []*Row[drainResult] {
	rows := slices.Clone(h.res.Growth)
	for _, d := range h.res.Drain {
		if d.NATS == h.current && d.Redis == h.redis.cfg.Label() && !slices.ContainsFunc(rows, func(r *Row[drainResult]) bool { return r.Conversations == d.Conversations }) {
			c := *d // a copy: its relative figure is the growth table's own
			c.Name = "drain (as above)"
			rows = append(rows, &c)
		}
	}
	slices.SortStableFunc(rows, func(a, b *Row[drainResult]) int { return a.Conversations - b.Conversations })
	return rows
}
