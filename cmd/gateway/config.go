package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/caarlos0/env/v11"

	shared "github.com/opencontext/chatbuf/internal/config"
	"github.com/opencontext/chatbuf/internal/natsconn"
	"github.com/opencontext/chatbuf/internal/tracing"
)

// config is the gateway's environment; every variable is in the README's
// configuration table.
type config struct {
	Addr            string   `env:"GATEWAY_ADDR" envDefault:":1733"`
	APIKeys         string   `env:"GATEWAY_API_KEYS"`
	ContextAPIKey   string   `env:"CONTEXT_API_KEY"`
	Auth            bool     `env:"GATEWAY_AUTH" envDefault:"true"`
	MaxBodyBytes    int64    `env:"GATEWAY_MAX_BODY_BYTES" envDefault:"8388608"`
	PublishTimeout  duration `env:"GATEWAY_PUBLISH_TIMEOUT" envDefault:"10s"`
	FlushTimeout    duration `env:"GATEWAY_FLUSH_TIMEOUT" envDefault:"10s"`
	ShutdownTimeout duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s"`
	LogLevel        string   `env:"LOG_LEVEL" envDefault:"info"`

	// otel is the environment the OTEL_* variables are read from
	// (internal/tracing).
	otel map[string]string

	natsconn.Vars          // NATS_URL, NATS credentials and TLS files
	NATSInboxPrefix string `env:"NATS_INBOX_PREFIX"`

	SubjectPrefix   string `env:"CHAT_SUBJECT_PREFIX" envDefault:"opencontext.chat"`
	MaxMessageBytes int    `env:"CHAT_MAX_MESSAGE_BYTES" envDefault:"65536"`
}

// duration accepts Go syntax (90s, 24h) or plain seconds (86400).
type duration = shared.Duration

// keys are the accepted API keys: GATEWAY_API_KEYS (comma-separated) and
// CONTEXT_API_KEY, without blanks and duplicates.
func (c config) keys() []string {
	var out []string
	for _, k := range append(strings.Split(c.APIKeys, ","), c.ContextAPIKey) {
		if k = strings.TrimSpace(k); k != "" && !contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (c config) natsSecurity() natsconn.Security { return c.Security() }

// loadConfig reads the configuration from environ and validates it. Errors
// name the variable and its bad value, never a secret.
func loadConfig(environ map[string]string) (config, error) {
	cfg, err := env.ParseAsWithOptions[config](env.Options{Environment: environ})
	if err != nil {
		return cfg, explain(err, environ)
	}
	cfg.otel = environ
	return cfg, errors.Join(cfg.validate(environ), tracing.Check(environ))
}

// explain names the variables in the env package's errors, with their
// values (secrets hidden).
func explain(err error, environ map[string]string) error {
	return shared.Explain[config](err, func(name string) string { return shown(name, environ) })
}

// secretVars hold keys, passwords and tokens: errors and logs never show
// their values.
var secretVars = map[string]bool{"NATS_PASSWORD": true, "NATS_TOKEN": true, "GATEWAY_API_KEYS": true, "CONTEXT_API_KEY": true}

func shown(name string, environ map[string]string) string {
	v, set := environ[name]
	switch {
	case secretVars[name] && set:
		return name + "=(hidden)"
	case name == "NATS_URL":
		return fmt.Sprintf("%s=%q", name, natsconn.RedactURL(v))
	}
	return fmt.Sprintf("%s=%q", name, v)
}

func (c config) validate(environ map[string]string) error {
	var errs []error
	bad := func(name, why string) {
		errs = append(errs, fmt.Errorf("%s: %s", shown(name, environ), why))
	}
	if c.Addr == "" {
		bad("GATEWAY_ADDR", "must be a listen address like :1733")
	}
	if c.Auth && len(c.keys()) == 0 {
		errs = append(errs, errors.New("no API key: set GATEWAY_API_KEYS (comma-separated) or CONTEXT_API_KEY, "+
			"or GATEWAY_AUTH=false to accept requests without a key"))
	}
	if c.MaxBodyBytes < 1 {
		bad("GATEWAY_MAX_BODY_BYTES", "must be at least 1")
	}
	for name, d := range map[string]duration{"GATEWAY_PUBLISH_TIMEOUT": c.PublishTimeout,
		"GATEWAY_FLUSH_TIMEOUT": c.FlushTimeout, "SHUTDOWN_TIMEOUT": c.ShutdownTimeout} {
		if d <= 0 {
			bad(name, "must be a positive duration")
		}
	}
	if c.NATSURL == "" || c.NATSURL == "embedded" {
		bad("NATS_URL", "must be a NATS URL (the gateway does not embed a server)")
	}
	errs = append(errs, c.natsSecurity().Validate(c.NATSURL, environ, func(name string) string { return shown(name, environ) })...)
	if strings.ContainsAny(c.SubjectPrefix, " *>\t") || c.SubjectPrefix == "" ||
		strings.HasPrefix(c.SubjectPrefix, ".") || strings.HasSuffix(c.SubjectPrefix, ".") {
		bad("CHAT_SUBJECT_PREFIX", "must be NATS subject tokens without wildcards, like opencontext.chat")
	}
	if c.MaxMessageBytes < 1 {
		bad("CHAT_MAX_MESSAGE_BYTES", "must be at least 1")
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", "must be debug, info, warn or error")
	}
	return errors.Join(errs...)
}
