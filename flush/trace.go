package flush

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// noSpan stands for a flush's span when tracing is off.
var noSpan = trace.SpanFromContext(context.Background())

// startSpan starts the span of out's flush, linked to the trace contexts its
// messages were published with (kept in their records), and gives out its
// context for the sink to pass on.
func (f *Flusher) startSpan(ctx context.Context, out *Envelope) trace.Span {
	if f.cfg.Tracer == nil {
		return noSpan
	}
	var links []trace.Link
	for _, r := range out.Records {
		if len(r.TraceParent) == 0 {
			continue
		}
		if sc := parseTraceParent(r.TraceParent); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	_, span := f.cfg.Tracer.Start(ctx, "chatbuf flush", trace.WithSpanKind(trace.SpanKindProducer), trace.WithLinks(links...))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("user", out.Conv.User), attribute.String("device", out.Conv.Device), attribute.String("agent", out.Conv.Agent),
			attribute.String("batch_id", out.ID), attribute.String("reason", string(out.Reason)),
			attribute.Int64("fencing_token", out.Token), attribute.Int("messages", len(out.Records)))
	}
	out.Trace = span.SpanContext()
	return span
}

// endSpan ends a flush's span, with err as its status.
func endSpan(span trace.Span, out *Envelope, err error, rejected bool) {
	if !span.IsRecording() {
		span.End()
		return
	}
	if out.Token != 0 {
		span.SetAttributes(attribute.Int64("fencing_token", out.Token), attribute.String("batch_id", out.ID))
	}
	switch {
	case err != nil:
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	case rejected:
		span.SetAttributes(attribute.Bool("rejected", true))
		span.SetStatus(codes.Error, "batch rejected: dead-lettered whole")
	}
	span.End()
}

func parseTraceParent(tp []byte) trace.SpanContext {
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": string(tp)})
	return trace.SpanContextFromContext(ctx)
}

// delivered reports the time from each message's publish (the time CHAT_IN
// stored it, kept in its record) to acked, its batch's PubAck.
func (f *Flusher) delivered(out *Envelope, acked time.Time) {
	if f.cfg.Hooks.Delivered == nil {
		return
	}
	ms := acked.UnixMilli()
	for _, r := range out.Records {
		if r.StoredMS != 0 {
			f.cfg.Hooks.Delivered(out.Reason, time.Duration(ms-r.StoredMS)*time.Millisecond)
		}
	}
}
