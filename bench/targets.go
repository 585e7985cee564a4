package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// drainTarget is the least ratio of the drain to reference (2) on a Redis
// configuration: 0.5 without persistence, 0.35 with AOF everysec (each
// write also goes to the append-only file); 0: no target.
func drainTarget(label string) float64 {
	switch label {
	case newRedisConfig("off").Label():
		return 0.5
	case newRedisConfig("everysec").Label():
		return 0.35
	}
	return 0
}

// targets checks the goals against what was measured.
func (h *harness) targets() {
	r := &h.res
	add := func(t Target, skipped string) {
		if skipped != "" {
			t.Skipped = skipped
			t.Measured = "–"
		} else {
			t.check()
		}
		r.Targets = append(r.Targets, t)
	}
	for _, d := range r.Drain {
		ref := h.jsRef(d.NATS)
		limit := drainTarget(d.Redis)
		t := Target{Goal: fmt.Sprintf("drain ≥ %.2g × JetStream consume+ack reference (%s, Redis %s)", limit, natsName(d.NATS), d.Redis), Limit: limit}
		switch {
		case limit == 0:
			t.Goal = fmt.Sprintf("drain vs JetStream consume+ack reference (%s, Redis %s)", natsName(d.NATS), d.Redis)
			add(t, "no target for "+d.Redis)
			continue
		case !d.ok() || ref == nil:
			add(t, "not measured")
			continue
		}
		t.Value = d.Ratio
		t.Measured = fmt.Sprintf("%s ÷ %s msgs/s = %s (%s Redis writes/msg)", rate(d.Median.Rate), rate(ref.Median.Rate), ratio(d.Ratio), per(d.Median.WritesPerMsg))
		add(t, "")
	}
	for _, c := range r.Redis.Configs {
		label := c.Label()
		t := Target{Goal: "buffer layer ≥ 0.4 × redis-benchmark RPUSH reference (Redis " + label + ")", Limit: 0.4}
		b, ref := h.bufferRow(bufBatched, label), h.redisRef(label)
		if b == nil || ref == nil {
			add(t, "not measured")
			continue
		}
		t.Value = b.Ratio
		t.Measured = fmt.Sprintf("%s ÷ %s = %s (%s Redis writes/msg)", rate(b.Median.Rate), rate(ref.Median), ratio(b.Ratio), per(b.Median.WritesPerMsg))
		add(t, "")
	}
	perDrain := func(goal string, limit float64, value func(drainResult) float64, measured func(drainResult) string) {
		for _, d := range r.Drain {
			t := Target{Goal: goal + " (" + natsName(d.NATS) + ", Redis " + d.Redis + ")", Limit: limit, AtMost: true}
			if !d.ok() {
				add(t, "not measured")
				continue
			}
			t.Value, t.Measured = value(d.Median), measured(d.Median)
			add(t, "")
		}
	}
	perDrain("≤ 0.1 Redis round trips per message in the drain", 0.1, func(m drainResult) float64 { return m.RoundTripsPerMsg },
		func(m drainResult) string {
			return per(m.RoundTripsPerMsg) + " (" + per(m.CommandsPerMsg) + " commands)"
		})
	rows := slices.DeleteFunc(h.growthRows(), func(x *Row[drainResult]) bool { return !x.ok() })
	gt := Target{Goal: "drain at 1,000,000 conversations ≥ 0.8 × drain at 1,000", Limit: 0.8}
	if len(rows) >= 2 {
		lo, hi := rows[0], rows[len(rows)-1]
		if hi.Conversations != 1_000_000 || lo.Conversations != 1000 {
			gt.Goal = fmt.Sprintf("drain at %s conversations ≥ 0.8 × drain at %s (the target names 1,000,000 and 1,000)",
				num(float64(hi.Conversations), 0), num(float64(lo.Conversations), 0))
		}
		gt.Value = hi.Median.Rate / lo.Median.Rate
		gt.Measured = fmt.Sprintf("%s ÷ %s msgs/s = %s", rate(hi.Median.Rate), rate(lo.Median.Rate), ratio(gt.Value))
		if !hi.Median.Complete || hi.Messages/hi.Conversations < bufferSize {
			gt.Measured += fmt.Sprintf(" (%s message(s) per conversation, flushed by age", strconv.FormatFloat(float64(hi.Messages)/float64(hi.Conversations), 'g', 3, 64))
			if !hi.Median.Complete {
				gt.Measured += ", time-boxed"
			}
			gt.Measured += fmt.Sprintf("; appends alone: %s vs %s msgs/s = %s)", rate(hi.Median.AppendRate), rate(lo.Median.AppendRate),
				ratio(hi.Median.AppendRate/lo.Median.AppendRate))
		}
		add(gt, "")
	} else {
		add(gt, "fewer than two growth rows")
	}
	perDrain("worker peak RSS ≤ 64 MiB during the drain", 64, func(m drainResult) float64 { return m.WorkerPeakRSSMiB },
		func(m drainResult) string { return mib(m.WorkerPeakRSSMiB) })
	ht := Target{Goal: "HTTP ingest through the gateway ≥ 0.5 × direct JetStream publishing", Limit: 0.5}
	if x := r.HTTP; x.ok() {
		ht.Value = x.Ratio
		ht.Measured = fmt.Sprintf("%s ÷ %s msgs/s = %s (%d per request, %d connections)", rate(x.Median.HTTPRate), rate(x.Median.DirectRate),
			ratio(x.Ratio), httpBatch, httpConns)
		add(ht, "")
	} else {
		add(ht, "not measured")
	}
	st := Target{Goal: "size-batch latency p99 ≤ 50 ms at half load", Limit: 50, AtMost: true}
	if s := r.Steady; s.ok() {
		st.Value = s.Median.SizeLatency.P99MS
		st.Measured = fmt.Sprintf("%s at %s msgs/s (p50 %s; PubAck p99 %s; %s)", ms(st.Value), rate(s.Median.PublishedRate),
			ms(s.Median.SizeLatency.P50MS), ms(s.Median.PubAck.P99MS), strings.Join(s.Notes, "; "))
		add(st, "")
	} else {
		add(st, "not measured")
	}
	h.notes()
}

