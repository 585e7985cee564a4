package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/opencontext/chatbuf/chat"
	shared "github.com/opencontext/chatbuf/internal/config"
	"github.com/opencontext/chatbuf/internal/natsconn"
	"github.com/opencontext/chatbuf/internal/tracing"
)

// config is the worker's environment. Names from the original system are
// kept; every variable is in the README's configuration table.
type config struct {
	shared.RedisVars             // REDIS_HOST ... REDIS_TLS_SERVER_NAME: where Redis is
	RedisMaxConnections int      `env:"REDIS_MAX_CONNECTIONS" envDefault:"10"`
	RedisRetryOnTimeout bool     `env:"REDIS_RETRY_ON_TIMEOUT" envDefault:"true"`
	RedisEnabled        bool     `env:"REDIS_ENABLED" envDefault:"true"`
	RedisFallback       bool     `env:"REDIS_FALLBACK" envDefault:"true"`
	RedisWaitReplicas   int      `env:"REDIS_WAIT_REPLICAS" envDefault:"0"`
	RedisWaitTimeout    duration `env:"REDIS_WAIT_TIMEOUT" envDefault:"1s"`

	natsconn.Vars           // NATS_URL, NATS credentials and TLS files
	NATSEmbeddedAddr string `env:"NATS_EMBEDDED_ADDR" envDefault:"127.0.0.1:4222"`
	NATSEmbeddedDir  string `env:"NATS_EMBEDDED_DIR" envDefault:"./data/nats"`

	SubjectPrefix    string   `env:"CHAT_SUBJECT_PREFIX" envDefault:"opencontext.chat"`
	BufferSize       int      `env:"CHAT_BUFFER_SIZE" envDefault:"10"`
	BufferTTL        duration `env:"CHAT_BUFFER_TTL" envDefault:"24h"`
	FlushMaxAge      duration `env:"CHAT_FLUSH_MAX_AGE" envDefault:"5m"`
	FlushIdle        duration `env:"CHAT_FLUSH_IDLE" envDefault:"0"`
	SweepInterval    duration `env:"CHAT_SWEEP_INTERVAL" envDefault:"1s"`
	MaxMessageBytes  int      `env:"CHAT_MAX_MESSAGE_BYTES" envDefault:"65536"`
	BatchMaxBytes    int      `env:"CHAT_BATCH_MAX_BYTES"` // 0 (unset): the server's max_payload minus batchHeaderRoom
	BatchRejectAfter duration `env:"CHAT_BATCH_REJECT_AFTER" envDefault:"10m"`
	DedupeWindow     duration `env:"CHAT_DEDUPE_WINDOW" envDefault:"24h"`
	AckWait          duration `env:"CHAT_ACK_WAIT" envDefault:"30s"`
	MaxAckPending    int      `env:"CHAT_MAX_ACK_PENDING" envDefault:"20000"`
	DuplicateWindow  duration `env:"CHAT_DUPLICATE_WINDOW" envDefault:"2m"`
	StreamReplicas   int      `env:"CHAT_STREAM_REPLICAS" envDefault:"1"`
	FlushedMaxAge    duration `env:"CHAT_FLUSHED_MAX_AGE" envDefault:"0"`
	LockTTL          duration `env:"CHAT_LOCK_TTL" envDefault:"10s"`

	CompletionEnabled        bool     `env:"COMPLETION_ENABLED" envDefault:"true"`
	CompletionMaxSize        int      `env:"COMPLETION_MAX_SIZE" envDefault:"1000"`
	CompletionTTL            duration `env:"COMPLETION_TTL" envDefault:"300s"`
	CompletionStrategy       string   `env:"COMPLETION_STRATEGY" envDefault:"hybrid"`
	CompletionHotThreshold   int      `env:"COMPLETION_HOT_THRESHOLD" envDefault:"5"`
	CompletionPrecomputedTTL duration `env:"COMPLETION_PRECOMPUTED_TTL" envDefault:"1h"`

	Concurrency     int      `env:"WORKER_CONCURRENCY" envDefault:"0"`
	AppendBatch     int      `env:"WORKER_APPEND_BATCH" envDefault:"256"`
	ShutdownTimeout duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s"`
	MetricsAddr     string   `env:"METRICS_ADDR"` // unset: :9464; set empty: disabled
	LogLevel        string   `env:"LOG_LEVEL" envDefault:"info"`

	// otel is the environment the OTEL_* variables are read from
	// (internal/tracing).
	otel map[string]string
}

const defaultMetricsAddr = ":9464"

