package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontext/chatbuf/verify"
)

// --- per-round results ---

type jsRefResult struct {
	Rate          float64 `json:"msgs_per_s"`
	ElapsedS      float64 `json:"elapsed_s"`
	PreloadRate   float64 `json:"preload_msgs_per_s"`
	NATSCPUus     float64 `json:"nats_cpu_us_per_msg"`
	ConsumerCPUus float64 `json:"consumer_cpu_us_per_msg"`
}

type bufferResult struct {
	Rate             float64   `json:"msgs_per_s"`
	ElapsedS         float64   `json:"elapsed_s"`
	RoundTripsPerMsg float64   `json:"redis_round_trips_per_msg"`
	CommandsPerMsg   float64   `json:"redis_commands_per_msg"`
	RedisCPUus       float64   `json:"redis_cpu_us_per_msg"`
	ClientCPUus      float64   `json:"client_cpu_us_per_msg"`
	RedisCommands    []cmdCost `json:"redis_commands,omitempty"` // of the first round
}

type drainResult struct {
	Rate             float64            `json:"msgs_per_s"`
	ElapsedS         float64            `json:"elapsed_s"`
	AllAppendedS     float64            `json:"all_appended_after_s"` // 0: not all appended when the drain ended
	AppendRate       float64            `json:"appended_per_s"`       // messages appended per second until all were
	Complete         bool               `json:"complete"`             // every message in a batch (else ended by the time box)
	PreloadRate      float64            `json:"preload_msgs_per_s"`
	FlushMeanMS      float64            `json:"flush_mean_ms"` // chatbuf_flush_duration_seconds: claim, publish, commit
	RoundTripsPerMsg float64            `json:"redis_round_trips_per_msg"`
	CommandsPerMsg   float64            `json:"redis_commands_per_msg"`
	WorkerCPUus      float64            `json:"worker_cpu_us_per_msg"`
	RedisCPUus       float64            `json:"redis_cpu_us_per_msg"`
	NATSCPUus        float64            `json:"nats_cpu_us_per_msg"`
	WorkerPeakRSSMiB float64            `json:"worker_peak_rss_mib"`
	RedisUsedMiB     float64            `json:"redis_used_mib_after"`
	Appended         float64            `json:"appended"`
	Duplicates       float64            `json:"deduplicated"`
	Dead             float64            `json:"dead_lettered"`
	InBatches        float64            `json:"in_batches"`
	Batches          map[string]float64 `json:"batches_by_reason"`
	RedisCommands    []cmdCost          `json:"redis_commands,omitempty"` // of the first round
}

type steadyResult struct {
	Rate                float64        `json:"target_msgs_per_s"`
	PublishedRate       float64        `json:"published_msgs_per_s"`
	DurationS           float64        `json:"duration_s"`
	Published           int            `json:"published"`
	PublishErrors       int            `json:"publish_errors"`
	SizeLatency         verify.Latency `json:"size_latency"`
	Latency             verify.Latency `json:"latency"`
	PubAck              verify.Latency `json:"puback_latency"`
	WorkerCPUPercent    float64        `json:"worker_cpu_percent"`
	PublisherCPUPercent float64        `json:"publisher_cpu_percent"` // the harness process while publishing
	FlushMeanMS         float64        `json:"flush_mean_ms"`
	BacklogS            float64        `json:"backlog_s"` // after the last PubAck, until the worker had appended every message
	RoundTripsPerMsg    float64        `json:"redis_round_trips_per_msg"`
	Lost                int            `json:"lost"`
	Duplicated          int            `json:"duplicated"`
	Misplaced           int            `json:"misplaced"`
	Malformed           int            `json:"malformed"`
	VerifyOK            bool           `json:"verify_ok"`
}

// Row is one measured figure: its rounds and their median.
type Row[T any] struct {
	Name          string            `json:"name"`
	NATS          *natsBinary       `json:"nats_server,omitempty"`
	Conversations int               `json:"conversations,omitempty"`
	Messages      int               `json:"messages,omitempty"`
	Env           map[string]string `json:"worker_env,omitempty"`
	Notes         []string          `json:"notes,omitempty"`
	Rounds        []T               `json:"rounds"`
	Median        T                 `json:"median"`
	Ratio         float64           `json:"ratio,omitempty"`    // to RatioTo, in the same sitting
	RatioTo       string            `json:"ratio_to,omitempty"` // the reference of Ratio
	Relative      float64           `json:"relative,omitempty"` // to another chatbuf figure, RelativeTo
	RelativeTo    string            `json:"relative_to,omitempty"`
	Error         string            `json:"error,omitempty"`
}