// notes adds the per-message cost breakdown of the main drain.
func (h *harness) notes() {
	r := &h.res
	for _, d := range r.Drain {
		if !d.ok() {
			continue
		}
		m := d.Median
		total := m.WorkerCPUus + m.RedisCPUus + m.NATSCPUus
		bound := float64(r.Host.CPUs) * 1e6 / total
		r.Notes = append(r.Notes, fmt.Sprintf("Drain on %s, Redis %s: %s µs of CPU per message (worker %s, redis-server %s, nats-server %s); "+
			"%d cores allow at most %s msgs/s at that cost, and the drain ran at %s (%.0f%% of that bound).",
			natsName(d.NATS), d.Redis, us(total), us(m.WorkerCPUus), us(m.RedisCPUus), us(m.NATSCPUus), r.Host.CPUs, rate(bound), rate(m.Rate), 100*m.Rate/bound))
	}
	if len(r.Baseline) == 3 && r.Baseline[0].ok() && r.Baseline[2].ok() {
		r.Notes = append(r.Notes, batchSplit(r.Baseline[0], r.Baseline[2]))
	}
	if len(r.Baseline) >= 2 && r.Baseline[0].ok() && r.Baseline[1].ok() {
		d, b := r.Baseline[0], r.Baseline[1]
		r.Notes = append(r.Notes, fmt.Sprintf("Pipelined appends (WORKER_APPEND_BATCH=256) vs one round trip per append: %s vs %s msgs/s (%s), %s vs %s round trips/msg. "+
			"WORKER_APPEND_BATCH also sets the worker's pull window (lanes × it), so the baseline pulls 2 messages at a time as well.",
			rate(d.Median.Rate), rate(b.Median.Rate), ratio(d.Median.Rate/b.Median.Rate), per(d.Median.RoundTripsPerMsg), per(b.Median.RoundTripsPerMsg)))
	}
	if a, b := h.bufferRow(bufBatched, h.redis.cfg.Label()), h.bufferRow(bufSingle, h.redis.cfg.Label()); a != nil && b != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("Buffer layer: AppendBatch of 256 vs 1 per call: %s vs %s msgs/s (%s).",
			rate(a.Median.Rate), rate(b.Median.Rate), ratio(a.Median.Rate/b.Median.Rate)))
	}
	for _, d := range r.Drain {
		off := h.drainOn(d.NATS, h.redis.cfg.Label())
		if !d.ok() || off == nil || off == d {
			continue
		}
		a, b := d.Median, off.Median
		r.Notes = append(r.Notes, fmt.Sprintf("Drain on %s with Redis %s vs %s: %s vs %s msgs/s (%s); redis-server %s vs %s µs/msg of CPU "+
			"for %s Redis writes/msg; the append-only file grew %s bytes/msg (%s rewrite(s) during the drain, %s fsync(s) delayed by the disk).",
			natsName(d.NATS), d.Redis, off.Redis, rate(a.Rate), rate(b.Rate), ratio(a.Rate/b.Rate), us(a.RedisCPUus), us(b.RedisCPUus),
			per(a.WritesPerMsg), aofBytes(a.AOF), num(a.AOF.Rewrites, 0), num(a.AOF.DelayedFsync, 0)))
	}
	r.Notes = append(r.Notes, "Ratios are of medians measured in this sitting; spread is the min–max over the rounds. "+
		"Worker CPU and round trips count from the worker's start (startup, readiness probes and the harness's /metrics polls every 50 ms included).")
}

