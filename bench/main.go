// Command bench is chatbuf's benchmark harness: in one sitting it starts
// private redis-server processes (without persistence and with the
// append-only file, --aof) and nats-server processes, measures two
// references (redis-benchmark's pipelined RPUSH; JetStream consume+ack),
// the buffer layer alone and a worker draining a preloaded CHAT_IN on each
// Redis configuration, the same drain without pipelined appends, a steady
// load at half the drain rate, and the drain at more conversations; it
// prints the results as a Markdown table and writes them under
// bench/results/ as Markdown and JSON.
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
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/opencontext/chatbuf/internal/procs"
)

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

	h := &harness{opts: o, ps: procs.NewGroup(), start: time.Now()}
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
	ps        *procs.Group
	start     time.Time
	tmp       string
	binDir    string
	workerBin string
	redises   []*redisServer // one per --aof configuration
	redis     *redisServer   // the first: the server of the phases that run on one
	current   *natsBinary
	debian    *natsBinary
	workers   int
	// corpus is what --corpus adds to the drain; corpusNote says so.
	corpus     []corpusMsg
	corpusNote string
	res        Results
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
	for _, r := range h.redises {
		r.close()
	}
	h.ps.StopAll()
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
	var configs []string
	for _, c := range h.res.Redis.Configs {
		configs = append(configs, c.Label())
	}
	h.logf("servers: %s (%s); %s", h.res.Redis.Version, strings.Join(configs, ", "), strings.Join(natsVersions(h.res.NATS), ", "))

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
	if o.only["http"] {
		h.measureHTTP(ctx)
	}
	if o.only["growth"] {
		h.measureGrowth(ctx)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	h.targets()
	h.res.DurationS = time.Since(h.start).Seconds()
	h.res.Host.LoadEnd = procs.LoadAvg()
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
	r.Host.CPUs, r.Host.Go, r.Host.LoadStart = runtime.NumCPU(), runtime.Version(), procs.LoadAvg()
	r.Host.CPU, r.Host.Kernel = cpuModel(), strings.TrimSpace(readFile("/proc/sys/kernel/osrelease"))

	h.logf("building ./cmd/worker into %s", h.binDir)
	h.workerBin = filepath.Join(h.binDir, "worker")
	if _, err := procs.Command(ctx, h.goEnv(), "go", "build", "-o", h.workerBin, "./cmd/worker"); err != nil {
		return err
	}
	if h.current, err = h.installNATS(ctx); err != nil {
		return err
	}
	r.NATS = append(r.NATS, h.current)
	if h.opts.nats != "current" {
		v, err := procs.Version(ctx, h.opts.debianNATS)
		if err != nil {
			return fmt.Errorf("the Debian nats-server (--debian-nats %s; make deps installs it, or use --nats=current): %w", h.opts.debianNATS, err)
		}
		h.debian = &natsBinary{Label: "debian", Path: h.opts.debianNATS, Version: v}
		r.NATS = append(r.NATS, h.debian)
	}
	for _, c := range h.opts.redis {
		rs, err := startRedis(ctx, h.ps, h.tmpPath("redis-"+c.AOF), c)
		if err != nil {
			return err
		}
		h.redises = append(h.redises, rs)
		r.Redis.Configs = append(r.Redis.Configs, c)
	}
	h.redis = h.redises[0]
	if h.opts.corpus {
		msgs, convs, skipped, err := loadCorpus(h.streamConfig())
		if err != nil {
			return fmt.Errorf("--corpus: %w", err)
		}
		h.corpus = msgs
		r.Corpus = &corpusInfo{Messages: len(msgs), Conversations: convs, Skipped: skipped}
		h.corpusNote = fmt.Sprintf("with %d messages of %d conversations of testdata/conversations (--corpus) after the load", len(msgs), convs)
		if len(skipped) > 0 {
			h.corpusNote += fmt.Sprintf("; %d conversation(s) left out, their ids not expressible in a subject by this build: %s", len(skipped), strings.Join(skipped, ", "))
		}
	}
	r.Redis.Version = strings.TrimSpace(strings.Split(h.redis.version, "sha=")[0])
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
	if v, err := procs.Version(ctx, bin); err != nil || !strings.Contains(v, want) {
		h.logf("go install github.com/nats-io/nats-server/v2@%s into %s", h.opts.natsVersion, h.binDir)
		if _, err := procs.Command(ctx, append(h.goEnv(), "GOBIN="+h.binDir), "go", "install", "github.com/nats-io/nats-server/v2@"+h.opts.natsVersion); err != nil {
			return nil, err
		}
	}
	v, err := procs.Version(ctx, bin)
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
