// Package natsconn is the NATS client side shared by chatbuf's commands:
// credentials and TLS options from the worker's variables, URL redaction
// for logs and errors, and a connection that retries and reconnects forever.
package natsconn

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// SecurityVars are the variables of NATS credentials and TLS.
var SecurityVars = []string{"NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_NKEY_SEED_FILE", "NATS_CREDS",
	"NATS_TLS_CA_FILE", "NATS_TLS_CERT_FILE", "NATS_TLS_KEY_FILE"}

// Security holds the NATS credentials and TLS files, as the variables of
// SecurityVars name them.
type Security struct {
	User, Password, Token string
	NKeySeedFile          string
	Creds                 string
	TLSCAFile             string
	TLSCertFile           string
	TLSKeyFile            string
}

// Options returns the connection options for the configured credentials
// and TLS files. It reads the files now, so that a missing or malformed one
// is a configuration error naming its variable; nats.go reads the seed and
// credentials files again at each (re)connect, so they may be rotated in
// place.
func (s Security) Options() ([]nats.Option, error) {
	var (
		opts []nats.Option
		errs []error
	)
	switch {
	case s.User != "":
		opts = append(opts, nats.UserInfo(s.User, s.Password))
	case s.Token != "":
		opts = append(opts, nats.Token(s.Token))
	}
	if s.NKeySeedFile != "" {
		if err := checkSeedFile(s.NKeySeedFile); err != nil {
			errs = append(errs, err)
		} else if opt, err := nats.NkeyOptionFromSeed(s.NKeySeedFile); err != nil {
			errs = append(errs, fmt.Errorf("NATS_NKEY_SEED_FILE=%q: %v", s.NKeySeedFile, err))
		} else {
			opts = append(opts, opt)
		}
	}
	if s.Creds != "" {
		if err := checkCredsFile(s.Creds); err != nil {
			errs = append(errs, err)
		} else {
			opts = append(opts, nats.UserCredentials(s.Creds))
		}
	}
	tlsCfg, err := s.tls()
	if err != nil {
		errs = append(errs, err)
	} else if tlsCfg != nil {
		opts = append(opts, nats.Secure(tlsCfg))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return opts, nil
}

// Validate checks the credentials for url: a password needs a user and the
// other way round, and at most one way to authenticate is set. environ
// tells which variables are set; shown formats a variable for an error
// (hiding secrets). The files are checked by Options.
func (s Security) Validate(url string, environ map[string]string, shown func(name string) string) []error {
	var errs []error
	bad := func(name, why string) {
		errs = append(errs, fmt.Errorf("%s: %s", shown(name), why))
	}
	if s.Password != "" && s.User == "" {
		bad("NATS_PASSWORD", "needs NATS_USER")
	}
	if s.User != "" && s.Password == "" {
		bad("NATS_USER", "needs NATS_PASSWORD")
	}
	var methods []string
	for _, name := range []string{"NATS_USER", "NATS_TOKEN", "NATS_NKEY_SEED_FILE", "NATS_CREDS"} {
		if environ[name] != "" {
			methods = append(methods, name)
		}
	}
	if URLHasCredentials(url) {
		methods = append(methods, "NATS_URL")
	}
	if len(methods) > 1 {
		bad(methods[1], fmt.Sprintf("set together with %s: choose one way to authenticate "+
			"(NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED_FILE, NATS_CREDS or credentials in NATS_URL)", methods[0]))
	}
	if _, err := s.Options(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// checkSeedFile checks that NATS_NKEY_SEED_FILE holds a user seed.
func checkSeedFile(path string) error {
	b, err := ReadFile("NATS_NKEY_SEED_FILE", path)
	if err != nil {
		return err
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return fmt.Errorf("NATS_NKEY_SEED_FILE=%q: no nkey seed in the file", path)
	}
	defer kp.Wipe()
	if _, err := kp.Seed(); err != nil {
		return fmt.Errorf("NATS_NKEY_SEED_FILE=%q: holds a public key, not a seed", path)
	}
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return fmt.Errorf("NATS_NKEY_SEED_FILE=%q: not a user seed (SU...)", path)
	}
	return nil
}

// checkCredsFile checks that NATS_CREDS holds a user JWT and its seed.
func checkCredsFile(path string) error {
	b, err := ReadFile("NATS_CREDS", path)
	if err != nil {
		return err
	}
	if _, err := nkeys.ParseDecoratedJWT(b); err != nil || !bytes.Contains(b, []byte("BEGIN NATS USER JWT")) {
		return fmt.Errorf("NATS_CREDS=%q: no user JWT in the file (want a .creds file from nsc)", path)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return fmt.Errorf("NATS_CREDS=%q: no nkey seed in the file (want a .creds file from nsc)", path)
	}
	kp.Wipe()
	return nil
}

// URLHasCredentials reports whether a NATS_URL (a comma-separated list)
// carries a user, password or token.
func URLHasCredentials(s string) bool { return RedactURL(s) != s }

// RedactURL hides the credentials of a NATS URL or comma-separated list of
// them: a password becomes xxxxx, and so does a token (a user without
// password), which url.URL.Redacted would show.
func RedactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = redactOne(p)
	}
	return strings.Join(parts, ",")
}