// duration accepts Go syntax (90s, 24h) or plain seconds (86400).
type duration = shared.Duration

// loadConfig reads the configuration from environ and validates it. Errors
// name the variable and its bad value.
func loadConfig(environ map[string]string) (config, error) {
	cfg, err := env.ParseAsWithOptions[config](env.Options{Environment: environ})
	if err != nil {
		return cfg, explain(err, environ)
	}
	if _, set := environ["METRICS_ADDR"]; !set {
		cfg.MetricsAddr = defaultMetricsAddr
	}
	cfg.otel = environ
	return cfg, errors.Join(cfg.validate(environ), tracing.Check(environ))
}

// explain names the variables in the env package's errors, with their
// values (secrets hidden).
func explain(err error, environ map[string]string) error {
	return shared.Explain[config](err, func(name string) string { return shown(name, environ) })
}

// secretVars hold passwords and tokens: errors and logs never show their
// values.
var secretVars = map[string]bool{"REDIS_PASSWORD": true, "NATS_PASSWORD": true, "NATS_TOKEN": true}

// shown is NAME="value" for errors, with secrets hidden and credentials in
// URLs redacted.
func shown(name string, environ map[string]string) string {
	v, set := environ[name]
	switch {
	case secretVars[name] && set:
		return name + "=(hidden)"
	case name == "NATS_URL":
		return fmt.Sprintf("%s=%q", name, redactURL(v))
	}
	return fmt.Sprintf("%s=%q", name, v)
}

