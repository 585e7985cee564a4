package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/stream"
)

// env is an embedded NATS with chatbuf's streams.
type env struct {
	url string
	js  jetstream.JetStream
	cfg stream.Config
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Embedded(t)
	js, err := jetstream.New(srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.Config{}.WithDefaults()
	if _, err := stream.Ensure(t.Context(), js, cfg); err != nil {
		t.Fatal(err)
	}
	return &env{url: srv.URL, js: js, cfg: cfg}
}

// result is what one run of the command line did.
type result struct {
	code           int
	stdout, stderr string
}

// runProducer runs the command line with NATS_URL set to url.
func runProducer(ctx context.Context, url, stdin string, args ...string) result {
	getenv := func(k string) string {
		if k == "NATS_URL" {
			return url
		}
		return ""
	}
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, getenv, strings.NewReader(stdin), &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string // in stderr, before the usage text
	}{
		{"no command", nil, 2, "producer: usage: no command"},
		{"unknown command", []string{"publish"}, 2, `unknown command "publish"`},
		{"unknown flag", []string{"send", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"two texts", []string{"send", "--user", "u", "--device", "d", "--agent", "a", "hi", "--role", "user"}, 2, "send takes one TEXT argument"},
		{"text without conversation", []string{"send", "--user", "u", "hi"}, 2, "--device is required"},
		{"id that is no token", []string{"send", "--user", "u\n1", "--device", "d", "--agent", "a", "hi"}, 2, `user id "u\n1" cannot be a subject token`},
		{"no conversations", []string{"load", "--conversations", "0"}, 2, "--conversations must be at least 1"},
		{"hostile needs room", []string{"load", "--hostile", "--conversations", "15"}, 2, "--hostile needs --conversations >= 16"},
		{"bad duration", []string{"load", "--verify-timeout", "soon"}, 2, "invalid value"},
		{"arguments to load", []string{"load", "extra"}, 2, "load takes no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runProducer(t.Context(), "nats://127.0.0.1:1", "", tt.args...)
			if got.code != tt.wantCode || !strings.Contains(got.stderr, tt.wantErr) || !strings.Contains(got.stderr, "Usage:") {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d, %q and the usage", got.code, got.stderr, tt.wantCode, tt.wantErr)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"send", "-h"}} {
		got := runProducer(t.Context(), "", "", args...)
		if got.code != 0 || !strings.HasPrefix(got.stdout, "Usage:") {
			t.Errorf("%q: exit %d, stdout %q: want 0 and the usage", args, got.code, got.stdout)
		}
	}
}

func TestUnreachableNATS(t *testing.T) {
	const url = "nats://127.0.0.1:1"
	for _, args := range [][]string{
		{"send", "--user", "u", "--device", "d", "--agent", "a", "hi"},
		{"send", "--user", "u", "--device", "d", "--agent", "a"},
		{"load"},
	} {
		got := runProducer(t.Context(), url, "", args...)
		if got.code != 1 || strings.Count(got.stderr, "\n") != 1 || !strings.Contains(got.stderr, "cannot connect to NATS at "+url) {
			t.Errorf("%q: exit %d, stderr %q: want 1 and one line naming %s", args, got.code, got.stderr, url)
		}
	}
}

func TestNoStream(t *testing.T) {
	srv := natstest.Embedded(t) // JetStream, but no chatbuf streams
	got := runProducer(t.Context(), srv.URL, "", "load", "--messages", "1")
	if got.code != 1 || !strings.Contains(got.stderr, "start a worker once, it creates the streams") {
		t.Errorf("exit %d, stderr %q: want 1 and a hint to start a worker", got.code, got.stderr)
	}
}
