package main

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// --- formatting ---

// num formats n with thousands separators and the given decimals.
func num(n float64, decimals int) string {
	s := strconv.FormatFloat(math.Abs(n), 'f', decimals, 64)
	whole, frac, _ := strings.Cut(s, ".")
	var b strings.Builder
	if n < 0 {
		b.WriteByte('-')
	}
	for i, c := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if frac != "" {
		b.WriteString("." + frac)
	}
	return b.String()
}

func rate(v float64) string  { return num(v, 0) }
func ratio(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "×" }
func us(v float64) string    { return strconv.FormatFloat(v, 'f', 1, 64) }
func per(v float64) string   { return strconv.FormatFloat(v, 'f', 3, 64) }
func mib(v float64) string   { return strconv.FormatFloat(v, 'f', 1, 64) + " MiB" }
func ms(v float64) string    { return strconv.FormatFloat(v, 'f', 1, 64) + " ms" }

func dur(d time.Duration) string {
	d = d.Round(time.Second)
	if d < time.Minute {
		return d.String()
	}
	return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
}

func natsName(b *natsBinary) string {
	if b == nil {
		return "–"
	}
	return strings.TrimPrefix(b.Version, "nats-server: ") + " (" + b.Label + ")"
}

func batches(m map[string]float64) string {
	if len(m) == 0 {
		return "–"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+" "+num(m[k], 0))
	}
	return strings.Join(parts, ", ")
}

