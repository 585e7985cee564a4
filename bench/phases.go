package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// round runs one round of a row unless the row already failed; it reports
// whether the round was taken. A round that fails is tried once more (the
// failure stays in the notes); a second failure marks the row failed.
func round[T any](ctx context.Context, h *harness, row *Row[T], what string, f func() (T, error)) bool {
	if row.Error != "" || ctx.Err() != nil {
		return false
	}
	v, err := f()
	if err != nil && ctx.Err() == nil {
		h.logf("%s: failed, trying once more: %v", what, err)
		h.res.Notes = append(h.res.Notes, fmt.Sprintf("%s: a round failed and was run again: %s", what, strings.ReplaceAll(err.Error(), "\n", " ")))
		v, err = f()
	}
	if err != nil {
		if ctx.Err() == nil {
			row.Error = h.failed(what, err)
		}
		return false
	}
	row.Rounds = append(row.Rounds, v)
	return true
}

// The buffer layer's rows.
const (
	bufBatched = "AppendBatch, 256 messages per call"
	bufSingle  = "one round trip per message (AppendBatch of 1)"
)

// measureRedisSide runs reference (1) and the buffer layer on each Redis
// configuration, round by round interleaved, so that each round's figures
// share the machine's mood; one round trip per message runs on the first
// configuration only.
func (h *harness) measureRedisSide(ctx context.Context) {
	o := h.opts
	lanes := runtime.NumCPU()
	r := &h.res
	note := fmt.Sprintf("%d lanes (goroutines, conversations split between them as the worker's lanes are); each lane appends, then claims and commits "+
		"the buffers that call filled in one ClaimMany and one CommitMany, as the worker's grouped flush does (max 10 min 10), "+
		"and at the end the partial ones; fence 1, no lock", lanes)
	type variant struct {
		row   *Row[bufferResult]
		batch int
	}
	type server struct {
		rs       *redisServer
		ref      *Row[float64]
		variants []variant
	}
	var servers []server
	for i, rs := range h.redises {
		label := rs.cfg.Label()
		s := server{rs: rs, ref: &Row[float64]{Name: "redis-benchmark RPUSH", Redis: label, Messages: o.benchN}}
		batched := &Row[bufferResult]{Name: bufBatched, Redis: label, Conversations: o.conversations, Messages: o.messages, Notes: []string{note}}
		s.variants = append(s.variants, variant{batched, 256})
		if i == 0 {
			single := &Row[bufferResult]{Name: bufSingle, Redis: label, Conversations: o.conversations, Messages: o.messages}
			s.variants = append(s.variants, variant{single, 1})
		}
		r.RedisRef = append(r.RedisRef, s.ref)
		for _, v := range s.variants {
			r.Buffer = append(r.Buffer, v.row)
		}
		servers = append(servers, s)
	}

	h.logf("building %s buffer items", num(float64(o.messages), 0))
	items := bufferItems(o.messages, o.conversations, lanes)
	for i := range o.rounds {
		for _, s := range servers {
			label := s.rs.cfg.Label()
			h.logf("round %d/%d: redis-benchmark RPUSH -n %d, %s", i+1, o.rounds, o.benchN, label)
			if round(ctx, h, s.ref, "redis-benchmark, "+label, func() (float64, error) { return redisBenchRound(ctx, s.rs, o.benchN) }) {
				h.logf("  %s req/s", rate(s.ref.Rounds[len(s.ref.Rounds)-1]))
			}
			for _, x := range s.variants {
				h.logf("round %d/%d: buffer layer, %s, %s", i+1, o.rounds, x.row.Name, label)
				if round(ctx, h, x.row, "buffer layer: "+x.row.Name+", "+label, func() (bufferResult, error) { return bufferRound(ctx, s.rs, items, x.batch) }) {
					v := x.row.Rounds[len(x.row.Rounds)-1]
					h.logf("  %s msgs/s, %.3f round trips/msg, %.2f Redis writes/msg", rate(v.Rate), v.RoundTripsPerMsg, v.WritesPerMsg)
				}
			}
		}
	}
	for _, s := range servers {
		s.ref.Median = median(s.ref.Rounds)
		for _, x := range s.variants {
			x.row.finish()
			if x.row.ok() && s.ref.ok() {
				x.row.Ratio, x.row.RatioTo = x.row.Median.Rate/s.ref.Median, "ref (1), "+s.rs.cfg.Label()
			}
		}
	}
}

