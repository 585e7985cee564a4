// Command bench is chatbuf's benchmark harness: in one sitting it starts a
// private redis-server and nats-server processes, measures two references
// (redis-benchmark's pipelined RPUSH; JetStream consume+ack), the buffer
// layer alone, a worker draining a preloaded CHAT_IN, the same drain
// without pipelined appends, a steady load at half the drain rate, and the
// drain at more conversations; it prints the results as a Markdown table and
// writes them under bench/results/ as Markdown and JSON.
//
//	go run ./bench            # the full run (make bench), ~15 minutes
//	go run ./bench --smoke    # ~20 s, for CI (make bench-smoke)
//	go run ./bench --help
//
// It exits 1 only when a measurement could not be taken (the harness or
// the system under test broke), never because a target was missed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command line.
type options struct {
	smoke         bool
	rounds        int
	nats          string
	maxConvs      int
	messages      int
	conversations int
	growth        []int
	growthCap     int
	growthRounds  int
	growthTimebox time.Duration
	growthAge     int
	baseMessages  int
	baseConvs     int
	only          map[string]bool
	steady        time.Duration
	benchN        int
	ageMax        string
	out           string
	debianNATS    string
	natsVersion   string
	keep          bool
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	smoke := slices.ContainsFunc(args, func(a string) bool {
		return a == "--smoke" || a == "-smoke" || a == "--smoke=true" || a == "-smoke=true"
	})
	o := options{
		rounds: 3, nats: "both", maxConvs: 1_000_000, messages: 200_000, conversations: 10_000,
		growthCap: 10_000_000, growthRounds: 1, growthTimebox: 12 * time.Minute, growthAge: 100_000, steady: 30 * time.Second, benchN: 1_000_000,
	}
	growth := "1000,100000,1000000"
	if smoke {
		o.rounds, o.nats, o.messages, o.conversations = 1, "current", 10_000, 500
		o.growthCap, o.growthTimebox, o.growthAge, o.steady, o.benchN = 10_000, time.Minute, 500, 3*time.Second, 100_000
		growth = "50,1000"
	}
	only := strings.Join(phases, ",")
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.smoke, "smoke", smoke, "quick mode for CI: small counts, 1 round, current nats-server only, tiny growth rows")
	fs.IntVar(&o.rounds, "rounds", o.rounds, "rounds per figure; each figure is the median")
	fs.StringVar(&o.nats, "nats", o.nats, "nats-server(s) for the drain and its JetStream reference: current, debian or both (the rest uses current)")
	fs.IntVar(&o.maxConvs, "max-conversations", o.maxConvs, "skip growth rows with more conversations than this")
	fs.IntVar(&o.messages, "messages", o.messages, "messages of the drain, the references and the buffer layer")
	fs.IntVar(&o.conversations, "conversations", o.conversations, "conversations of the drain, the references and the buffer layer")
	fs.StringVar(&growth, "growth", growth, "comma-separated conversation counts of the growth rows")
	fs.IntVar(&o.growthCap, "growth-max-messages", o.growthCap, "most messages of a growth row (max(--messages, 10 × conversations), capped)")
	fs.IntVar(&o.growthRounds, "growth-rounds", o.growthRounds, "rounds of growth rows that are long (over 1,000,000 messages) or whose buffers do not all fill (flushed by age; 0: as --rounds)")
	fs.IntVar(&o.growthAge, "growth-age", o.growthAge, "conversations of the growth row of one message each, all flushed by age (0: none)")
	fs.DurationVar(&o.growthTimebox, "growth-timebox", o.growthTimebox, "longest drain of a growth row; one still running then is reported from the messages in batches so far (0: no limit)")
	fs.IntVar(&o.baseMessages, "baseline-messages", 0, "messages of the WORKER_APPEND_BATCH=1 baseline (0: --messages, the drain itself)")
	fs.IntVar(&o.baseConvs, "baseline-conversations", 0, "conversations of the baseline (0: --conversations)")
	fs.StringVar(&only, "only", only, "comma-separated phases to run: "+strings.Join(phases, ", "))
	fs.DurationVar(&o.steady, "steady", o.steady, "duration of the steady-state load")
	fs.IntVar(&o.benchN, "redis-benchmark-n", o.benchN, "requests per redis-benchmark round")
	fs.StringVar(&o.ageMax, "age", "1s", "CHAT_FLUSH_MAX_AGE for rows whose buffers do not all fill")
	fs.StringVar(&o.out, "out", filepath.Join("bench", "results"), "directory of the results")
	fs.StringVar(&o.debianNATS, "debian-nats", "/usr/sbin/nats-server", "Debian's nats-server")
	fs.StringVar(&o.natsVersion, "nats-version", "v2.15.2", "version of the current nats-server to go install")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (server stores, worker logs) for a look afterwards")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for s := range strings.SplitSeq(growth, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(strings.ReplaceAll(s, "_", ""))
		if err != nil || n < 1 {
			return o, fmt.Errorf("--growth: bad count %q", s)
		}
		o.growth = append(o.growth, n)
	}
	switch {
	case o.rounds < 1:
		return o, errors.New("--rounds must be at least 1")
	case o.nats != "current" && o.nats != "debian" && o.nats != "both":
		return o, fmt.Errorf("--nats=%q: want current, debian or both", o.nats)
	case o.messages < bufferSize || o.conversations < 1:
		return o, errors.New("--messages must be at least 10 and --conversations at least 1")
	}
	if o.growthRounds <= 0 {
		o.growthRounds = o.rounds
	}
	if o.baseMessages <= 0 {
		o.baseMessages = o.messages
	}
	if o.baseConvs <= 0 {
		o.baseConvs = o.conversations
	}
	o.only = map[string]bool{}
	for p := range strings.SplitSeq(only, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !slices.Contains(phases, p) {
			return o, fmt.Errorf("--only: unknown phase %q (want %s)", p, strings.Join(phases, ", "))
		}
		o.only[p] = true
	}
	return o, nil
}

