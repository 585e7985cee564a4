package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontext/chatbuf/stream"
)

// phases of a sitting, in order.
var phases = []string{"redis", "drain", "baseline", "steady", "http", "growth"}

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
	steadyRate    float64
	benchN        int
	ageMax        string
	out           string
	debianNATS    string
	natsVersion   string
	keep          bool
	redis         []redisConfig
	maxAckPending int
	corpus        bool
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
	only, aof := strings.Join(phases, ","), "off,everysec"
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
	fs.Float64Var(&o.steadyRate, "steady-rate", 0, "messages/s of the steady-state load (0: half the drain rate); a fixed rate compares builds or sittings whose drains differ")
	fs.IntVar(&o.benchN, "redis-benchmark-n", o.benchN, "requests per redis-benchmark round")
	fs.StringVar(&o.ageMax, "age", "1s", "CHAT_FLUSH_MAX_AGE for rows whose buffers do not all fill")
	fs.StringVar(&o.out, "out", filepath.Join("bench", "results"), "directory of the results")
	fs.StringVar(&o.debianNATS, "debian-nats", "/usr/sbin/nats-server", "Debian's nats-server")
	fs.StringVar(&o.natsVersion, "nats-version", "v2.15.2", "version of the current nats-server to go install")
	fs.StringVar(&aof, "aof", aof, "comma-separated redis-server configurations of the redis and drain phases, each its own redis-server: "+
		"off (no persistence), everysec, always (appendonly yes with that appendfsync); the other phases run on the first")
	fs.IntVar(&o.maxAckPending, "max-ack-pending", stream.DefaultMaxAckPending,
		"the consumer's MaxAckPending, in the JetStream reference and the worker's CHAT_MAX_ACK_PENDING alike")
	fs.BoolVar(&o.corpus, "corpus", smoke, "add the conversations of testdata/conversations (languages, emoji, content parts, messages near 60 KB, hostile ids) "+
		"to the drain's load and its JetStream reference, after the 256-byte messages; the partial buffers they leave are flushed by age (default: on with --smoke)")
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
	for a := range strings.SplitSeq(aof, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if !slices.Contains(aofModes, a) {
			return o, fmt.Errorf("--aof: unknown configuration %q (want %s)", a, strings.Join(aofModes, ", "))
		}
		if slices.ContainsFunc(o.redis, func(c redisConfig) bool { return c.AOF == a }) {
			return o, fmt.Errorf("--aof: %q twice", a)
		}
		o.redis = append(o.redis, newRedisConfig(a))
	}
	if len(o.redis) == 0 {
		return o, errors.New("--aof: at least one configuration")
	}
	if o.maxAckPending < 1 {
		return o, errors.New("--max-ack-pending must be at least 1")
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
