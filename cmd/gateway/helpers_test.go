package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/internal/natsconn"
	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/stream"
)

const testKey = "secret-key-1"

// testEnv is a gateway on a real NATS server with chatbuf's streams, served by
// httptest.
type testEnv struct {
	t    *testing.T
	nats *natstest.Server
	nc   *nats.Conn // the test's own connection
	js   jetstream.JetStream
	g    *gateway
	http *httptest.Server
	seen uint64 // CHAT_IN messages read by newMessages
}

func newEnv(t *testing.T, mod func(*Options)) *testEnv {
	t.Helper()
	ns := natstest.Embedded(t)
	e := &testEnv{t: t, nats: ns, nc: ns.Conn(t)}
	js, err := jetstream.New(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	e.js = js
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := stream.Ensure(ctx, js, stream.Config{}.WithDefaults()); err != nil {
		t.Fatalf("create streams: %v", err)
	}
	gnc, err := natsconn.Connect(ns.URL, "chatbuf-gateway-test", nil, slog.New(slog.DiscardHandler), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gnc.Close)
	waitFor(t, "the gateway's NATS connection", gnc.IsConnected)
	o := Options{Keys: []string{testKey, "second-key"}, PublishTimeout: 20 * time.Second, FlushTimeout: 20 * time.Second,
		Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&o)
	}
	e.g, err = newGateway(gnc, o)
	if err != nil {
		t.Fatal(err)
	}
	e.http = httptest.NewServer(e.g.Handler())
	t.Cleanup(e.http.Close)
	return e
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type answer struct {
	status int
	body   []byte
	header http.Header
}

// do sends a request with the test key in X-API-Key unless headers say
// otherwise ("X-API-Key": "" sends none).
func (e *testEnv) do(method, path, body string, headers ...string) answer {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.http.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", testKey)
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return answer{status: resp.StatusCode, body: b, header: resp.Header}
}

func (e *testEnv) post(path, body string, headers ...string) answer {
	e.t.Helper()
	return e.do(http.MethodPost, path, body, headers...)
}

// expect checks an answer's status and that its JSON equals want (a JSON
// text) exactly.
func expect(t *testing.T, a answer, status int, want string) {
	t.Helper()
	if a.status != status {
		t.Errorf("status %d, want %d; body %s", a.status, status, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var got, exp any
	if err := json.Unmarshal(a.body, &got); err != nil {
		t.Fatalf("answer is not JSON: %v: %s", err, a.body)
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatalf("bad want %s: %v", want, err)
	}
	g, _ := json.Marshal(got)
	x, _ := json.Marshal(exp)
	if !bytes.Equal(g, x) {
		t.Errorf("answer\n  %s\nwant\n  %s", g, x)
	}
}

// stored is a message as CHAT_IN holds it.
type stored struct {
	Subject string
	Header  nats.Header
	Body    map[string]any
}

// newMessages returns the n messages CHAT_IN got since the last call, in
// stream order, waiting for them.
func (e *testEnv) newMessages(n int) []stored {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, stream.DefaultInStream)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []stored
	for range n {
		e.seen++
		m, err := s.GetMsg(ctx, e.seen)
		if err != nil {
			e.t.Fatalf("CHAT_IN message %d: %v", e.seen, err)
		}
		var body map[string]any
		if err := json.Unmarshal(m.Data, &body); err != nil {
			e.t.Fatalf("CHAT_IN message %d is not JSON: %v: %s", e.seen, err, m.Data)
		}
		out = append(out, stored{Subject: m.Subject, Header: m.Header, Body: body})
	}
	return out
}

// count is the number of messages in CHAT_IN.
func (e *testEnv) count() uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, stream.DefaultInStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}
