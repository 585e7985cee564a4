package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/chat"
	shared "github.com/opencontext/chatbuf/internal/config"
	"github.com/opencontext/chatbuf/internal/natsconn"
	"github.com/opencontext/chatbuf/stream"
)

// config is what chatbufctl reads of the worker's environment: the same
// variables, with the same defaults, so that it reaches the same Redis and
// NATS the same way.
type config struct {
	shared.RedisVars // REDIS_HOST ... REDIS_TLS_SERVER_NAME: where Redis is

	natsconn.Vars           // NATS_URL, NATS credentials and TLS files
	NATSEmbeddedAddr string `env:"NATS_EMBEDDED_ADDR" envDefault:"127.0.0.1:4222"`

	SubjectPrefix string          `env:"CHAT_SUBJECT_PREFIX" envDefault:"opencontext.chat"`
	FlushMaxAge   shared.Duration `env:"CHAT_FLUSH_MAX_AGE" envDefault:"5m"`
}

func loadConfig(environ map[string]string) (config, error) {
	cfg, err := env.ParseAsWithOptions[config](env.Options{Environment: environ})
	if err != nil {
		return cfg, explain(err, environ)
	}
	if cfg.FlushMaxAge <= 0 {
		return cfg, fmt.Errorf("CHAT_FLUSH_MAX_AGE=%q: must be a positive duration", environ["CHAT_FLUSH_MAX_AGE"])
	}
	return cfg, nil
}

func (c config) keys() chat.Keys { return chat.NewKeys(c.RedisKeyPrefix) }

func (c config) streams() stream.Config { return stream.Config{Prefix: c.SubjectPrefix}.WithDefaults() }

func (c config) maxAge() time.Duration { return c.FlushMaxAge.D() }

func (c config) redis() (redis.UniversalClient, error) {
	return c.Redis(4, true).Client()
}

// nats connects to NATS_URL (to NATS_EMBEDDED_ADDR when the worker runs an
// embedded server), failing at once when it cannot.
func (c config) nats(stderr io.Writer) (*nats.Conn, error) {
	url := c.NATSURL
	if url == "embedded" {
		url = "nats://" + c.NATSEmbeddedAddr
	}
	opts, err := c.Security().Options()
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts = append(opts, nats.Timeout(5*time.Second))
	nc, err := nats.Connect(url, append(opts, nats.Name("chatbufctl"), nats.MaxReconnects(2),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("nats: async error", "error", err) }))...)
	if err != nil {
		return nil, fmt.Errorf("NATS_URL=%q: %w", natsconn.RedactURL(url), err)
	}
	return nc, nil
}

var errUsage = errors.New("usage")

// explain names the variables in the env package's errors, with their
// values (secrets hidden).
func explain(err error, environ map[string]string) error {
	return shared.Explain[config](err, func(name string) string {
		if strings.Contains(name, "PASSWORD") || strings.Contains(name, "TOKEN") {
			return name + "=(hidden)"
		}
		return fmt.Sprintf("%s=%q", name, environ[name])
	})
}
