// Command chatbufctl inspects and repairs chatbuf: buffers and in-flight
// batches in Redis, CHAT_IN's backlog, dead letters, manual flushes. It
// reads the worker's configuration variables (REDIS_*, NATS_*,
// CHAT_SUBJECT_PREFIX, CHAT_FLUSH_MAX_AGE) and reaches Redis and NATS the
// way the worker does. It never lists Redis's keyspace: it reads the due
// index and each conversation's own keys.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	shared "github.com/opencontext/chatbuf/internal/config"
)

const usage = `chatbufctl: inspect and repair chatbuf.

Usage:
  chatbufctl [--json] stats [--limit N]
  chatbufctl [--json] ls [--state buffering|due|inflight|stuck] [--sort age|size] [--limit N] [--cursor C]
  chatbufctl [--json] show <user> <device> <agent> [--all]
  chatbufctl [--json] flush <user> <device> <agent>
  chatbufctl [--json] flush --due [--limit N]
  chatbufctl [--json] dead ls [--reason R] [--limit N] [--cursor SEQ]
  chatbufctl [--json] dead show SEQ
  chatbufctl [--json] dead redrive [--reason R] [--limit N] [--keep]
  chatbufctl [--json] dead purge [--reason R] [--yes]

Ids are given as the producer takes them (decoded, "_" for not given).
Configuration: the worker's variables (REDIS_HOST, REDIS_PORT, REDIS_ADDRS,
REDIS_PASSWORD, REDIS_TLS..., REDIS_KEY_PREFIX, NATS_URL, NATS_USER, NATS_CREDS,
NATS_TLS..., CHAT_SUBJECT_PREFIX, CHAT_FLUSH_MAX_AGE); see the README.
`

func main() {
	// Connection failures are reported as errors of the command; go-redis's
	// own log lines would repeat them.
	redis.SetLogger(quietLogger{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], shared.Environ(), os.Stdin, os.Stdout, os.Stderr))
}

// app is one invocation: its configuration, its connections (opened when
// a command needs them) and its output.
type app struct {
	cfg    config
	json   bool
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	now    func() time.Time

	rdb redis.UniversalClient
	nc  *nats.Conn
	js  jetstream.JetStream
}

// run runs one command and returns the exit status: 0 done, 1 failed,
// 2 bad usage or configuration.
func run(ctx context.Context, args []string, environ map[string]string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, now: time.Now}
	global := flag.NewFlagSet("chatbufctl", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	global.BoolVar(&a.json, "json", false, "print JSON")
	if err := global.Parse(args); err != nil || global.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cfg, err := loadConfig(environ)
	if err != nil {
		fmt.Fprintf(stderr, "chatbufctl: bad configuration:\n%v\n", err)
		return 2
	}
	a.cfg = cfg
	defer a.close()
	cmd, rest := global.Arg(0), global.Args()[1:]
	var f func(context.Context, []string) error
	switch cmd {
	case "stats":
		f = a.stats
	case "ls":
		f = a.ls
	case "show":
		f = a.show
	case "flush":
		f = a.flush
	case "dead":
		f = a.dead
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "chatbufctl: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err := f(ctx, rest); err != nil {
		if errors.Is(err, errUsage) {
			fmt.Fprintf(stderr, "chatbufctl %s: %v\n\n%s", cmd, err, usage)
			return 2
		}
		fmt.Fprintf(stderr, "chatbufctl %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// flags returns a flag set for a command; --json is accepted after the
// command too.
func (a *app) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&a.json, "json", a.json, "print JSON")
	return fs
}

// parse parses args, letting flags and positional arguments mix.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func (a *app) redis() (redis.UniversalClient, error) {
	if a.rdb == nil {
		rdb, err := a.cfg.redis()
		if err != nil {
			return nil, err
		}
		a.rdb = rdb
	}
	return a.rdb, nil
}

func (a *app) jetstream() (*nats.Conn, jetstream.JetStream, error) {
	if a.nc == nil {
		nc, err := a.cfg.nats(a.stderr)
		if err != nil {
			return nil, nil, err
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			return nil, nil, err
		}
		a.nc, a.js = nc, js
	}
	return a.nc, a.js, nil
}

func (a *app) close() {
	if a.rdb != nil {
		_ = a.rdb.Close()
	}
	if a.nc != nil {
		a.nc.Close()
	}
}

// emit prints v as JSON with --json, else calls human with a table writer.
func (a *app) emit(v any, human func(w *tabwriter.Writer)) error {
	if a.json {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	human(tw)
	return tw.Flush()
}

// dur prints seconds as a short duration.
func dur(seconds float64) string {
	d := time.Duration(seconds * float64(time.Second))
	switch {
	case d >= time.Minute:
		return d.Round(time.Second).String()
	case d >= time.Second:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Millisecond).String()
	}
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}