// drainOn returns the drain on bin and the Redis configuration label.
func (h *harness) drainOn(bin *natsBinary, label string) *Row[drainResult] {
	for _, d := range h.res.Drain {
		if d.NATS == bin && d.Redis == label && d.ok() {
			return d
		}
	}
	return nil
}

// batchSplit splits the CPU per message of drain a (batches of bufferSize)
// into what each message costs and what each batch costs, from drain b,
// the same load in batches twice as large: per message c = m + k/size, so
// k = (c_a - c_b) / (1/size_a - 1/size_b).
func batchSplit(a, b *Row[drainResult]) string {
	sa, sb := float64(bufferSize), float64(2*bufferSize)
	var parts []string
	var perBatch, perMsg float64
	for _, x := range []struct {
		name   string
		ca, cb float64
	}{
		{"worker", a.Median.WorkerCPUus, b.Median.WorkerCPUus},
		{"redis-server", a.Median.RedisCPUus, b.Median.RedisCPUus},
		{"nats-server", a.Median.NATSCPUus, b.Median.NATSCPUus},
	} {
		k := (x.ca - x.cb) / (1/sa - 1/sb)
		m := x.ca - k/sa
		perBatch += k
		perMsg += m
		parts = append(parts, fmt.Sprintf("%s %s + %s", x.name, us(m), us(k/sa)))
	}
	return fmt.Sprintf("Per message or per batch: the drain in batches of %d and of %d (same load, same server, rounds interleaved) puts its CPU at "+
		"%s µs per message plus %s µs per batch (locking, claiming, publishing to CHAT_FLUSHED, committing, unlocking), so that at batches of %d "+
		"%s of the %s µs/msg are the batches' (per message + per batch share: %s). These are differences of noisy figures: read them as rough.",
		bufferSize, 2*bufferSize, us(perMsg), us(perBatch), bufferSize, us(perBatch/sa), us(perMsg+perBatch/sa), strings.Join(parts, ", "))
}
