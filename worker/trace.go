package worker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/stream"
)

// startSpan starts the span of msg's append, a child of the trace context
// it was published with, and returns that context as a traceparent for its
// record ("" when it has none).
func (w *Worker) startSpan(ctx context.Context, msg jetstream.Msg, c chat.Conversation, seq uint64, at time.Time) (trace.Span, string) {
	parent := stream.TraceContext(msg.Headers())
	if parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	_, span := w.cfg.Tracer.Start(ctx, "chatbuf append", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(at))
	if span.IsRecording() {
		span.SetAttributes(attribute.String("user", c.User), attribute.String("device", c.Device), attribute.String("agent", c.Agent),
			attribute.Int64("seq", int64(seq)), attribute.String("subject", msg.Subject()))
	}
	return span, stream.TraceParent(parent)
}

// endSpans ends the spans of an append with its results (nil: the
// messages were given back).
func endSpans(spans []trace.Span, res []buffer.Appended) {
	for i, span := range spans {
		if span.IsRecording() {
			switch {
			case res == nil:
				span.SetStatus(codes.Error, "not appended: given back for redelivery")
			case res[i].Err != nil:
				span.RecordError(res[i].Err)
				span.SetStatus(codes.Error, res[i].Err.Error())
			case res[i].Dup:
				span.SetAttributes(attribute.Bool("duplicate", true))
			}
		}
		span.End()
	}
}