// phases of a sitting, in order.
var phases = []string{"redis", "drain", "baseline", "steady", "growth"}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	o, err := parseOptions(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	h := &harness{opts: o, ps: newProcs(), start: time.Now()}
	h.res.Command = strings.TrimSpace("go run ./bench " + strings.Join(args, " "))
	err = h.run(ctx)
	h.close()
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "bench: interrupted; every process stopped, temporary files removed, no results written")
		return 130
	case err != nil:
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	fmt.Print(h.res.markdown())
	prefix := ""
	if o.smoke {
		prefix = "smoke-"
	}
	files, err := h.res.write(o.out, prefix)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: write results: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s\n", strings.Join(files, ", "))
	if len(h.res.Errors) > 0 {
		fmt.Fprintf(os.Stderr, "bench: %d measurement(s) failed (see Errors); exit 1\n", len(h.res.Errors))
		return 1
	}
	return 0
}

// harness holds the servers and binaries of one sitting.
type harness struct {
	opts      options
	ps        *procs
	start     time.Time
	tmp       string
	binDir    string
	workerBin string
	redis     *redisServer
	current   *natsBinary
	debian    *natsBinary
	workers   int
	res       Results
}

func (h *harness) tmpPath(name string) string { return filepath.Join(h.tmp, name) }

func (h *harness) logf(format string, args ...any) {
	d := time.Since(h.start).Round(time.Second)
	fmt.Fprintf(os.Stderr, "[%02d:%02d] %s\n", int(d.Minutes()), int(d.Seconds())%60, fmt.Sprintf(format, args...))
}

// failed records a measurement that could not be taken.
func (h *harness) failed(what string, err error) string {
	h.res.Errors = append(h.res.Errors, what+": "+err.Error())
	h.logf("%s: FAILED: %v", what, err)
	return err.Error()
}

// close stops every process and removes the temporary directory.
func (h *harness) close() {
	h.redis.close()
	h.ps.stopAll()
	switch {
	case h.tmp == "":
	case h.opts.keep:
		fmt.Fprintf(os.Stderr, "bench: kept %s (--keep): remove it when done\n", h.tmp)
	default:
		_ = os.RemoveAll(h.tmp)
	}
}