// redisRef returns reference (1) measured on the configuration label.
func (h *harness) redisRef(label string) *Row[float64] {
	for _, r := range h.res.RedisRef {
		if r.Redis == label && r.ok() {
			return r
		}
	}
	return nil
}

// bufferRow returns the buffer layer's row name on the configuration label.
func (h *harness) bufferRow(name, label string) *Row[bufferResult] {
	for _, r := range h.res.Buffer {
		if r.Name == name && r.Redis == label && r.ok() {
			return r
		}
	}
	return nil
}

// measureDrains runs reference (2) and the drain on each nats-server, the
// drain once per Redis configuration, all interleaved round by round, so
// that a slow spell of the machine falls on every figure alike.
func (h *harness) measureDrains(ctx context.Context) {
	o := h.opts
	type server struct {
		bin    *natsBinary
		ref    *Row[jsRefResult]
		drains []*Row[drainResult]
		specs  []drainSpec
	}
	var servers []server
	convs := o.conversations
	if c := h.res.Corpus; c != nil {
		convs += c.Conversations
	}
	for _, bin := range h.drainServers() {
		s := server{bin: bin, ref: &Row[jsRefResult]{Name: "JetStream consume+ack", NATS: bin, Conversations: convs, Messages: o.messages + len(h.corpus)}}
		h.res.JSRef = append(h.res.JSRef, s.ref)
		for _, rs := range h.redises {
			spec := h.drainSpec(bin, o.conversations, o.messages, nil, h.corpus)
			spec.redis = rs
			d := &Row[drainResult]{Name: "drain", NATS: bin, Redis: rs.cfg.Label(), Conversations: convs, Messages: spec.total(), Env: spec.env, Notes: spec.notes}
			s.drains, s.specs = append(s.drains, d), append(s.specs, spec)
			h.res.Drain = append(h.res.Drain, d)
		}
		servers = append(servers, s)
	}
	for i := range o.rounds {
		for _, s := range servers {
			h.logf("round %d/%d: JetStream consume+ack reference, %s messages, %s", i+1, o.rounds, num(float64(o.messages), 0), s.bin.Version)
			if round(ctx, h, s.ref, "JetStream reference "+s.bin.Version, func() (jsRefResult, error) {
				return jsRefRound(ctx, h, s.bin, o.messages, o.conversations, h.corpus)
			}) {
				h.logf("  %s msgs/s", rate(s.ref.Rounds[len(s.ref.Rounds)-1].Rate))
			}
			for j, d := range s.drains {
				h.drainRound(ctx, d, s.specs[j], fmt.Sprintf("round %d/%d: drain", i+1, o.rounds))
			}
		}
	}
	for _, s := range servers {
		s.ref.finish()
		for _, d := range s.drains {
			d.finish()
			h.ratioToRef(d)
		}
	}
}

// drainSpec builds a drain of msgs over convs; when buffers do not all fill,
// the worker flushes by age with a small CHAT_FLUSH_MAX_AGE.
func (h *harness) drainSpec(bin *natsBinary, convs, msgs int, env map[string]string, corpus []corpusMsg) drainSpec {
	s := drainSpec{nats: bin, redis: h.redis, convs: convs, msgs: msgs, env: maps.Clone(env), corpus: corpus}
	if s.env == nil {
		s.env = map[string]string{}
	}
	if len(corpus) > 0 {
		s.notes = append(s.notes, h.corpusNote)
	}
	if !s.fullBuffers() {
		s.env["CHAT_FLUSH_MAX_AGE"] = h.opts.ageMax
		why := fmt.Sprintf("%.3g message(s) per conversation", float64(msgs)/float64(convs))
		if len(corpus) > 0 {
			why = "the corpus's conversations end in partial buffers"
		}
		s.notes = append(s.notes, fmt.Sprintf("%s: buffers do not all fill, so CHAT_FLUSH_MAX_AGE=%s and the age sweeper "+
			"(every 1 s) flushes the partial ones; the time runs until all messages are in batches (or the time box)", why, h.opts.ageMax))
	}
	return s
}

