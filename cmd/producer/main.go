// Command producer publishes chat messages to chatbuf: one message, JSON
// lines from standard input, or a load test that it can verify end to end.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/internal/natsconn"
	"github.com/opencontext/chatbuf/stream"
	"github.com/opencontext/chatbuf/verify"
)

const defaultNATSURL = "nats://127.0.0.1:4222"

const usage = `Usage:
  producer [--nats URL] [--prefix P] send --user U --device D --agent A [--role ROLE] [--id MSGID] [TEXT]
  producer [--nats URL] [--prefix P] load [--conversations 1000] [--messages 100000] [--rate 0]
           [--size 256] [--window 4096] [--hostile] [--no-message-id]
           [--verify] [--verify-timeout 2m] [--buffer-size 10] [--json]
           [--http URL [--batch 10] [--conns 32]]

send publishes one chat message with content TEXT and waits for its PubAck.
Without TEXT it publishes each JSON line of standard input as it is; the
conversation comes from the flags, else from the line's user_id, device_id
and agent_id. It prints one PubAck (or error) per line and exits 1 if any
line failed. Ids are given as they are (dots, spaces, @, non-ASCII):
send writes them into the subject encoded (. * > space % as %2E %2A %3E
%20 %25).

load publishes --messages of about --size bytes round-robin over
--conversations, at --rate messages/s (0: as fast as PubAcks allow) with up
to --window PubAcks pending, then prints a summary (--json: as one JSON
object on stdout). --hostile includes 16 conversations with hostile ids
(. * > space % @ : and non-ASCII in them; --hostile-avoid CHARS leaves out
those holding any of CHARS). --verify then waits for the workers to drain CHAT_IN, flushes every
conversation, reads the batches back and checks them against the contract
(--buffer-size is the workers' CHAT_BUFFER_SIZE). Exit 1 on loss, duplicate,
misplacement, malformed batch, or a publish that failed after retries.
--http URL sends the load through the gateway (POST
/api/push/chat/messages, --batch messages a request, --conns keep-alive
connections, each sending its own conversations in order; key from
GATEWAY_API_KEY or CONTEXT_API_KEY); --window does not apply, and NATS is
needed only for --verify.

Flags go before TEXT. Environment: NATS_URL (default ` + defaultNATSURL + `),
CHAT_SUBJECT_PREFIX (default ` + stream.DefaultPrefix + `), CHAT_BUFFER_SIZE
(default 10, load's --buffer-size); flags override them.

Connection (the worker's variables; flags override them): NATS_USER and
NATS_PASSWORD, or NATS_TOKEN (environment only, so that ps does not show
them), or NATS_NKEY_SEED_FILE (--nkey), or NATS_CREDS (--creds), or
credentials in the URL; NATS_TLS_CA_FILE (--tls-ca), NATS_TLS_CERT_FILE
(--tls-cert) and NATS_TLS_KEY_FILE (--tls-key) for TLS; NATS_INBOX_PREFIX
(--inbox-prefix) for replies and PubAcks, when the server lets this device
subscribe only below its own prefix (see deploy/nats-server.conf).
`

// errUsage marks errors in the command line: exit status 2 with the usage.
var errUsage = errors.New("usage")

// errFailed means the failure was already reported: exit status 1.
var errFailed = errors.New("failed")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the producer's command line and returns the exit status.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, getenv, stdin, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "producer: %v\n\n%s", err, usage)
		return 2
	case errors.Is(err, errFailed):
		return 1
	default:
		fmt.Fprintf(stderr, "producer: %v\n", err)
		return 1
	}
}

// common are the flags every command takes.
type common struct {
	natsURL string
	prefix  string
	conn    connOptions
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.natsURL, "nats", c.natsURL, "NATS server URL (env NATS_URL)")
	fs.StringVar(&c.prefix, "prefix", c.prefix, "subject prefix (env CHAT_SUBJECT_PREFIX)")
	for _, f := range []struct {
		s          *setting
		name, help string
	}{
		{&c.conn.nkey, "nkey", "NKey seed file (env NATS_NKEY_SEED_FILE)"},
		{&c.conn.creds, "creds", "NATS .creds file (env NATS_CREDS)"},
		{&c.conn.tlsCA, "tls-ca", "CA certificate file of the NATS server (env NATS_TLS_CA_FILE)"},
		{&c.conn.tlsCert, "tls-cert", "client certificate file (env NATS_TLS_CERT_FILE)"},
		{&c.conn.tlsKey, "tls-key", "client certificate's key file (env NATS_TLS_KEY_FILE)"},
		{&c.conn.inboxPrefix, "inbox-prefix", "subject prefix of reply inboxes (env NATS_INBOX_PREFIX)"},
	} {
		fs.Var(&settingFlag{s: f.s, name: "--" + f.name}, f.name, f.help)
	}
}

// connOptions are the NATS credentials and TLS files, named as the worker
// names them.
type connOptions struct {
	user, password, token setting // environment only: ps would show flags
	nkey, creds           setting
	tlsCA, tlsCert        setting
	tlsKey, inboxPrefix   setting
}