func (h *harness) run(ctx context.Context) error {
	if err := h.setup(ctx); err != nil {
		return err
	}
	h.logf("servers: %s; %s", h.res.Redis.Version, strings.Join(natsVersions(h.res.NATS), ", "))

	o := h.opts
	if o.only["redis"] {
		h.measureRedisSide(ctx)
	}
	if o.only["drain"] {
		h.measureDrains(ctx)
	}
	if o.only["baseline"] {
		h.measureBaseline(ctx)
	}
	if o.only["steady"] {
		h.measureSteady(ctx)
	}
	if o.only["growth"] {
		h.measureGrowth(ctx)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	h.targets()
	h.res.DurationS = time.Since(h.start).Seconds()
	h.res.Host.LoadEnd = loadAvg()
	return nil
}

func natsVersions(bins []*natsBinary) []string {
	var out []string
	for _, b := range bins {
		out = append(out, b.Version+" ("+b.Label+")")
	}
	return out
}

// setup makes the temporary directory, builds the worker, installs the
// current nats-server, and starts redis-server.
func (h *harness) setup(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join("cmd", "worker")); err != nil {
		return errors.New("run from the module root (go run ./bench, or make bench)")
	}
	var err error
	if h.tmp, err = os.MkdirTemp("", "chatbuf-bench-"); err != nil {
		return err
	}
	if h.binDir, err = filepath.Abs(filepath.Join("bench", ".bin")); err != nil {
		return err
	}
	if err := os.MkdirAll(h.binDir, 0o755); err != nil {
		return err
	}
	r := &h.res
	r.Mode = "full"
	if h.opts.smoke {
		r.Mode = "smoke"
	}
	r.Started, r.Rounds = h.start.UTC(), h.opts.rounds
	r.Host.CPUs, r.Host.Go, r.Host.LoadStart = runtime.NumCPU(), runtime.Version(), loadAvg()
	r.Host.CPU, r.Host.Kernel = cpuModel(), strings.TrimSpace(readFile("/proc/sys/kernel/osrelease"))

	h.logf("building ./cmd/worker into %s", h.binDir)
	h.workerBin = filepath.Join(h.binDir, "worker")
	if _, err := command(ctx, h.goEnv(), "go", "build", "-o", h.workerBin, "./cmd/worker"); err != nil {
		return err
	}
	if h.current, err = h.installNATS(ctx); err != nil {
		return err
	}
	r.NATS = append(r.NATS, h.current)
	if h.opts.nats != "current" {
		v, err := version(ctx, h.opts.debianNATS)
		if err != nil {
			return fmt.Errorf("the Debian nats-server (--debian-nats %s; make deps installs it, or use --nats=current): %w", h.opts.debianNATS, err)
		}
		h.debian = &natsBinary{Label: "debian", Path: h.opts.debianNATS, Version: v}
		r.NATS = append(r.NATS, h.debian)
	}
	if h.redis, err = startRedis(ctx, h.ps, h.tmpPath("redis")); err != nil {
		return err
	}
	r.Redis.Version = strings.TrimSpace(strings.Split(h.redis.version, "sha=")[0])
	r.Redis.Flags = `--save "" --appendonly no`
	return nil
}

// goEnv is the environment of the go commands the harness runs: their work
// directories go inside its temporary directory, so that nothing is left in
// /tmp even when one is interrupted half-way.
func (h *harness) goEnv() []string {
	dir := h.tmpPath("gotmp")
	_ = os.MkdirAll(dir, 0o755)
	return []string{"GOTMPDIR=" + dir}
}

// installNATS go-installs the current nats-server into bench/.bin unless the
// right version is there already.
func (h *harness) installNATS(ctx context.Context) (*natsBinary, error) {
	bin := filepath.Join(h.binDir, "nats-server")
	want := strings.TrimPrefix(h.opts.natsVersion, "v")
	if v, err := version(ctx, bin); err != nil || !strings.Contains(v, want) {
		h.logf("go install github.com/nats-io/nats-server/v2@%s into %s", h.opts.natsVersion, h.binDir)
		if _, err := command(ctx, append(h.goEnv(), "GOBIN="+h.binDir), "go", "install", "github.com/nats-io/nats-server/v2@"+h.opts.natsVersion); err != nil {
			return nil, err
		}
	}
	v, err := version(ctx, bin)
	if err != nil {
		return nil, err
	}
	return &natsBinary{Label: "current", Path: "bench/.bin/nats-server", Version: v}, nil
}

func (h *harness) drainServers() []*natsBinary {
	switch h.opts.nats {
	case "debian":
		return []*natsBinary{h.debian}
	case "both":
		return []*natsBinary{h.current, h.debian}
	}
	return []*natsBinary{h.current}
}

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

