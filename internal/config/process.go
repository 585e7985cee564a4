package config

import (
	"log/slog"
	"os"
	"strings"
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