func (r *Row[T]) ok() bool { return r != nil && r.Error == "" && len(r.Rounds) > 0 }

// finish sets Median from the rounds.
func (r *Row[T]) finish() { r.Median = medianOf(r.Rounds) }

// Target is one goal, checked against a measured ratio or figure.
type Target struct {
	Goal     string  `json:"goal"`
	Measured string  `json:"measured"`
	Value    float64 `json:"value"`
	Limit    float64 `json:"limit"`
	AtMost   bool    `json:"at_most"` // the value must be <= limit (else >=)
	Pass     bool    `json:"pass"`
	Skipped  string  `json:"skipped,omitempty"`
}

func (t *Target) check() {
	if t.AtMost {
		t.Pass = t.Value <= t.Limit
	} else {
		t.Pass = t.Value >= t.Limit
	}
}

func (t Target) mark() string {
	switch {
	case t.Skipped != "":
		return "– skipped"
	case t.Pass:
		return "✓ pass"
	default:
		return "✗ miss"
	}
}

// Results is everything one sitting measured; it is written as JSON.
type Results struct {
	Mode      string    `json:"mode"` // full or smoke
	Started   time.Time `json:"started"`
	DurationS float64   `json:"duration_s"`
	Rounds    int       `json:"rounds"`
	Command   string    `json:"command"`
	Host      struct {
		CPUs      int     `json:"cpus"`
		CPU       string  `json:"cpu"`
		Kernel    string  `json:"kernel"`
		Go        string  `json:"go"`
		LoadStart float64 `json:"load_avg_start"`
		LoadEnd   float64 `json:"load_avg_end"`
	} `json:"host"`
	Redis struct {
		Version string `json:"version"`
		Flags   string `json:"flags"`
	} `json:"redis_server"`
	NATS []*natsBinary `json:"nats_servers"`

	RedisRef Row[float64]         `json:"ref_redis_benchmark_rpush"`
	JSRef    []*Row[jsRefResult]  `json:"ref_jetstream_consume_ack"`
	Buffer   []*Row[bufferResult] `json:"buffer_layer"`
	Drain    []*Row[drainResult]  `json:"drain"`
	Baseline []*Row[drainResult]  `json:"baseline"`
	Steady   *Row[steadyResult]   `json:"steady_state,omitempty"`
	Growth   []*Row[drainResult]  `json:"growth"`
	// GrowthAge is a drain of one message per conversation, flushed by age.
	GrowthAge *Row[drainResult] `json:"growth_age,omitempty"`
	Targets   []Target          `json:"targets"`
	Notes     []string          `json:"notes"`
	Errors    []string          `json:"errors,omitempty"`

	growthTable []*Row[drainResult] // the growth rows and the drain, by conversations
}

// --- medians ---

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianOf returns a T whose every number is the median of that number over
// the rounds (each figure on its own), whose booleans are true only if true
// in every round, and whose other fields come from the first round.
func medianOf[T any](rounds []T) T {
	var out T
	if len(rounds) == 0 {
		return out
	}
	vals := make([]reflect.Value, len(rounds))
	for i := range rounds {
		vals[i] = reflect.ValueOf(&rounds[i]).Elem()
	}
	medianInto(reflect.ValueOf(&out).Elem(), vals)
	return out
}

func medianInto(dst reflect.Value, src []reflect.Value) {
	switch dst.Kind() {
	case reflect.Float64:
		v := make([]float64, len(src))
		for i, s := range src {
			v[i] = s.Float()
		}
		dst.SetFloat(median(v))
	case reflect.Int:
		v := make([]float64, len(src))
		for i, s := range src {
			v[i] = float64(s.Int())
		}
		dst.SetInt(int64(math.Round(median(v))))
	case reflect.Bool:
		all := true
		for _, s := range src {
			all = all && s.Bool()
		}
		dst.SetBool(all)
	case reflect.Struct:
		for f := range dst.NumField() {
			fs := make([]reflect.Value, len(src))
			for i, s := range src {
				fs[i] = s.Field(f)
			}
			medianInto(dst.Field(f), fs)
		}
	default:
		dst.Set(src[0])
	}
}