// measureRedisSide runs reference (1) and the buffer layer, round by round
// interleaved, so that each round's figures share the machine's mood.
func (h *harness) measureRedisSide(ctx context.Context) {
	o := h.opts
	lanes := runtime.NumCPU()
	r := &h.res
	r.RedisRef = Row[float64]{Name: "redis-benchmark RPUSH", Messages: o.benchN}
	note := fmt.Sprintf("%d lanes (goroutines, conversations split between them as the worker's lanes are); each lane appends, then claims and commits "+
		"the buffers that call filled in one ClaimMany and one CommitMany, as the worker's grouped flush does (max 10 min 10), "+
		"and at the end the partial ones; fence 1, no lock", lanes)
	batched := &Row[bufferResult]{Name: "AppendBatch, 256 messages per call", Conversations: o.conversations, Messages: o.messages, Notes: []string{note}}
	single := &Row[bufferResult]{Name: "one round trip per message (AppendBatch of 1)", Conversations: o.conversations, Messages: o.messages}
	r.Buffer = []*Row[bufferResult]{batched, single}

	h.logf("building %s buffer items", num(float64(o.messages), 0))
	items := bufferItems(o.messages, o.conversations, lanes)
	for i := range o.rounds {
		h.logf("round %d/%d: redis-benchmark RPUSH -n %d", i+1, o.rounds, o.benchN)
		if round(ctx, h, &r.RedisRef, "redis-benchmark", func() (float64, error) { return redisBenchRound(ctx, h.redis, o.benchN) }) {
			h.logf("  %s req/s", rate(r.RedisRef.Rounds[len(r.RedisRef.Rounds)-1]))
		}
		for _, x := range []struct {
			row   *Row[bufferResult]
			batch int
		}{{batched, 256}, {single, 1}} {
			h.logf("round %d/%d: buffer layer, %s", i+1, o.rounds, x.row.Name)
			if round(ctx, h, x.row, "buffer layer: "+x.row.Name, func() (bufferResult, error) { return bufferRound(ctx, h.redis, items, x.batch) }) {
				v := x.row.Rounds[len(x.row.Rounds)-1]
				h.logf("  %s msgs/s, %.3f round trips/msg", rate(v.Rate), v.RoundTripsPerMsg)
			}
		}
	}
	r.RedisRef.Median = median(r.RedisRef.Rounds)
	for _, x := range r.Buffer {
		x.finish()
		if x.ok() && r.RedisRef.ok() {
			x.Ratio, x.RatioTo = x.Median.Rate/r.RedisRef.Median, "ref (1)"
		}
	}
}

// measureDrains runs reference (2) and the drain on each nats-server, all
// four interleaved round by round, so that a slow spell of the machine
// falls on every figure alike.
func (h *harness) measureDrains(ctx context.Context) {
	o := h.opts
	type pair struct {
		bin   *natsBinary
		ref   *Row[jsRefResult]
		drain *Row[drainResult]
		spec  drainSpec
	}
	var pairs []pair
	for _, bin := range h.drainServers() {
		spec := h.drainSpec(bin, o.conversations, o.messages, nil)
		p := pair{
			bin:   bin,
			ref:   &Row[jsRefResult]{Name: "JetStream consume+ack", NATS: bin, Conversations: o.conversations, Messages: o.messages},
			drain: &Row[drainResult]{Name: "drain", NATS: bin, Conversations: o.conversations, Messages: o.messages, Env: spec.env, Notes: spec.notes},
			spec:  spec,
		}
		h.res.JSRef = append(h.res.JSRef, p.ref)
		h.res.Drain = append(h.res.Drain, p.drain)
		pairs = append(pairs, p)
	}
	for i := range o.rounds {
		for _, p := range pairs {
			h.logf("round %d/%d: JetStream consume+ack reference, %s messages, %s", i+1, o.rounds, num(float64(o.messages), 0), p.bin.Version)
			if round(ctx, h, p.ref, "JetStream reference "+p.bin.Version, func() (jsRefResult, error) {
				return jsRefRound(ctx, h, p.bin, o.messages, o.conversations)
			}) {
				h.logf("  %s msgs/s", rate(p.ref.Rounds[len(p.ref.Rounds)-1].Rate))
			}
			h.drainRound(ctx, p.drain, p.spec, fmt.Sprintf("round %d/%d: drain", i+1, o.rounds))
		}
	}
	for _, p := range pairs {
		p.ref.finish()
		p.drain.finish()
		h.ratioToRef(p.drain)
	}
}

