package stream

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// W3C trace context on NATS messages: read from chat messages whatever the
// case of the header names (NATS headers are case-sensitive, and producers
// write traceparent or Traceparent), written in lowercase on batches.
const (
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)

// TraceContext returns the remote span context of a message's traceparent
// and tracestate headers; it is invalid when there is none or it is
// malformed.
func TraceContext(h map[string][]string) trace.SpanContext {
	var c headerCarrier
	for k, v := range h {
		if len(v) == 0 {
			continue
		}
		switch {
		case strings.EqualFold(k, HeaderTraceParent):
			c.parent = v[0]
		case strings.EqualFold(k, HeaderTraceState):
			c.state = v[0]
		}
	}
	if c.parent == "" {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), &c))
}

// SetTraceContext writes sc to h as lowercase traceparent and tracestate
// headers; nothing when sc is invalid.
func SetTraceContext(h map[string][]string, sc trace.SpanContext) {
	if !sc.IsValid() {
		return
	}
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), mapCarrier(h))
}

// TraceParent formats sc as a traceparent header value ("" when invalid).
func TraceParent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
}

// headerCarrier holds the two headers TraceContext found.
type headerCarrier struct{ parent, state string }

func (c *headerCarrier) Get(key string) string {
	switch key {
	case HeaderTraceParent:
		return c.parent
	case HeaderTraceState:
		return c.state
	}
	return ""
}

func (c *headerCarrier) Set(string, string) {}

func (c *headerCarrier) Keys() []string { return []string{HeaderTraceParent, HeaderTraceState} }

// mapCarrier writes header names as given, without canonicalising them.
type mapCarrier map[string][]string

func (m mapCarrier) Get(key string) string {
	if v := m[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (m mapCarrier) Set(key, value string) { m[key] = []string{value} }

func (m mapCarrier) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}