func (h *harness) drainRound(ctx context.Context, row *Row[drainResult], s drainSpec, what string) {
	h.logf("%s: %s messages over %s conversations, %s, Redis %s %s", what, num(float64(s.total()), 0), num(float64(s.convs), 0), s.nats.Version, s.redis.cfg.Label(), envString(s.env))
	if round(ctx, h, row, fmt.Sprintf("drain %s conversations %s %s %s", num(float64(s.convs), 0), s.nats.Version, s.redis.cfg.Label(), envString(s.env)),
		func() (drainResult, error) { return drainRound(ctx, h, s) }) {
		v := row.Rounds[len(row.Rounds)-1]
		h.logf("  %s msgs/s in %.1fs (preload %s msgs/s); %.3f round trips/msg, %.2f Redis writes/msg, worker %.1f µs/msg, peak RSS %.1f MiB",
			rate(v.Rate), v.ElapsedS, rate(v.PreloadRate), v.RoundTripsPerMsg, v.WritesPerMsg, v.WorkerCPUus, v.WorkerPeakRSSMiB)
	}
}

func envString(env map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		parts = append(parts, k+"="+env[k])
	}
	return strings.Join(parts, " ")
}

// jsRef returns the JetStream reference measured on bin.
func (h *harness) jsRef(bin *natsBinary) *Row[jsRefResult] {
	for _, r := range h.res.JSRef {
		if r.NATS == bin && r.ok() {
			return r
		}
	}
	return nil
}

func (h *harness) ratioToRef(row *Row[drainResult]) {
	if ref := h.jsRef(row.NATS); ref != nil && row.ok() {
		row.Ratio, row.RatioTo = row.Median.Rate/ref.Median.Rate, "ref (2)"
	}
}

// mainDrain is the drain on the current nats-server, else the first one,
// on the first Redis configuration.
func (h *harness) mainDrain() *Row[drainResult] {
	for _, d := range h.res.Drain {
		if d.NATS == h.current && d.Redis == h.redis.cfg.Label() && d.ok() {
			return d
		}
	}
	for _, d := range h.res.Drain {
		if d.Redis == h.redis.cfg.Label() && d.ok() {
			return d
		}
	}
	return nil
}

// measureBaseline is the drain with WORKER_APPEND_BATCH=1 beside the same
// drain pipelined: the drain measured before when the scale is the drain's
// (the default), else a pipelined drain at the baseline's scale, round by
// round interleaved.
func (h *harness) measureBaseline(ctx context.Context) {
	o := h.opts
	bin := h.current
	if main := h.mainDrain(); main != nil {
		bin = main.NATS
	}
	if h.jsRef(bin) == nil {
		h.measureRefOnly(ctx, bin)
	}
	var batched *Row[drainResult]
	if main := h.mainDrain(); main != nil && main.Messages == o.baseMessages && main.Conversations == o.baseConvs {
		batched = main
	}
	var rows []*Row[drainResult]
	for _, env := range []map[string]string{nil, {"WORKER_APPEND_BATCH": "1"}, {"CHAT_BUFFER_SIZE": strconv.Itoa(2 * bufferSize)}} {
		if env == nil && batched != nil {
			rows = append(rows, batched)
			continue
		}
		spec := h.drainSpec(bin, o.baseConvs, o.baseMessages, env, nil)
		name := "baseline scale, WORKER_APPEND_BATCH=256 (default)"
		switch {
		case env["WORKER_APPEND_BATCH"] != "":
			name = "baseline: WORKER_APPEND_BATCH=1"
		case env["CHAT_BUFFER_SIZE"] != "":
			name = "batches twice as large: CHAT_BUFFER_SIZE=" + env["CHAT_BUFFER_SIZE"]
		}
		row := &Row[drainResult]{Name: name, NATS: bin, Redis: spec.redis.cfg.Label(), Conversations: o.baseConvs, Messages: o.baseMessages, Env: spec.env, Notes: spec.notes}
		rows = append(rows, row)
	}
	h.res.Baseline = rows
	for i := range o.rounds {
		for _, row := range rows {
			if row == batched {
				continue
			}
			spec := h.drainSpec(bin, o.baseConvs, o.baseMessages, row.Env, nil)
			h.drainRound(ctx, row, spec, fmt.Sprintf("round %d/%d: %s", i+1, o.rounds, row.Name))
		}
	}
	for _, row := range rows {
		if row != batched {
			row.finish()
			h.ratioToRef(row)
		}
	}
	if single := rows[1]; single.ok() && rows[0].ok() {
		single.Relative, single.RelativeTo = single.Median.Rate/rows[0].Median.Rate, "pipelined"
	}
	if twice := rows[2]; twice.ok() && rows[0].ok() {
		twice.Relative, twice.RelativeTo = twice.Median.Rate/rows[0].Median.Rate, "batches of "+strconv.Itoa(bufferSize)
	}
}