func connFromEnv(getenv func(string) string) connOptions {
	env := func(name string) setting { return setting{value: getenv(name), name: name} }
	return connOptions{
		user: env("NATS_USER"), password: env("NATS_PASSWORD"), token: env("NATS_TOKEN"),
		nkey: env("NATS_NKEY_SEED_FILE"), creds: env("NATS_CREDS"),
		tlsCA: env("NATS_TLS_CA_FILE"), tlsCert: env("NATS_TLS_CERT_FILE"), tlsKey: env("NATS_TLS_KEY_FILE"),
		inboxPrefix: env("NATS_INBOX_PREFIX"),
	}
}

// setting is a string from a variable or a flag, and the name to blame in
// errors: the flag's when the flag set it.
type setting struct{ value, name string }

func (s setting) String() string { return fmt.Sprintf("%s=%q", s.name, s.value) }

// settingFlag is the flag.Value of a setting.
type settingFlag struct {
	s    *setting
	name string
}

func (f *settingFlag) String() string {
	if f == nil || f.s == nil {
		return ""
	}
	return f.s.value
}

func (f *settingFlag) Set(v string) error {
	f.s.value, f.s.name = v, f.name
	return nil
}

// options returns the connection options. Errors name the variable or flag;
// they never show a password or token.
func (o connOptions) options() ([]nats.Option, error) {
	var (
		opts    []nats.Option
		errs    []error
		methods []string
	)
	for _, s := range []setting{o.user, o.token, o.nkey, o.creds} {
		if s.value != "" {
			methods = append(methods, s.name)
		}
	}
	if len(methods) > 1 {
		errs = append(errs, fmt.Errorf("%s and %s are both set: choose one way to authenticate", methods[0], methods[1]))
	}
	switch {
	case o.password.value != "" && o.user.value == "":
		errs = append(errs, errors.New("NATS_PASSWORD is set but NATS_USER is not"))
	case o.user.value != "" && o.password.value == "":
		errs = append(errs, fmt.Errorf("%s: needs NATS_PASSWORD", o.user))
	case o.user.value != "":
		opts = append(opts, nats.UserInfo(o.user.value, o.password.value))
	case o.token.value != "":
		opts = append(opts, nats.Token(o.token.value))
	}
	if o.nkey.value != "" {
		if err := readable(o.nkey); err != nil {
			errs = append(errs, err)
		} else if opt, err := nats.NkeyOptionFromSeed(o.nkey.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", o.nkey, err))
		} else {
			opts = append(opts, opt)
		}
	}
	if o.creds.value != "" {
		if err := readable(o.creds); err != nil {
			errs = append(errs, err)
		} else {
			opts = append(opts, nats.UserCredentials(o.creds.value))
		}
	}
	if o.tlsCA.value != "" {
		if err := readable(o.tlsCA); err != nil {
			errs = append(errs, err)
		} else {
			opts = append(opts, nats.RootCAs(o.tlsCA.value))
		}
	}
	switch {
	case o.tlsCert.value != "" && o.tlsKey.value == "":
		errs = append(errs, fmt.Errorf("%s: needs a key file (NATS_TLS_KEY_FILE or --tls-key)", o.tlsCert))
	case o.tlsKey.value != "" && o.tlsCert.value == "":
		errs = append(errs, fmt.Errorf("%s: needs a certificate file (NATS_TLS_CERT_FILE or --tls-cert)", o.tlsKey))
	case o.tlsCert.value != "":
		err1, err2 := readable(o.tlsCert), readable(o.tlsKey)
		if err1 != nil || err2 != nil {
			errs = append(errs, err1, err2)
		} else {
			opts = append(opts, nats.ClientCert(o.tlsCert.value, o.tlsKey.value))
		}
	}
	if o.inboxPrefix.value != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.inboxPrefix.value))
	}
	return opts, errors.Join(errs...)
}

// readable checks that the file a setting names can be opened.
func readable(s setting) error {
	f, err := os.Open(s.value)
	if err != nil {
		return fileError(s, err)
	}
	return f.Close()
}

func fileError(s setting, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: no such file", s)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s: permission denied", s)
	}
	return fmt.Errorf("%s: %v", s, err)
}

func (c *common) config() stream.Config { return stream.Config{Prefix: c.prefix}.WithDefaults() }