// spread is "min–max" of one figure over the rounds.
func spread[T any](rounds []T, f func(T) float64, format func(float64) string) string {
	if len(rounds) < 2 {
		return "–"
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range rounds {
		lo, hi = min(lo, f(r)), max(hi, f(r))
	}
	return format(lo) + "–" + format(hi)
}

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
	title := "chatbuf benchmark"
	if r.Mode == "smoke" {
		title += " (smoke: small counts, figures indicative only)"
	}
	fmt.Fprintf(&b, "# %s\n\n", title)
	fmt.Fprintf(&b, "%s · `%s` · %d round(s) per figure, median shown · took %s\n\n",
		r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Command, r.Rounds, dur(time.Duration(r.DurationS*float64(time.Second))))
	fmt.Fprintf(&b, "- Host: %d × %s, Linux %s, %s; load average %.1f at start, %.1f at end. "+
		"The machine is shared: absolute figures are noisy; ratios are to references measured in the same sitting, interleaved with the figures round by round.\n",
		r.Host.CPUs, r.Host.CPU, r.Host.Kernel, r.Host.Go, r.Host.LoadStart, r.Host.LoadEnd)
	fmt.Fprintf(&b, "- Redis: private %s on a free port, `%s` (no persistence: production runs AOF, which costs more).\n", r.Redis.Version, r.Redis.Flags)
	for _, n := range r.NATS {
		fmt.Fprintf(&b, "- NATS %s: `%s` (%s), its own process, `-js` with a fresh file store in a temp dir for every round.\n", n.Label, n.Path, n.Version)
	}
	b.WriteString("- Load: chat messages of 256 bytes (JSON with `message_id`, also the `Nats-Msg-Id`), round-robin over the conversations, " +
		"published with async JetStream publishing into CHAT_IN made by `stream.Ensure`; `CHAT_BUFFER_SIZE=10`; " +
		"one `cmd/worker` process with default settings (WORKER_CONCURRENCY = CPUs, WORKER_APPEND_BATCH=256, LOG_LEVEL=warn).\n\n")

	b.WriteString("## Targets\n\n")
	var trows [][]string
	for _, t := range r.Targets {
		trows = append(trows, []string{t.Goal, t.Measured, t.mark()})
	}
	table(&b, []string{"target", "measured", "result"}, trows)

	b.WriteString("## References\n\n")
	var rrows [][]string
	if r.RedisRef.ok() {
		rrows = append(rrows, []string{"(1) `redis-benchmark -P 16 -r 10000 -n " + num(float64(r.RedisRef.Messages), 0) +
			" -q RPUSH key:__rand_int__ <256 B>`", r.Redis.Version, rate(r.RedisRef.Median) + " req/s",
			spread(r.RedisRef.Rounds, func(v float64) float64 { return v }, rate), "–", "–"})
	} else {
		rrows = append(rrows, errRow("(1) redis-benchmark RPUSH", r.RedisRef.Error, 6))
	}
	for _, j := range r.JSRef {
		name := fmt.Sprintf("(2) JetStream consume+ack, %s × 256 B preloaded in CHAT_IN over %s subjects; pull consumer (Messages(), 512 pulled), Ack each",
			num(float64(j.Messages), 0), num(float64(j.Conversations), 0))
		if !j.ok() {
			rrows = append(rrows, errRow(name+" — "+natsName(j.NATS), j.Error, 6))
			continue
		}
		rrows = append(rrows, []string{name, natsName(j.NATS), rate(j.Median.Rate) + " msgs/s",
			spread(j.Rounds, func(v jsRefResult) float64 { return v.Rate }, rate), us(j.Median.NATSCPUus), us(j.Median.ConsumerCPUus)})
	}
	table(&b, []string{"reference", "server", "median", "spread", "nats CPU µs/msg", "consumer CPU µs/msg"}, rrows)

	b.WriteString("## Buffer layer alone (no NATS)\n\n")
	if len(r.Buffer) > 0 {
		fmt.Fprintf(&b, "%s messages over %s conversations, in-process `buffer.Redis` on the same redis-server; %s\n\n",
			num(float64(r.Buffer[0].Messages), 0), num(float64(r.Buffer[0].Conversations), 0), strings.Join(r.Buffer[0].Notes, "; "))
	}
	var brows [][]string
	for _, x := range r.Buffer {
		if !x.ok() {
			brows = append(brows, errRow(x.Name, x.Error, 8))
			continue
		}
		m := x.Median
		brows = append(brows, []string{x.Name, rate(m.Rate), spread(x.Rounds, func(v bufferResult) float64 { return v.Rate }, rate),
			ratio(x.Ratio) + " " + x.RatioTo, per(m.RoundTripsPerMsg), per(m.CommandsPerMsg), us(m.RedisCPUus), us(m.ClientCPUus)})
	}
	table(&b, []string{"variant", "msgs/s", "spread", "ratio", "Redis round trips/msg", "Redis commands/msg", "redis CPU µs/msg", "client CPU µs/msg"}, brows)

	drainHead := []string{"run", "nats-server", "conversations", "messages", "msgs/s", "spread", "ratio", "relative", "appends/s", "Redis round trips/msg", "Redis commands/msg",
		"worker CPU µs/msg", "redis CPU µs/msg", "nats CPU µs/msg", "total CPU µs/msg", "flush mean", "all appended after", "done after",
		"worker peak RSS", "Redis used after", "batches", "notes"}
	drainRow := func(x *Row[drainResult]) []string {
		if !x.ok() {
			r := errRow(x.Name, x.Error, len(drainHead))
			r[2], r[3] = num(float64(x.Conversations), 0), num(float64(x.Messages), 0)
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
		return []string{x.Name, natsName(x.NATS), num(float64(x.Conversations), 0), num(float64(x.Messages), 0),
			rate(m.Rate), spread(x.Rounds, func(v drainResult) float64 { return v.Rate }, rate),
			ratio(x.Ratio) + " " + x.RatioTo, rel, rate(m.AppendRate), per(m.RoundTripsPerMsg), per(m.CommandsPerMsg),
			us(m.WorkerCPUus), us(m.RedisCPUus), us(m.NATSCPUus), us(total), ms(m.FlushMeanMS), appended, done,
			mib(m.WorkerPeakRSSMiB), mib(m.RedisUsedMiB), batches(m.Batches), strings.Join(x.Notes, "; ")}
	}
	drainTable := func(rows []*Row[drainResult]) {
		var out [][]string
		for _, x := range rows {
			out = append(out, drainRow(x))
		}
		table(&b, drainHead, out)
	}
	b.WriteString("## Drain\n\n")
	b.WriteString("CHAT_IN preloaded; ONE worker started; the time runs from its start until all messages are in CHAT_FLUSHED batches " +
		"(its `chatbuf_batch_messages_total`, polled every 50 ms). Per-message figures: deltas over the drain divided by the messages " +
		"(worker: its own counters; redis-server and nats-server: CPU from /proc); worker peak RSS = VmHWM; flush mean = " +
		"`chatbuf_flush_duration_seconds` sum/count (claim → publish → commit; a grouped flush counts its whole round for each of its batches); " +
		"reference (2) and the drain run interleaved, round by round, on each server.\n\n")
	drainTable(r.Drain)
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
		drainTable(r.Baseline)
	}
	if s := r.Steady; s != nil {
		b.WriteString("## Steady state at half the drain rate\n\n")
		b.WriteString("Own paced publisher + `verify.Check` (the checker behind `producer load --verify`). Messages go out in runs of 10 per conversation " +
			"(rotating over 1,000 conversations), so a buffer fills within 10/rate s and the latency is chatbuf's own, not the wait for a slow conversation " +
			"to fill its buffer. Latency: publish → batch stored in CHAT_FLUSHED, per message; the reference is the PubAck latency of the same publishes.\n\n")
		if !s.ok() {
			table(&b, []string{"run", "error"}, [][]string{{s.Name, s.Error}})
		} else {
			m := s.Median
			verdict := "OK"
			if !m.VerifyOK {
				verdict = fmt.Sprintf("**FAILED** (lost %d, duplicated %d, misplaced %d, malformed %d)", m.Lost, m.Duplicated, m.Misplaced, m.Malformed)
			}
			table(&b, []string{"nats-server", "rate", "published", "size-batch p50", "size-batch p99", "spread p99", "all batches p50 / p99",
				"PubAck p50 / p99 (reference)", "p99 ratio", "worker CPU", "publisher CPU", "flush mean", "backlog at end", "Redis round trips/msg", "verify"},
				[][]string{{natsName(s.NATS), rate(m.PublishedRate) + " msgs/s for " + strconv.FormatFloat(m.DurationS, 'f', 0, 64) + " s",
					num(float64(m.Published), 0), ms(m.SizeLatency.P50MS), ms(m.SizeLatency.P99MS),
					spread(s.Rounds, func(v steadyResult) float64 { return v.SizeLatency.P99MS }, ms),
					ms(m.Latency.P50MS) + " / " + ms(m.Latency.P99MS), ms(m.PubAck.P50MS) + " / " + ms(m.PubAck.P99MS),
					ratio(s.Ratio) + " " + s.RatioTo, strconv.FormatFloat(m.WorkerCPUPercent, 'f', 0, 64) + "% of a core",
					strconv.FormatFloat(m.PublisherCPUPercent, 'f', 0, 64) + "% of a core", ms(m.FlushMeanMS),
					strconv.FormatFloat(m.BacklogS, 'f', 2, 64) + " s", per(m.RoundTripsPerMsg), verdict}})
		}
	}

	if len(r.Growth) > 0 {
		b.WriteString("## Growth: the drain at more conversations\n\n")
		b.WriteString("Messages = max(the drain's, 10 × conversations), capped at --growth-max-messages, the same number per conversation, round-robin. " +
			"Each row's drain is time-boxed (--growth-timebox); rows whose buffers do not all fill are flushed by age; those and rows of over 1,000,000 messages run --growth-rounds round(s) (spread – : one round). " +
			"The drain row of the same server is repeated here for scale; relative = msgs/s ÷ the smallest row's.\n\n")
		drainTable(r.growthTable)
		if r.GrowthAge != nil {
			b.WriteString("One message per conversation: no buffer fills, so every message waits for the age sweep (CHAT_FLUSH_MAX_AGE) and is a batch " +
				"of its own; the pace is that of one lock, claim, publish, commit and unlock per message, not of the appends (appends/s).\n\n")
			drainTable([]*Row[drainResult]{r.GrowthAge})
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("## Notes\n\n")
		for _, n := range r.Notes {
			b.WriteString("- " + n + "\n")
		}
		b.WriteString("\n")
	}
	if len(r.Errors) > 0 {
		b.WriteString("## Errors\n\n")
		for _, e := range r.Errors {
			b.WriteString("- " + strings.ReplaceAll(e, "\n", "\n  ") + "\n")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// write stores the results as <prefix>latest.{md,json} and a dated copy.
func (r *Results) write(dir, prefix string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	md := []byte(r.markdown())
	stamp := r.Started.UTC().Format("2006-01-02T150405Z")
	var files []string
	for _, f := range []struct {
		name string
		data []byte
	}{
		{prefix + "latest.md", md}, {prefix + "latest.json", append(js, '\n')},
		{prefix + stamp + ".md", md}, {prefix + stamp + ".json", append(js, '\n')},
	} {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return files, err
		}
		files = append(files, p)
	}
	return files, nil
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
	if len(r.Buffer) > 0 && r.Buffer[0].ok() {
		add("buffer layer ("+r.Buffer[0].Name+")", r.Buffer[0].Rounds[0].RedisCommands)
	}
	for _, d := range r.Drain {
		if d.ok() {
			add("drain, "+natsName(d.NATS), d.Rounds[0].RedisCommands)
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
		"these: compare with redis CPU µs/msg above.\n\n")
	head := []string{"command"}
	for _, c := range cols {
		head = append(head, c.name)
	}
	var rows [][]string
	for _, n := range names {
		row := []string{"`" + n + "`"}
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
