package main

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/opencontext/chatbuf/stream"
)

const (
	clientParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	clientState  = "vendor=1"
)

// Without a tracer, a request's traceparent and tracestate go with each of
// its messages as they are, under lowercase names; a request without them
// adds none.
func TestRequestTraceContextReachesMessages(t *testing.T) {
	e := newEnv(t, nil)
	a := e.post("/api/push/chat/messages", `{"user_id":"alice","device_id":"phone","agent_id":"bot","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}`,
		"traceparent", clientParent, "tracestate", clientState)
	ok(t, a)
	for _, m := range e.newMessages(2) {
		if got := m.Header[stream.HeaderTraceParent]; len(got) != 1 || got[0] != clientParent {
			t.Errorf("message traceparent %q, want %q", got, clientParent)
		}
		if got := m.Header[stream.HeaderTraceState]; len(got) != 1 || got[0] != clientState {
			t.Errorf("message tracestate %q, want %q", got, clientState)
		}
	}
	ok(t, e.post(msgPath, `{"role":"user","content":"hi","user_id":"alice","device_id":"phone","agent_id":"bot"}`))
	if m := e.newMessages(1)[0]; len(m.Header[stream.HeaderTraceParent]) != 0 || len(m.Header[stream.HeaderTraceState]) != 0 {
		t.Errorf("message of a request without trace context has headers %v", m.Header)
	}
}

// With a tracer, a request is a server span, the child of its traceparent,
// and its messages carry that span's context.
func TestTracedRequestGivesItsSpanToMessages(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := trace.NewTracerProvider(trace.WithSyncer(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	e := newEnv(t, func(o *Options) { o.Tracer = tp.Tracer("test") })
	ok(t, e.post(msgPath, `{"role":"user","content":"hi","user_id":"alice","device_id":"phone","agent_id":"bot"}`,
		"Traceparent", clientParent))
	m := e.newMessages(1)[0]
	got := spans.GetSpans()
	if len(got) != 1 {
		t.Fatalf("%d spans, want the request's", len(got))
	}
	if p := stream.TraceParent(got[0].Parent); p != clientParent {
		t.Errorf("request span's parent %q, want the client's %q", p, clientParent)
	}
	if want := stream.TraceParent(got[0].SpanContext); m.Header.Get(stream.HeaderTraceParent) != want {
		t.Errorf("message traceparent %q, want the request span's %q", m.Header.Get(stream.HeaderTraceParent), want)
	}
}

func ok(t *testing.T, a answer) {
	t.Helper()
	if a.status != 200 {
		t.Fatalf("status %d, want 200; body %s", a.status, a.body)
	}
}