func dispatch(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	c := common{
		natsURL: or(getenv("NATS_URL"), defaultNATSURL),
		prefix:  or(getenv("CHAT_SUBJECT_PREFIX"), stream.DefaultPrefix),
		conn:    connFromEnv(getenv),
	}
	top := newFlagSet("producer")
	c.register(top)
	if err := parse(top, args); err != nil {
		return err
	}
	if top.NArg() == 0 {
		return fmt.Errorf("%w: no command", errUsage)
	}
	cmd, args := top.Arg(0), top.Args()[1:]
	switch cmd {
	case "send":
		return sendCommand(ctx, c, args, stdin, stdout, stderr)
	case "load":
		return loadCommand(ctx, c, args, getenv, stdout, stderr)
	case "help":
		return flag.ErrHelp
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
}

func sendCommand(ctx context.Context, c common, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("send")
	c.register(fs)
	var f sendFlags
	fs.StringVar(&f.user, "user", "", "user id, as it is (encoded into the subject)")
	fs.StringVar(&f.device, "device", "", "device id, as it is")
	fs.StringVar(&f.agent, "agent", "", "agent id, as it is")
	fs.StringVar(&f.role, "role", "user", "role: user, assistant, system, tool, developer or function")
	fs.StringVar(&f.id, "id", "", "message_id (also the Nats-Msg-Id)")
	fs.BoolVar(&f.endBatch, "end-batch", false, "close the conversation's batch right after this message (header Chatbuf-End-Batch: true); with stdin, after each line's")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("%w: send takes one TEXT argument (quote it; flags go before it), got %d", errUsage, fs.NArg())
	}
	if fs.NArg() == 1 {
		conv, err := f.conversation()
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		js, done, err := connect(c)
		if err != nil {
			return err
		}
		defer done()
		ack, err := sendText(ctx, js, c.config(), conv, f.role, f.id, fs.Arg(0), f.endBatch)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, formatAck(ack))
		return nil
	}
	js, done, err := connect(c)
	if err != nil {
		return err
	}
	defer done()
	if isTerminal(stdin) {
		fmt.Fprintln(stderr, "reading JSON lines from standard input; end with Ctrl-D")
	}
	failed, err := sendLines(ctx, js, c.config(), f, stdin, stdout, stderr)
	if err != nil {
		return err
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "producer: %d line(s) failed\n", failed)
		return errFailed
	}
	return nil
}

func loadCommand(ctx context.Context, c common, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	bufferSize := verify.DefaultBufferSize
	if s := getenv("CHAT_BUFFER_SIZE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("%w: CHAT_BUFFER_SIZE=%q is not a positive integer", errUsage, s)
		}
		bufferSize = n
	}
	fs := newFlagSet("load")
	c.register(fs)
	var o loadOptions
	fs.IntVar(&o.conversations, "conversations", 1000, "number of conversations")
	fs.IntVar(&o.messages, "messages", 100000, "number of messages")
	fs.Float64Var(&o.rate, "rate", 0, "messages per second; 0: as fast as PubAcks allow")
	fs.IntVar(&o.size, "size", 256, "content size in bytes (about)")
	fs.IntVar(&o.window, "window", 4096, "most PubAcks pending at once")
	fs.BoolVar(&o.hostile, "hostile", false, "include conversations with hostile ids (needs --conversations >= 16)")
	fs.StringVar(&o.hostileAvoid, "hostile-avoid", "", "leave out the hostile ids holding any of these characters (for a server that cannot carry them)")
	fs.BoolVar(&o.noMessageID, "no-message-id", false, "publish without message_id")
	fs.BoolVar(&o.verify, "verify", false, "verify the load end to end after publishing")
	fs.BoolVar(&o.allowUnordered, "allow-unordered", false, "--verify passes despite messages out of CHAT_IN order (for runs that used the workers' in-memory fallback)")
	fs.DurationVar(&o.verifyTimeout, "verify-timeout", 2*time.Minute, "how long --verify waits for every message")
	fs.IntVar(&o.bufferSize, "buffer-size", bufferSize, "the workers' CHAT_BUFFER_SIZE, for --verify")
	fs.BoolVar(&o.json, "json", false, "print the summary and report as one JSON object on stdout (text goes to stderr)")
	fs.StringVar(&o.http, "http", "", "publish through the gateway at this base URL (http://host:1733) instead of JetStream")
	fs.IntVar(&o.batch, "batch", 10, "with --http: messages per request (1-100)")
	fs.IntVar(&o.conns, "conns", 32, "with --http: concurrent requests, each on its own keep-alive connection")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: load takes no arguments, got %q", errUsage, fs.Args())
	}
	if err := o.validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	o.apiKey = or(getenv("GATEWAY_API_KEY"), getenv("CONTEXT_API_KEY"))
	if o.http != "" && !o.verify {
		return load(ctx, nil, c.config(), o, stdout, stderr)
	}
	nc, err := dial(c)
	if err != nil {
		return err
	}
	defer nc.Close()
	return load(ctx, nc, c.config(), o, stdout, stderr)
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses args, marking bad flags as usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return fmt.Errorf("%w: %s: %v", errUsage, fs.Name(), err)
}

// connect dials NATS and returns a JetStream context and the function that
// closes the connection.
func connect(c common) (jetstream.JetStream, func(), error) {
	nc, err := dial(c)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return js, nc.Close, nil
}

// dial connects to NATS with the configured credentials and TLS, with a
// one-line error naming the URL (without its credentials).
func dial(c common) (*nats.Conn, error) {
	opts, err := c.conn.options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(c.natsURL, append(opts, nats.Name("chatbuf-producer"), nats.Timeout(5*time.Second))...)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to NATS at %s: %v", natsconn.RedactURL(c.natsURL), strings.TrimPrefix(err.Error(), "nats: "))
	}
	return nc, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
