package main

import (
	"errors"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// A flusher's error is counted against the server it came from: a failed
// lookup of CHAT_IN or a refused publish is a NATS error, not a Redis one.
func TestFlushErrorsByComponent(t *testing.T) {
	for stage, want := range map[string]string{
		"pending": "nats", "publish": "nats", "reject": "nats",
		"claim": "redis", "commit": "redis", "lock": "redis", "refused": "redis",
	} {
		m := newMetrics()
		m.flushHooks().Error(stage, errors.New("x"))
		var got dto.Metric
		if err := m.errors.WithLabelValues(want).Write(&got); err != nil {
			t.Fatal(err)
		}
		if got := got.GetCounter().GetValue(); got != 1 {
			t.Errorf("error at stage %q: chatbuf_errors_total{component=%q} = %v, want 1", stage, want, got)
		}
	}
}