func redactOne(p string) string {
	u, err := url.Parse(strings.TrimSpace(p))
	if err != nil || u.User == nil {
		// Not a URL with user info; hide whatever precedes an @ all the same.
		at := strings.LastIndex(p, "@")
		if at < 0 {
			return p
		}
		if i := strings.Index(p, "://"); i >= 0 && i < at {
			return p[:i+3] + "xxxxx" + p[at:]
		}
		return "xxxxx" + p[at:]
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	} else {
		u.User = url.User("xxxxx")
	}
	return u.String()
}

// Connect connects as client name, retrying in the background when the
// server is not there yet, and reconnecting forever. opts carry credentials
// and TLS. Logs and errors show the URL without its credentials. onError,
// if not nil, sees every connection and asynchronous error; onConnect, if
// not nil, is called after each (re)connection.
func Connect(url, name string, opts []nats.Option, log *slog.Logger, onError func(error), onConnect func(*nats.Conn)) (*nats.Conn, error) {
	if onError == nil {
		onError = func(error) {}
	}
	if onConnect == nil {
		onConnect = func(*nats.Conn) {}
	}
	var failed rateLimit
	nc, err := nats.Connect(url, append(slices.Clone(opts),
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats: disconnected", "error", err)
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			// Every attempt fails the same way while the server is down or
			// refuses the credentials: say so once every 10 s.
			onError(err)
			if ok, suppressed := failed.allow(10 * time.Second); ok {
				log.Warn("nats: cannot connect", "url", RedactURL(url), "error", err, "similar_messages_suppressed", suppressed)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats: reconnected", "url", RedactURL(nc.ConnectedUrlRedacted()), "max_payload", nc.MaxPayload())
			onConnect(nc)
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats: connected", "url", RedactURL(nc.ConnectedUrlRedacted()), "server_version", nc.ConnectedServerVersion(),
				"max_payload", nc.MaxPayload())
			onConnect(nc)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			onError(err)
			log.Warn("nats: async error", "error", err)
		}),
	)...)
	if err != nil {
		return nil, fmt.Errorf("NATS_URL=%q: %w", RedactURL(url), err)
	}
	return nc, nil
}

// rateLimit lets one event through every interval and counts the others.
type rateLimit struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *rateLimit) allow(interval time.Duration) (ok bool, suppressed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); r.last.IsZero() || now.Sub(r.last) >= interval {
		suppressed, r.last, r.suppressed = r.suppressed, now, 0
		return true, suppressed
	}
	r.suppressed++
	return false, 0
}

// Vars are the NATS variables every command reads (URL, credentials, TLS
// files), to embed in a command's configuration struct.
type Vars struct {
	NATSURL          string `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	NATSUser         string `env:"NATS_USER"`
	NATSPassword     string `env:"NATS_PASSWORD"`
	NATSToken        string `env:"NATS_TOKEN"`
	NATSNKeySeedFile string `env:"NATS_NKEY_SEED_FILE"`
	NATSCreds        string `env:"NATS_CREDS"`
	NATSTLSCAFile    string `env:"NATS_TLS_CA_FILE"`
	NATSTLSCertFile  string `env:"NATS_TLS_CERT_FILE"`
	NATSTLSKeyFile   string `env:"NATS_TLS_KEY_FILE"`
}

// Security returns the credentials and TLS files of v.
func (v Vars) Security() Security {
	return Security{
		User: v.NATSUser, Password: v.NATSPassword, Token: v.NATSToken,
		NKeySeedFile: v.NATSNKeySeedFile, Creds: v.NATSCreds,
		TLSCAFile: v.NATSTLSCAFile, TLSCertFile: v.NATSTLSCertFile, TLSKeyFile: v.NATSTLSKeyFile,
	}
}
