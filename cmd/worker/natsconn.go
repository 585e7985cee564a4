package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// startEmbedded starts an in-process nats-server with JetStream listening on
// addr and storing under dir.
func startEmbedded(addr, dir string, log *slog.Logger) (*server.Server, string, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", fmt.Errorf("NATS_EMBEDDED_ADDR=%q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, "", fmt.Errorf("NATS_EMBEDDED_ADDR=%q: bad port", addr)
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "chatbuf-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
	})
	if err != nil {
		return nil, "", fmt.Errorf("embedded nats-server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, "", fmt.Errorf("embedded nats-server: not ready on %s after 10s (is the port taken? set NATS_EMBEDDED_ADDR)", addr)
	}
	url := "nats://" + net.JoinHostPort(host, strconv.Itoa(port))
	log.Info("nats: embedded server started", "url", url, "store", dir, "version", server.VERSION)
	return srv, url, nil
}

// natsSecurityVars are the variables of NATS credentials and TLS.
var natsSecurityVars = []string{"NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_NKEY_SEED_FILE", "NATS_CREDS",
	"NATS_TLS_CA_FILE", "NATS_TLS_CERT_FILE", "NATS_TLS_KEY_FILE"}

// natsSecurity returns the connection options for the configured
// credentials and TLS files. It reads the files now, so that a missing or
// malformed one is a configuration error naming its variable; nats.go reads
// the seed and credentials files again at each (re)connect, so they may be
// rotated in place.
func (c config) natsSecurity() ([]nats.Option, error) {
	var (
		opts []nats.Option
		errs []error
	)
	switch {
	case c.NATSUser != "":
		opts = append(opts, nats.UserInfo(c.NATSUser, c.NATSPassword))
	case c.NATSToken != "":
		opts = append(opts, nats.Token(c.NATSToken))
	}
	if c.NATSNKeySeedFile != "" {
		if err := checkSeedFile(c.NATSNKeySeedFile); err != nil {
			errs = append(errs, err)
		} else if opt, err := nats.NkeyOptionFromSeed(c.NATSNKeySeedFile); err != nil {
			errs = append(errs, fmt.Errorf("NATS_NKEY_SEED_FILE=%q: %v", c.NATSNKeySeedFile, err))
		} else {
			opts = append(opts, opt)
		}
	}
	if c.NATSCreds != "" {
		if err := checkCredsFile(c.NATSCreds); err != nil {
			errs = append(errs, err)
		} else {
			opts = append(opts, nats.UserCredentials(c.NATSCreds))
		}
	}
	tlsCfg, err := c.natsTLS()
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

// checkSeedFile checks that NATS_NKEY_SEED_FILE holds a user seed.
func checkSeedFile(path string) error {
	b, err := readFile("NATS_NKEY_SEED_FILE", path)
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
	b, err := readFile("NATS_CREDS", path)
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

// urlHasCredentials reports whether a NATS_URL (a comma-separated list)
// carries a user, password or token.
func urlHasCredentials(s string) bool { return redactURL(s) != s }

// redactURL hides the credentials of a NATS URL or comma-separated list of
// them: a password becomes xxxxx, and so does a token (a user without
// password), which url.URL.Redacted would show.
func redactURL(s string) string {
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

// connectNATS connects, retrying in the background when the server is not
// there yet, and reconnecting forever. opts carry credentials and TLS.
// Logs and errors show the URL without its credentials.
// onConnect is called after each (re)connection.
func connectNATS(url string, opts []nats.Option, log *slog.Logger, onError func(error), onConnect func(*nats.Conn)) (*nats.Conn, error) {
	var failed rateLimit
	nc, err := nats.Connect(url, append(slices.Clone(opts),
		nats.Name("chatbuf-worker"),
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
				log.Warn("nats: cannot connect", "url", redactURL(url), "error", err, "similar_messages_suppressed", suppressed)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats: reconnected", "url", redactURL(nc.ConnectedUrlRedacted()), "max_payload", nc.MaxPayload())
			onConnect(nc)
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats: connected", "url", redactURL(nc.ConnectedUrlRedacted()), "server_version", nc.ConnectedServerVersion(),
				"max_payload", nc.MaxPayload())
			onConnect(nc)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			onError(err)
			log.Warn("nats: async error", "error", err)
		}),
	)...)
	if err != nil {
		return nil, fmt.Errorf("NATS_URL=%q: %w", redactURL(url), err)
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
