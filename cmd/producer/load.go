package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/stream"
	"github.com/opencontext/chatbuf/verify"
)

// loadOptions are load's flags.
type loadOptions struct {
	conversations, messages int
	rate                    float64
	size, window            int
	hostile, noMessageID    bool
	hostileAvoid            string // hostile ids holding none of these bytes
	verify, allowUnordered  bool
	verifyTimeout           time.Duration
	bufferSize              int
	json                    bool
	http                    string // gateway base URL: publish through it
	apiKey                  string // its API key
	batch, conns            int    // messages per HTTP request, concurrent connections
}

func (o loadOptions) validate() error {
	switch {
	case o.conversations < 1:
		return errors.New("--conversations must be at least 1")
	case o.hostile && o.conversations < hostileCount:
		return fmt.Errorf("--hostile needs --conversations >= %d", hostileCount)
	case o.messages < 1:
		return errors.New("--messages must be at least 1")
	case o.rate < 0:
		return errors.New("--rate must not be negative")
	case o.size < 1:
		return errors.New("--size must be at least 1")
	case o.window < 1:
		return errors.New("--window must be at least 1")
	case o.bufferSize < 1:
		return errors.New("--buffer-size must be at least 1")
	case o.verifyTimeout <= 0:
		return errors.New("--verify-timeout must be positive")
	case o.batch < 1 || o.batch > 100:
		return errors.New("--batch must be 1-100")
	case o.conns < 1:
		return errors.New("--conns must be at least 1")
	case o.http != "" && !strings.HasPrefix(o.http, "http://") && !strings.HasPrefix(o.http, "https://"):
		return fmt.Errorf("--http %q: want the gateway's base URL, like http://127.0.0.1:1733", o.http)
	}
	return nil
}

// summary is the load's outcome: stats, the server, and the report of
// --verify. It is the object --json prints.
type summary struct {
	stats
	NATSServer string         `json:"nats_server"`
	Report     *verify.Report `json:"report,omitempty"`
}

// loadRunner publishes a load: to JetStream directly, or through the
// gateway.
type loadRunner interface {
	run(ctx context.Context) stats
	progress() progress
}

// load runs the load command. nc may be nil when publishing through the
// gateway (--http) without --verify.
func load(ctx context.Context, nc *nats.Conn, cfg stream.Config, o loadOptions, stdout, stderr io.Writer) error {
	text := stdout
	if o.json {
		text = stderr
	}
	rec := verify.NewRecorder(verify.NewRunID())
	convs := conversations(rec.Run(), o.conversations, o.hostile, o.hostileAvoid)
	var (
		js     jetstream.JetStream
		from   verify.Position
		err    error
		server = "(not connected)"
	)
	if nc != nil {
		server = nc.ConnectedServerVersion()
		js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(o.window), jetstream.WithPublishAsyncTimeout(ackTimeout))
		if err != nil {
			return err
		}
		if _, err := js.StreamNameBySubject(ctx, cfg.In(convs[0])); err != nil {
			return fmt.Errorf("no JetStream stream takes %s (%v): start a worker once, it creates the streams", cfg.In(convs[0]), err)
		}
		if o.verify {
			if from, err = verify.Tail(ctx, js, cfg); err != nil {
				return err
			}
		}
	}

	var p loadRunner
	if o.http != "" {
		p = newHTTPPublisher(o.http, o.apiKey, o, rec, convs)
	} else {
		p = newPublisher(js, cfg, o, rec, convs)
	}
	stop := startProgress(stderr, o.messages, p.progress)
	s := summary{stats: p.run(ctx), NATSServer: server}
	stop()
	fmt.Fprint(text, s.String())

	var checkErr error
	if o.verify && !s.Interrupted {
		fmt.Fprintf(stderr, "verifying: waiting up to %v for the workers to drain CHAT_IN, flushing %d conversations, reading batches\n",
			o.verifyTimeout, len(rec.Conversations()))
		s.Report, checkErr = verify.Check(ctx, js, cfg, rec, verify.Options{
			BufferSize: o.bufferSize, Timeout: o.verifyTimeout, From: from, Flush: true, AllowUnordered: o.allowUnordered,
		})
		fmt.Fprint(text, s.Report.String())
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s); err != nil {
			return err
		}
	}
	switch {
	case checkErr != nil:
		return fmt.Errorf("verify: %w", checkErr)
	case s.Failures > 0 || s.Interrupted || (s.Report != nil && !s.Report.OK()):
		return errFailed
	}
	return nil
}

// String is the human summary of the publishing.
func (s summary) String() string {
	out := fmt.Sprintf("run %s: published %d of %d messages to %d conversations in %.1fs: %.0f msg/s\n",
		s.Run, s.Published, s.Requested, s.Conversations, s.ElapsedS, s.PerSecond)
	out += fmt.Sprintf("PubAck latency %s; failures %d, retries %d, duplicate PubAcks %d\n",
		s.PubAck, s.Failures, s.Retries, s.DuplicateAcks)
	for _, e := range s.Errors {
		out += "  publish error: " + e + "\n"
	}
	if s.Interrupted {
		out += "interrupted before every message was sent\n"
	}
	return out + "nats-server " + s.NATSServer + "\n"
}