// drainSpec builds a drain of msgs over convs; when buffers do not all fill,
// the worker flushes by age with a small CHAT_FLUSH_MAX_AGE.
func (h *harness) drainSpec(bin *natsBinary, convs, msgs int, env map[string]string) drainSpec {
	s := drainSpec{nats: bin, convs: convs, msgs: msgs, env: maps.Clone(env)}
	if s.env == nil {
		s.env = map[string]string{}
	}
	if !s.fullBuffers() {
		s.env["CHAT_FLUSH_MAX_AGE"] = h.opts.ageMax
		s.notes = append(s.notes, fmt.Sprintf("%.3g message(s) per conversation: buffers do not all fill, so CHAT_FLUSH_MAX_AGE=%s and the age sweeper "+
			"(every 1 s) flushes the partial ones; the time runs until all messages are in batches (or the time box)", float64(msgs)/float64(convs), h.opts.ageMax))
	}
	return s
}

func (h *harness) drainRound(ctx context.Context, row *Row[drainResult], s drainSpec, what string) {
	h.logf("%s: %s messages over %s conversations, %s %s", what, num(float64(s.msgs), 0), num(float64(s.convs), 0), s.nats.Version, envString(s.env))
	if round(ctx, h, row, fmt.Sprintf("drain %s conversations %s %s", num(float64(s.convs), 0), s.nats.Version, envString(s.env)),
		func() (drainResult, error) { return drainRound(ctx, h, s) }) {
		v := row.Rounds[len(row.Rounds)-1]
		h.logf("  %s msgs/s in %.1fs (preload %s msgs/s); %.3f round trips/msg, worker %.1f µs/msg, peak RSS %.1f MiB",
			rate(v.Rate), v.ElapsedS, rate(v.PreloadRate), v.RoundTripsPerMsg, v.WorkerCPUus, v.WorkerPeakRSSMiB)
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

// mainDrain is the drain on the current nats-server, else the first one.
func (h *harness) mainDrain() *Row[drainResult] {
	for _, d := range h.res.Drain {
		if d.NATS == h.current && d.ok() {
			return d
		}
	}
	for _, d := range h.res.Drain {
		if d.ok() {
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
		spec := h.drainSpec(bin, o.baseConvs, o.baseMessages, env)
		name := "baseline scale, WORKER_APPEND_BATCH=256 (default)"
		switch {
		case env["WORKER_APPEND_BATCH"] != "":
			name = "baseline: WORKER_APPEND_BATCH=1"
		case env["CHAT_BUFFER_SIZE"] != "":
			name = "batches twice as large: CHAT_BUFFER_SIZE=" + env["CHAT_BUFFER_SIZE"]
		}
		row := &Row[drainResult]{Name: name, NATS: bin, Conversations: o.baseConvs, Messages: o.baseMessages, Env: spec.env, Notes: spec.notes}
		rows = append(rows, row)
	}
	h.res.Baseline = rows
	for i := range o.rounds {
		for _, row := range rows {
			if row == batched {
				continue
			}
			spec := h.drainSpec(bin, o.baseConvs, o.baseMessages, row.Env)
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
			return jsRefRound(ctx, h, bin, o.messages, o.conversations)
		})
	}
	ref.finish()
}

// measureSteady publishes at half the drain rate.
func (h *harness) measureSteady(ctx context.Context) {
	o := h.opts
	main := h.mainDrain()
	if main == nil {
		h.res.Steady = &Row[steadyResult]{Name: "steady state", Error: h.failed("steady state", errors.New("no drain rate to halve"))}
		return
	}
	rate := main.Median.Rate / 2
	row := &Row[steadyResult]{Name: "steady state", NATS: h.current, Conversations: steadyConvs,
		Notes: []string{fmt.Sprintf("rate = half the drain's %s msgs/s on %s", num(main.Median.Rate, 0), main.NATS.Version)}}
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
	spec := h.drainSpec(h.current, convs, msgs, nil)
	spec.timebox = o.growthTimebox
	rounds := o.rounds
	if !spec.fullBuffers() || msgs > longRow {
		rounds = o.growthRounds
	}
	row := &Row[drainResult]{Name: name, NATS: h.current, Conversations: convs, Messages: msgs, Env: spec.env, Notes: spec.notes}
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
		if d.NATS == h.current && !slices.ContainsFunc(rows, func(r *Row[drainResult]) bool { return r.Conversations == d.Conversations }) {
			c := *d // a copy: its relative figure is the growth table's own
			c.Name = "drain (as above)"
			rows = append(rows, &c)
		}
	}
	slices.SortStableFunc(rows, func(a, b *Row[drainResult]) int { return a.Conversations - b.Conversations })
	return rows
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
		t := Target{Goal: "drain ≥ 0.5 × JetStream consume+ack reference (" + natsName(d.NATS) + ")", Limit: 0.5}
		if !d.ok() || ref == nil {
			add(t, "not measured")
			continue
		}
		t.Value = d.Ratio
		t.Measured = fmt.Sprintf("%s ÷ %s msgs/s = %s", rate(d.Median.Rate), rate(ref.Median.Rate), ratio(d.Ratio))
		add(t, "")
	}
	if len(r.Buffer) > 0 && r.Buffer[0].ok() && r.RedisRef.ok() {
		b := r.Buffer[0]
		add(Target{Goal: "buffer layer ≥ 0.4 × redis-benchmark RPUSH reference", Limit: 0.4, Value: b.Ratio,
			Measured: fmt.Sprintf("%s ÷ %s = %s", rate(b.Median.Rate), rate(r.RedisRef.Median), ratio(b.Ratio))}, "")
	} else {
		add(Target{Goal: "buffer layer ≥ 0.4 × redis-benchmark RPUSH reference"}, "not measured")
	}
	for _, d := range r.Drain {
		t := Target{Goal: "≤ 0.1 Redis round trips per message in the drain (" + natsName(d.NATS) + ")", Limit: 0.1, AtMost: true}
		if !d.ok() {
			add(t, "not measured")
			continue
		}
		t.Value = d.Median.RoundTripsPerMsg
		t.Measured = per(t.Value) + " (" + per(d.Median.CommandsPerMsg) + " commands)"
		add(t, "")
	}
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
	for _, d := range r.Drain {
		t := Target{Goal: "worker peak RSS ≤ 64 MiB during the drain (" + natsName(d.NATS) + ")", Limit: 64, AtMost: true}
		if !d.ok() {
			add(t, "not measured")
			continue
		}
		t.Value = d.Median.WorkerPeakRSSMiB
		t.Measured = mib(t.Value)
		add(t, "")
	}
	st := Target{Goal: "size-batch latency p99 ≤ 50 ms at half load", Limit: 50, AtMost: true}
	if s := r.Steady; s.ok() {
		st.Value = s.Median.SizeLatency.P99MS
		st.Measured = fmt.Sprintf("%s at %s msgs/s (p50 %s; PubAck p99 %s)", ms(st.Value), rate(s.Median.PublishedRate),
			ms(s.Median.SizeLatency.P50MS), ms(s.Median.PubAck.P99MS))
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
		r.Notes = append(r.Notes, fmt.Sprintf("Drain on %s: %s µs of CPU per message (worker %s, redis-server %s, nats-server %s); "+
			"%d cores allow at most %s msgs/s at that cost, and the drain ran at %s (%.0f%% of that bound).",
			natsName(d.NATS), us(total), us(m.WorkerCPUus), us(m.RedisCPUus), us(m.NATSCPUus), r.Host.CPUs, rate(bound), rate(m.Rate), 100*m.Rate/bound))
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
	if len(r.Buffer) == 2 && r.Buffer[0].ok() && r.Buffer[1].ok() {
		a, b := r.Buffer[0].Median, r.Buffer[1].Median
		r.Notes = append(r.Notes, fmt.Sprintf("Buffer layer: AppendBatch of 256 vs 1 per call: %s vs %s msgs/s (%s).", rate(a.Rate), rate(b.Rate), ratio(a.Rate/b.Rate)))
	}
	r.Notes = append(r.Notes, "Ratios are of medians measured in this sitting; spread is the min–max over the rounds. "+
		"Worker CPU and round trips count from the worker's start (startup, readiness probes and the harness's /metrics polls every 50 ms included).")
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

func cpuModel() string {
	for line := range strings.SplitSeq(readFile("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
