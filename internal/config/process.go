package config

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Environ returns the process environment as a map, for env.ParseAsWithOptions.
func Environ() map[string]string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// NewLogger logs JSON when stderr is not a terminal, text when it is, at
// level (debug, info, warn, error; validated with the configuration).
func NewLogger(level string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level)) // an unknown level is info
	opts := &slog.HandlerOptions{Level: lvl}
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

// Main runs a long-running command: load reads its configuration from the
// environment (an error exits 2 after printing it), and run serves with a
// logger at the configuration's level (level returns it) until SIGINT or
// SIGTERM ends ctx (an error exits 1 after logging it).
func Main[C any](name string, load func(env map[string]string) (C, error), level func(C) string,
	run func(ctx context.Context, cfg C, log *slog.Logger) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := load(Environ())
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: bad configuration:\n%v\n", name, err)
		os.Exit(2)
	}
	log := NewLogger(level(cfg))
	if err := run(ctx, cfg, log); err != nil {
		log.Error(name+": exiting", "error", err)
		os.Exit(1)
	}
}