func (c config) validate(environ map[string]string) error {
	var errs []error
	bad := func(name, why string) {
		errs = append(errs, fmt.Errorf("%s: %s", shown(name, environ), why))
	}
	positive := func(name string, d duration) {
		if d <= 0 {
			bad(name, "must be a positive duration")
		}
	}
	if c.RedisPort < 1 || c.RedisPort > 65535 {
		bad("REDIS_PORT", "must be a port number, 1-65535")
	}
	if c.RedisDB < 0 {
		bad("REDIS_DB", "must be 0 or more")
	}
	if c.RedisMaxConnections < 1 {
		bad("REDIS_MAX_CONNECTIONS", "must be at least 1")
	}
	positive("REDIS_SOCKET_TIMEOUT", c.RedisSocketTimeout)
	if c.RedisWaitReplicas < 0 {
		bad("REDIS_WAIT_REPLICAS", "must be 0 (do not wait) or more")
	}
	positive("REDIS_WAIT_TIMEOUT", c.RedisWaitTimeout)
	positive("REDIS_CONNECT_TIMEOUT", c.RedisConnectTimeout)
	if c.RedisAddrs != "" {
		for _, addr := range strings.Split(c.RedisAddrs, ",") {
			if err := checkHostPort(strings.TrimSpace(addr)); err != nil {
				bad("REDIS_ADDRS", fmt.Sprintf("%v (want host:port,host:port,...)", err))
				break
			}
		}
		for _, name := range []string{"REDIS_HOST", "REDIS_PORT"} {
			if _, set := environ[name]; set {
				bad(name, "not used with REDIS_ADDRS (Redis Cluster); set one or the other")
			}
		}
		if c.RedisDB != 0 {
			bad("REDIS_DB", "must be 0 with REDIS_ADDRS: Redis Cluster has only database 0")
		}
	}
	if !c.RedisTLS {
		for _, name := range []string{"REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE", "REDIS_TLS_SERVER_NAME"} {
			if environ[name] != "" {
				bad(name, "needs REDIS_TLS=true")
			}
		}
	} else if _, err := c.redisTLS(); err != nil {
		errs = append(errs, err)
	}
	if c.NATSURL == "" {
		bad("NATS_URL", "must be a NATS URL or 'embedded'")
	}
	errs = append(errs, c.validateNATSSecurity(environ)...)
	if strings.ContainsAny(c.SubjectPrefix, " *>\t") || c.SubjectPrefix == "" ||
		strings.HasPrefix(c.SubjectPrefix, ".") || strings.HasSuffix(c.SubjectPrefix, ".") {
		bad("CHAT_SUBJECT_PREFIX", "must be NATS subject tokens without wildcards, like opencontext.chat")
	}
	if c.BufferSize < 1 {
		bad("CHAT_BUFFER_SIZE", "must be at least 1")
	}
	positive("CHAT_BUFFER_TTL", c.BufferTTL)
	positive("CHAT_FLUSH_MAX_AGE", c.FlushMaxAge)
	positive("CHAT_SWEEP_INTERVAL", c.SweepInterval)
	if c.FlushIdle < 0 {
		bad("CHAT_FLUSH_IDLE", "must not be negative (0 turns idle flushes off)")
	}
	if c.BufferTTL > 0 && c.FlushMaxAge > 0 && c.AckWait > 0 && c.BufferTTL < 2*(c.FlushMaxAge+c.AckWait) {
		bad("CHAT_BUFFER_TTL", fmt.Sprintf("must be at least 2 x (CHAT_FLUSH_MAX_AGE + CHAT_ACK_WAIT) = 2 x (%s + %s) = %s, "+
			"so that a buffer expires only when no worker ran for that long",
			c.FlushMaxAge.D(), c.AckWait.D(), 2*(c.FlushMaxAge.D()+c.AckWait.D())))
	}
	if c.MaxMessageBytes < 1 {
		bad("CHAT_MAX_MESSAGE_BYTES", "must be at least 1")
	}
	if c.BatchMaxBytes < 0 {
		bad("CHAT_BATCH_MAX_BYTES", "must be unset (the server's max_payload minus 4096) or a number of bytes")
	} else if c.BatchMaxBytes > 0 && c.MaxMessageBytes > 0 {
		if w := chat.WorstBatchBytes(c.MaxMessageBytes); w > c.BatchMaxBytes {
			bad("CHAT_BATCH_MAX_BYTES", fmt.Sprintf("one message of CHAT_MAX_MESSAGE_BYTES=%d makes a batch of up to %d bytes, "+
				"which does not fit; raise CHAT_BATCH_MAX_BYTES or lower CHAT_MAX_MESSAGE_BYTES", c.MaxMessageBytes, w))
		}
	}
	if c.BatchRejectAfter < duration(time.Minute) {
		bad("CHAT_BATCH_REJECT_AFTER", "must be at least 1m: a stream full for seconds is a pause, not a failure")
	}
	positive("CHAT_DEDUPE_WINDOW", c.DedupeWindow)
	positive("CHAT_ACK_WAIT", c.AckWait)
	if c.MaxAckPending < 1 {
		bad("CHAT_MAX_ACK_PENDING", "must be at least 1")
	}
	if c.DuplicateWindow < duration(2*time.Minute) {
		bad("CHAT_DUPLICATE_WINDOW", "must be at least 2m")
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		bad("CHAT_STREAM_REPLICAS", "must be 1-5")
	}
	if c.FlushedMaxAge < 0 {
		bad("CHAT_FLUSHED_MAX_AGE", "must be 0 (keep) or a positive duration")
	}
	positive("CHAT_LOCK_TTL", c.LockTTL)
	if c.AppendBatch < 1 {
		bad("WORKER_APPEND_BATCH", "must be at least 1")
	}
	if c.Concurrency < 0 {
		bad("WORKER_CONCURRENCY", "must be 0 (number of CPUs) or more")
	}
	positive("SHUTDOWN_TIMEOUT", c.ShutdownTimeout)
	if c.CompletionMaxSize < 1 {
		bad("COMPLETION_MAX_SIZE", "must be at least 1")
	}
	positive("COMPLETION_TTL", c.CompletionTTL)
	switch c.CompletionStrategy {
	case "lru", "ttl", "hybrid":
	default:
		bad("COMPLETION_STRATEGY", "must be lru, ttl or hybrid")
	}
	if c.CompletionHotThreshold < 1 {
		bad("COMPLETION_HOT_THRESHOLD", "must be at least 1")
	}
	positive("COMPLETION_PRECOMPUTED_TTL", c.CompletionPrecomputedTTL)
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", "must be debug, info, warn or error")
	}
	return errors.Join(errs...)
}

// validateNATSSecurity checks the NATS credentials and TLS files: one way to
// authenticate at most, files that exist and parse, nothing that the
// embedded server would ignore.
func (c config) validateNATSSecurity(environ map[string]string) []error {
	var errs []error
	bad := func(name, why string) {
		errs = append(errs, fmt.Errorf("%s: %s", shown(name, environ), why))
	}
	if c.NATSURL == "embedded" {
		for _, name := range natsSecurityVars {
			if environ[name] != "" {
				bad(name, "not used with NATS_URL=embedded (the embedded server has no authentication or TLS)")
			}
		}
		return errs
	}
	return append(errs, c.natsSecurityConfig().Validate(c.NATSURL, environ, func(name string) string { return shown(name, environ) })...)
}

// checkHostPort checks one host:port of REDIS_ADDRS.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port must be 1-65535", addr)
	}
	return nil
}