// table renders a Markdown table.
func table(b *strings.Builder, head []string, rows [][]string) {
	b.WriteString("| " + strings.Join(head, " | ") + " |\n|")
	for range head {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	b.WriteString("\n")
}

func errRow(name, err string, cols int) []string {
	r := make([]string, cols)
	r[0] = name
	r[1] = "**error**: " + strings.ReplaceAll(firstLine(err), "|", "/")
	for i := 2; i < cols; i++ {
		r[i] = "–"
	}
	return r
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// markdown renders the results.
func (r *Results) markdown() string {
	var b strings.Builder
	r.header(&b)
	b.WriteString("## Targets\n\n")
	var trows [][]string
	for _, t := range r.Targets {
		trows = append(trows, []string{t.Goal, t.Measured, t.mark()})
	}
	table(&b, []string{"target", "measured", "result"}, trows)
	r.references(&b)
	r.bufferLayer(&b)
	b.WriteString("## Drain\n\n")
	b.WriteString("CHAT_IN preloaded; ONE worker started; the time runs from its start until all messages are in CHAT_FLUSHED batches " +
		"(its `chatbuf_batch_messages_total`, polled every 50 ms). Per-message figures: deltas over the drain divided by the messages " +
		"(worker: its own counters; redis-server and nats-server: CPU from /proc; Redis writes: the calls of write commands in INFO commandstats, " +
		"the scripts' included, each of which the append-only file records; AOF bytes: the growth of `aof_current_size`, sampled every 50 ms, the intervals in which an AOF rewrite ended left out); " +
		"worker peak RSS = VmHWM; flush mean = `chatbuf_flush_duration_seconds` sum/count (claim → publish → commit; a grouped flush counts its " +
		"whole round for each of its batches); reference (2) and the drains (one per Redis configuration) run interleaved, round by round, on each server.\n\n")
	drainTable(&b, r.Drain)
	r.redisTime(&b)
	if len(r.Baseline) > 0 {
		b.WriteString("## Baseline: one Redis round trip per message; batches twice as large\n\n")
		b.WriteString("The drain again with `WORKER_APPEND_BATCH=1`, beside the pipelined drain; relative = its msgs/s ÷ the pipelined one's. " +
			"And the drain in batches of 20 (`CHAT_BUFFER_SIZE=20`), to split the CPU into what each message and what each batch costs (Notes).\n\n")
		if x := r.Baseline[0]; len(r.Drain) > 0 && x.Messages != r.Drain[0].Messages {
			fmt.Fprintf(&b, "The drain scaled down to %s messages over %s conversations (%s per conversation; --baseline-messages, --baseline-conversations); "+
				"both rows at that scale, rounds interleaved.\n\n",
				num(float64(x.Messages), 0), num(float64(x.Conversations), 0), num(float64(x.Messages)/float64(x.Conversations), 0))
		}
		drainTable(&b, r.Baseline)
	}
	r.steady(&b)
	r.httpSection(&b)
	if len(r.Growth) > 0 {
		b.WriteString("## Growth: the drain at more conversations\n\n")
		b.WriteString("Messages = max(the drain's, 10 × conversations), capped at --growth-max-messages, the same number per conversation, round-robin. " +
			"Each row's drain is time-boxed (--growth-timebox); rows whose buffers do not all fill are flushed by age; those and rows of over 1,000,000 messages run --growth-rounds round(s) (spread – : one round). " +
			"The drain row of the same server is repeated here for scale; relative = msgs/s ÷ the smallest row's.\n\n")
		drainTable(&b, r.growthTable)
		if r.GrowthAge != nil {
			b.WriteString("One message per conversation: no buffer fills, so every message waits for the age sweep (CHAT_FLUSH_MAX_AGE) and is a batch " +
				"of its own; the pace is that of one lock, claim, publish, commit and unlock per message, not of the appends (appends/s).\n\n")
			drainTable(&b, []*Row[drainResult]{r.GrowthAge})
		}
	}
	list(&b, "Notes", r.Notes)
	list(&b, "Errors", r.Errors)
	return b.String()
}

// header writes the title and what the sitting ran on.
func (r *Results) header(b *strings.Builder) {
	title := "chatbuf benchmark"
	if r.Mode == "smoke" {
		title += " (smoke: small counts, figures indicative only)"
	}
	fmt.Fprintf(b, "# %s\n\n", title)
	fmt.Fprintf(b, "%s · `%s` · %d round(s) per figure, median shown · took %s\n\n",
		r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Command, r.Rounds, dur(time.Duration(r.DurationS*float64(time.Second))))
	fmt.Fprintf(b, "- Host: %d × %s, Linux %s, %s; load average %.1f at start, %.1f at end. "+
		"The machine is shared: absolute figures are noisy; ratios are to references measured in the same sitting, interleaved with the figures round by round.\n",
		r.Host.CPUs, r.Host.CPU, r.Host.Kernel, r.Host.Go, r.Host.LoadStart, r.Host.LoadEnd)
	for i, c := range r.Redis.Configs {
		which := "the Redis-side rows and the drain"
		if i == 0 {
			which += ", and the baseline, steady state and growth"
		}
		fmt.Fprintf(b, "- Redis %s: a private %s on a free port, `%s`, the append-only file (if any) rewritten empty before every measurement; for %s.\n",
			c.Label(), r.Redis.Version, c.flagString(), which)
	}
	for _, n := range r.NATS {
		fmt.Fprintf(b, "- NATS %s: `%s` (%s), its own process, `-js` with a fresh file store in a temp dir for every round.\n", n.Label, n.Path, n.Version)
	}
	b.WriteString("- Load: chat messages of 256 bytes (JSON with `message_id`, also the `Nats-Msg-Id`), round-robin over the conversations, " +
		"published with async JetStream publishing into CHAT_IN made by `stream.Ensure`; `CHAT_BUFFER_SIZE=10`; " +
		"one `cmd/worker` process with default settings (WORKER_CONCURRENCY = CPUs, WORKER_APPEND_BATCH=256, LOG_LEVEL=warn).\n")
	if c := r.Corpus; c != nil {
		fmt.Fprintf(b, "- Corpus (--corpus): the drain and its reference (2) also carry %d messages of %d conversations of testdata/conversations, after the load", c.Messages, c.Conversations)
		if len(c.Skipped) > 0 {
			fmt.Fprintf(b, "; left out, their ids not expressible in a subject by this build: %s", strings.Join(c.Skipped, ", "))
		}
		b.WriteString(".\n")
	}
	b.WriteString("\n")
}

// references writes references (1) and (2).
func (r *Results) references(b *strings.Builder) {
	b.WriteString("## References\n\n")
	var rows [][]string
	for _, x := range r.RedisRef {
		name := "(1) `redis-benchmark -P 16 -r 10000 -n " + num(float64(x.Messages), 0) + " -q RPUSH key:__rand_int__ <256 B>`"
		if !x.ok() {
			rows = append(rows, errRow(name+" — Redis "+x.Redis, x.Error, 6))
			continue
		}
		rows = append(rows, []string{name, r.Redis.Version + ", " + x.Redis, rate(x.Median) + " req/s",
			spread(x.Rounds, func(v float64) float64 { return v }, rate), "–", "–"})
	}
	for _, j := range r.JSRef {
		name := fmt.Sprintf("(2) JetStream consume+ack, %s × 256 B preloaded in CHAT_IN over %s subjects; pull consumer, Ack each",
			num(float64(j.Messages), 0), num(float64(j.Conversations), 0))
		if !j.ok() {
			rows = append(rows, errRow(name+" — "+natsName(j.NATS), j.Error, 6))
			continue
		}
		name += fmt.Sprintf(" (Messages(), %d pulled, as the worker); the workers' consumer, MaxAckPending %s",
			j.Median.PullMax, num(float64(j.Median.MaxAckPending), 0))
		rows = append(rows, []string{name, natsName(j.NATS), rate(j.Median.Rate) + " msgs/s",
			spread(j.Rounds, func(v jsRefResult) float64 { return v.Rate }, rate), us(j.Median.NATSCPUus), us(j.Median.ConsumerCPUus)})
	}
	table(b, []string{"reference", "server", "median", "spread", "nats CPU µs/msg", "consumer CPU µs/msg"}, rows)
}

// bufferLayer writes the buffer layer's rows.
func (r *Results) bufferLayer(b *strings.Builder) {
	b.WriteString("## Buffer layer alone (no NATS)\n\n")
	if len(r.Buffer) > 0 {
		fmt.Fprintf(b, "%s messages over %s conversations, in-process `buffer.Redis` on the redis-server of each configuration; "+
			"the ratio is to reference (1) on the same configuration; %s\n\n",
			num(float64(r.Buffer[0].Messages), 0), num(float64(r.Buffer[0].Conversations), 0), strings.Join(r.Buffer[0].Notes, "; "))
	}
	var rows [][]string
	for _, x := range r.Buffer {
		if !x.ok() {
			row := errRow(x.Name, x.Error, 11)
			row[1], row[2] = x.Redis, "**error**: "+strings.ReplaceAll(firstLine(x.Error), "|", "/")
			rows = append(rows, row)
			continue
		}
		m := x.Median
		rows = append(rows, []string{x.Name, x.Redis, rate(m.Rate), spread(x.Rounds, func(v bufferResult) float64 { return v.Rate }, rate),
			ratio(x.Ratio) + " " + x.RatioTo, per(m.RoundTripsPerMsg), per(m.CommandsPerMsg), per(m.WritesPerMsg), aofBytes(m.AOF),
			us(m.RedisCPUus), us(m.ClientCPUus)})
	}
	table(b, []string{"variant", "Redis", "msgs/s", "spread", "ratio", "Redis round trips/msg", "Redis commands/msg", "Redis writes/msg", "AOF bytes/msg",
		"redis CPU µs/msg", "client CPU µs/msg"}, rows)
}

var drainHead = []string{"run", "nats-server", "Redis", "conversations", "messages", "msgs/s", "spread", "ratio", "relative", "appends/s",
	"Redis round trips/msg", "Redis commands/msg", "Redis writes/msg", "AOF bytes/msg",
	"worker CPU µs/msg", "redis CPU µs/msg", "nats CPU µs/msg", "total CPU µs/msg", "flush mean", "all appended after", "done after",
	"worker peak RSS", "Redis used after", "batches", "notes"}

func drainRow(x *Row[drainResult]) []string {
	if !x.ok() {
		r := errRow(x.Name, x.Error, len(drainHead))
		r[1], r[2] = "**error**: "+strings.ReplaceAll(firstLine(x.Error), "|", "/"), x.Redis
		r[3], r[4] = num(float64(x.Conversations), 0), num(float64(x.Messages), 0)
		return r
	}
	m := x.Median
	total := m.WorkerCPUus + m.RedisCPUus + m.NATSCPUus
	rel := "–"
	if x.RelativeTo != "" {
		rel = ratio(x.Relative) + " " + x.RelativeTo
	}
	appended, done := "–", strconv.FormatFloat(m.ElapsedS, 'f', 1, 64)+" s"
	if m.AllAppendedS > 0 {
		appended = strconv.FormatFloat(m.AllAppendedS, 'f', 1, 64) + " s"
	}
	if !m.Complete {
		done = "time-boxed at " + done
	}
	return []string{x.Name, natsName(x.NATS), x.Redis, num(float64(x.Conversations), 0), num(float64(x.Messages), 0),
		rate(m.Rate), spread(x.Rounds, func(v drainResult) float64 { return v.Rate }, rate),
		ratio(x.Ratio) + " " + x.RatioTo, rel, rate(m.AppendRate), per(m.RoundTripsPerMsg), per(m.CommandsPerMsg),
		per(m.WritesPerMsg), aofBytes(m.AOF),
		us(m.WorkerCPUus), us(m.RedisCPUus), us(m.NATSCPUus), us(total), ms(m.FlushMeanMS), appended, done,
		mib(m.WorkerPeakRSSMiB), mib(m.RedisUsedMiB), batches(m.Batches), strings.Join(x.Notes, "; ")}
}

func drainTable(b *strings.Builder, rows []*Row[drainResult]) {
	var out [][]string
	for _, x := range rows {
		out = append(out, drainRow(x))
	}
	table(b, drainHead, out)
}

// steady writes the steady state's row.
func (r *Results) steady(b *strings.Builder) {
	s := r.Steady
	if s == nil {
		return
	}
	b.WriteString("## Steady state at half the drain rate\n\n")
	b.WriteString("Own paced publisher + `verify.Check` (the checker behind `producer load --verify`). Messages go out in runs of 10 per conversation " +
		"(rotating over 1,000 conversations), so a buffer fills within 10/rate s and the latency is chatbuf's own, not the wait for a slow conversation " +
		"to fill its buffer. Latency: publish → batch stored in CHAT_FLUSHED, per message; the reference is the PubAck latency of the same publishes.\n\n")
	if !s.ok() {
		table(b, []string{"run", "error"}, [][]string{{s.Name, s.Error}})
		return
	}
	m := s.Median
	verdict := "OK"
	if !m.VerifyOK {
		verdict = fmt.Sprintf("**FAILED** (lost %d, duplicated %d, misplaced %d, malformed %d)", m.Lost, m.Duplicated, m.Misplaced, m.Malformed)
	}
	table(b, []string{"nats-server", "Redis", "rate", "published", "size-batch p50", "size-batch p99", "spread p99", "all batches p50 / p99",
		"PubAck p50 / p99 (reference)", "p99 ratio", "worker CPU", "publisher CPU", "flush mean", "backlog at end", "Redis round trips/msg", "verify"},
		[][]string{{natsName(s.NATS), s.Redis, rate(m.PublishedRate) + " msgs/s for " + strconv.FormatFloat(m.DurationS, 'f', 0, 64) + " s",
			num(float64(m.Published), 0), ms(m.SizeLatency.P50MS), ms(m.SizeLatency.P99MS),
			spread(s.Rounds, func(v steadyResult) float64 { return v.SizeLatency.P99MS }, ms),
			ms(m.Latency.P50MS) + " / " + ms(m.Latency.P99MS), ms(m.PubAck.P50MS) + " / " + ms(m.PubAck.P99MS),
			ratio(s.Ratio) + " " + s.RatioTo, strconv.FormatFloat(m.WorkerCPUPercent, 'f', 0, 64) + "% of a core",
			strconv.FormatFloat(m.PublisherCPUPercent, 'f', 0, 64) + "% of a core", ms(m.FlushMeanMS),
			strconv.FormatFloat(m.BacklogS, 'f', 2, 64) + " s", per(m.RoundTripsPerMsg), verdict}})
}

// list writes a section of bullet points, if any.
func list(b *strings.Builder, title string, items []string) {
	if len(items) == 0 {
		return
	}
	b.WriteString("## " + title + "\n\n")
	for _, it := range items {
		b.WriteString("- " + strings.ReplaceAll(it, "\n", "\n  ") + "\n")
	}
	b.WriteString("\n")
}

// aofBytes is the append-only file's growth per message, – without one.
func aofBytes(c aofCost) string {
	if c.BytesPerMsg <= 0 {
		return "–"
	}
	return num(c.BytesPerMsg, 0)
}

// redisTime writes where Redis spent its time per message, by command, in
// the buffer layer and in the drains (INFO commandstats of their first
// rounds).
func (r *Results) redisTime(b *strings.Builder) {
	type col struct {
		name  string
		costs map[string]cmdCost
	}
	var cols []col
	add := func(name string, costs []cmdCost) {
		if len(costs) == 0 {
			return
		}
		m := make(map[string]cmdCost, len(costs))
		for _, c := range costs {
			m[c.Command] = c
		}
		cols = append(cols, col{name, m})
	}
	write := map[string]bool{}
	for _, x := range r.Buffer {
		if x.ok() && x.Name == bufBatched {
			add("buffer layer ("+x.Name+"), "+x.Redis, x.Rounds[0].RedisCommands)
		}
	}
	for _, d := range r.Drain {
		if d.ok() {
			add("drain, "+natsName(d.NATS)+", "+d.Redis, d.Rounds[0].RedisCommands)
		}
	}
	for _, c := range cols {
		for n, v := range c.costs {
			write[n] = write[n] || v.Write
		}
	}
	if len(cols) == 0 {
		return
	}
	var names []string
	seen := map[string]bool{}
	for _, c := range cols {
		for n := range c.costs {
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	cost := func(n string) float64 {
		for _, c := range cols {
			if v, ok := c.costs[n]; ok {
				return v.USPerMsg
			}
		}
		return 0
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(cost(b), cost(a)) })
	b.WriteString("## Where Redis's time goes\n\n")
	b.WriteString("INFO commandstats over the first round, per message: µs of Redis's time in the command (and calls). " +
		"EVALSHA's time includes the commands its scripts ran, which also appear under their own names; what EVALSHA has beyond them is the " +
		"scripts' own work (Lua, argument and reply conversion). Time outside commands (reading and writing sockets, the event loop) is in none of " +
		"these: compare with redis CPU µs/msg above. A write command (COMMAND INFO flags it `write`) is one entry in the append-only file a call; " +
		"their calls per message, summed, are the Redis writes/msg of the tables.\n\n")
	head := []string{"command", "write"}
	for _, c := range cols {
		head = append(head, c.name)
	}
	var rows [][]string
	for _, n := range names {
		w := "–"
		if write[n] {
			w = "write"
		}
		row := []string{"`" + n + "`", w}
		for _, c := range cols {
			v, ok := c.costs[n]
			if !ok {
				row = append(row, "–")
				continue
			}
			row = append(row, fmt.Sprintf("%.2f (%.3f)", v.USPerMsg, v.CallsPerMsg))
		}
		rows = append(rows, row)
	}
	table(b, head, rows)
}
