package worker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/stream"
)

// Messages published with a traceparent (under any case of the header
// name) are appended in spans that are children of it; the flush of their
// batch is a span linked to exactly those contexts, and the batch carries
// that span's context in its traceparent header.
func TestTracesFollowMessagesIntoTheirBatch(t *testing.T) {
	e := newEnv(t, natstest.Embedded)
	spans := tracetest.NewInMemoryExporter()
	tp := trace.NewTracerProvider(trace.WithSyncer(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	e.startWorkerWith(t, workerOpts{maxAge: time.Hour, batchSize: 4, tracer: tp.Tracer("test")})

	c := chat.Conversation{User: "tracy", Device: "phone", Agent: "bot"}
	var published []oteltrace.SpanContext
	for i, name := range []string{"traceparent", "Traceparent", "TRACEPARENT", ""} {
		msg := &nats.Msg{Subject: e.cfg.In(c), Data: []byte(fmt.Sprintf(`{"role":"user","content":"m%d"}`, i)), Header: nats.Header{}}
		if name != "" {
			sc := oteltrace.NewSpanContext(oteltrace.SpanContextConfig{
				TraceID: oteltrace.TraceID{0x4b, 0xf9, byte(i + 1)}, SpanID: oteltrace.SpanID{0x00, 0xf0, byte(i + 1)},
				TraceFlags: oteltrace.FlagsSampled, Remote: true})
			msg.Header[name] = []string{stream.TraceParent(sc)}
			published = append(published, sc)
		}
		if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}

	batches := e.readAll(t, e.cfg.FlushedStream, 1)
	if len(batches) != 1 {
		t.Fatalf("%d batches on %s, want 1", len(batches), e.cfg.FlushedStream)
	}
	var flushSpan tracetest.SpanStub
	waitFor(t, "the flush span", func() bool {
		for _, s := range spans.GetSpans() {
			if s.Name == "chatbuf flush" {
				flushSpan = s
				return true
			}
		}
		return false
	})

	var appends []tracetest.SpanStub
	for _, s := range spans.GetSpans() {
		if s.Name == "chatbuf append" {
			appends = append(appends, s)
		}
	}
	if len(appends) != 4 {
		t.Fatalf("%d append spans, want 4", len(appends))
	}
	for _, sc := range published {
		found := slices.ContainsFunc(appends, func(s tracetest.SpanStub) bool {
			return s.Parent.Equal(sc) && s.SpanContext.TraceID() == sc.TraceID()
		})
		if !found {
			t.Errorf("no append span is the child of published span %s", stream.TraceParent(sc))
		}
	}

	var linked []oteltrace.SpanContext
	for _, l := range flushSpan.Links {
		linked = append(linked, l.SpanContext)
	}
	key := func(sc oteltrace.SpanContext) string { return stream.TraceParent(sc) }
	want, got := sortedKeys(published, key), sortedKeys(linked, key)
	if !slices.Equal(got, want) {
		t.Errorf("flush span links to %v, want exactly the published contexts %v", got, want)
	}

	header := batches[0].Headers().Get(stream.HeaderTraceParent)
	if want := stream.TraceParent(flushSpan.SpanContext); header == "" || header != want {
		t.Errorf("batch traceparent header %q, want the flush span's %q", header, want)
	}
}

func sortedKeys(scs []oteltrace.SpanContext, key func(oteltrace.SpanContext) string) []string {
	out := make([]string, len(scs))
	for i, sc := range scs {
		out[i] = key(sc)
	}
	slices.Sort(out)
	return out
}