// measureRefOnly measures reference (2) on bin when no drain did.
func (h *harness) measureRefOnly(ctx context.Context, bin *natsBinary) {
	o := h.opts
	ref := &Row[jsRefResult]{Name: "JetStream consume+ack", NATS: bin, Conversations: o.conversations, Messages: o.messages}
	h.res.JSRef = append(h.res.JSRef, ref)
	for i := range o.rounds {
		h.logf("round %d/%d: JetStream consume+ack reference, %s", i+1, o.rounds, bin.Version)
		round(ctx, h, ref, "JetStream reference "+bin.Version, func() (jsRefResult, error) {
			return jsRefRound(ctx, h, bin, o.messages, o.conversations, nil)
		})
	}
	ref.finish()
}

// measureSteady publishes at half the drain rate, or at --steady-rate.
func (h *harness) measureSteady(ctx context.Context) {
	o := h.opts
	rate, note := o.steadyRate, fmt.Sprintf("rate = %s msgs/s, set by --steady-rate", num(o.steadyRate, 0))
	if rate <= 0 {
		main := h.mainDrain()
		if main == nil {
			h.res.Steady = &Row[steadyResult]{Name: "steady state", Error: h.failed("steady state", errors.New("no drain rate to halve (run the drain phase or set --steady-rate)"))}
			return
		}
		rate = main.Median.Rate / 2
		note = fmt.Sprintf("rate = half the drain's %s msgs/s on %s", num(main.Median.Rate, 0), main.NATS.Version)
	}
	row := &Row[steadyResult]{Name: "steady state", NATS: h.current, Redis: h.redis.cfg.Label(), Conversations: steadyConvs,
		Notes: []string{note}}
	h.res.Steady = row
	for i := range o.rounds {
		h.logf("round %d/%d: steady state, %s msgs/s for %v", i+1, o.rounds, num(rate, 0), o.steady)
		if round(ctx, h, row, "steady state", func() (steadyResult, error) { return steadyRound(ctx, h, h.current, rate, o.steady) }) {
			v := row.Rounds[len(row.Rounds)-1]
			h.logf("  size-batch latency p50 %.1f ms p99 %.1f ms (n=%d); PubAck p99 %.1f ms; verify ok %t",
				v.SizeLatency.P50MS, v.SizeLatency.P99MS, v.SizeLatency.Count, v.PubAck.P99MS, v.VerifyOK)
		}
	}
	row.finish()
	if row.ok() {
		row.Messages = row.Median.Published
		if row.Median.PubAck.P99MS > 0 {
			row.Ratio, row.RatioTo = row.Median.SizeLatency.P99MS/row.Median.PubAck.P99MS, "PubAck p99"
		}
		for _, v := range row.Rounds {
			if !v.VerifyOK {
				row.Error = h.failed("steady state", fmt.Errorf("verify failed: lost %d, duplicated %d, misplaced %d, malformed %d",
					v.Lost, v.Duplicated, v.Misplaced, v.Malformed))
				break
			}
		}
	}
}
