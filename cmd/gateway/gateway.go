package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/stream"
)

// Options configure a gateway. Zero values mean the defaults.
type Options struct {
	Prefix          string        // subject prefix; stream.DefaultPrefix
	MaxMessageBytes int           // one message's body; chat.DefaultMaxMessageBytes
	MaxBodyBytes    int64         // one request's body; 8 MiB
	PublishTimeout  time.Duration // wait for the PubAcks of one request; 10s
	FlushTimeout    time.Duration // wait for a worker's flush reply; 10s
	Keys            []string      // accepted API keys
	NoAuth          bool          // accept requests without a key
	Logger          *slog.Logger
	Registry        *prometheus.Registry // the gateway's metrics; a new one when nil
	// Tracer, when set, traces each request (a server span, the child of
	// the request's traceparent) and gives the messages it publishes that
	// span's context. Nil: a request's traceparent and tracestate are
	// passed on to its messages as they are.
	Tracer trace.Tracer
}

const (
	defaultMaxBodyBytes = 8 << 20
	defaultTimeout      = 10 * time.Second
)

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = stream.DefaultPrefix
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = chat.DefaultMaxMessageBytes
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = defaultMaxBodyBytes
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = defaultTimeout
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = defaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	return o
}

// gateway serves OpenContext's push routes in front of CHAT_IN.
type gateway struct {
	o    Options
	nc   *nats.Conn
	js   jetstream.JetStream
	log  *slog.Logger
	keys [][32]byte // SHA-256 of the accepted keys, compared in constant time

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	messages *prometheus.CounterVec
}

func newGateway(nc *nats.Conn, o Options) (*gateway, error) {
	o = o.withDefaults()
	if !o.NoAuth && len(o.Keys) == 0 {
		return nil, errors.New("gateway: no API key configured and authentication not turned off")
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	g := &gateway{o: o, nc: nc, js: js, log: o.Logger}
	for _, k := range o.Keys {
		g.keys = append(g.keys, sha256.Sum256([]byte(k)))
	}
	g.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "chatbuf", Subsystem: "gateway",
		Name: "requests_total", Help: "HTTP requests by route and status code."}, []string{"route", "code"})
	g.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "chatbuf", Subsystem: "gateway",
		Name: "request_duration_seconds", Help: "HTTP request latency by route, until the answer is written.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"route"})
	g.messages = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "chatbuf", Subsystem: "gateway",
		Name: "messages_total", Help: "Chat messages by outcome: accepted (PubAck received), invalid (answered 422), failed (not acknowledged)."},
		[]string{"outcome"})
	for _, c := range []prometheus.Collector{g.requests, g.latency, g.messages} {
		if err := o.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("gateway metrics: %w", err)
		}
	}
	for _, outcome := range []string{"accepted", "invalid", "failed"} {
		g.messages.WithLabelValues(outcome)
	}
	return g, nil
}

// Handler routes every request.
func (g *gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	paths := map[string]bool{}
	handle := func(pattern string, h http.Handler) {
		mux.Handle(pattern, g.observe(pattern, h))
		_, path, _ := strings.Cut(pattern, " ")
		if !paths[path] {
			// Another method on a known path: FastAPI's 405.
			paths[path] = true
			mux.Handle(path, g.observe("other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"detail": "Method Not Allowed"})
			})))
		}
	}
	open := func(pattern string, h http.HandlerFunc) { handle(pattern, h) }
	authed := func(pattern string, h http.HandlerFunc) { handle(pattern, g.auth(h)) }

	open("GET /health", g.health)
	open("GET /api/health", g.apiHealth)
	open("GET /api/auth/status", g.authStatus)
	handle("GET /metrics", promhttp.HandlerFor(g.o.Registry, promhttp.HandlerOpts{}))

	authed("POST /api/push/chat/message", g.pushMessage)
	authed("POST /api/push/chat/messages", g.pushMessages)
	authed("POST /api/push/chat/flush", g.flush)
	authed("POST /api/push/batch", g.pushBatch)
	authed("POST /api/push/chat", g.pushChat)

	authed("GET /api/completions/cache/stats", g.cacheStats)
	authed("POST /api/completions/cache/clear", g.cacheClear)
	authed("POST /api/completions/precompute/{document_id}", g.precompute)

	// Everything else: FastAPI's 404 and 405.
	mux.Handle("/", g.observe("other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not Found"})
	})))
	return mux
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// noSpan stands for a request's span when tracing is off.
var noSpan = trace.SpanFromContext(context.Background())

// observe counts requests by route and status and records their latency.
func (g *gateway) observe(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		span := noSpan
		if _, ok := r.Header["Traceparent"]; ok || g.o.Tracer != nil {
			ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
			if g.o.Tracer != nil {
				ctx, span = g.o.Tracer.Start(ctx, route, trace.WithSpanKind(trace.SpanKindServer),
					trace.WithAttributes(attribute.String("http.route", route)))
			}
			r = r.WithContext(ctx)
		}
		h.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		if span.IsRecording() {
			span.SetAttributes(attribute.Int("http.response.status_code", sw.code))
			if sw.code >= 500 {
				span.SetStatus(codes.Error, http.StatusText(sw.code))
			}
		}
		span.End()
		g.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
		g.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
	})
}

// auth checks the API key: header X-API-Key, then Authorization: Bearer,
// then query parameter api_key.
func (g *gateway) auth(h http.HandlerFunc) http.HandlerFunc {
	if g.o.NoAuth {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-API-Key")
		if key == "" {
			if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
				key = strings.TrimSpace(b)
			}
		}
		if key == "" {
			key = r.URL.Query().Get("api_key")
		}
		if key == "" {
			g.log.Warn("http: no API key", "path", r.URL.Path, "remote", r.RemoteAddr)
			writeJSON(w, http.StatusUnauthorized, map[string]string{
				"detail": "API key required. Provide it via X-API-Key header or api_key query parameter."})
			return
		}
		sum := sha256.Sum256([]byte(key))
		ok := 0
		for i := range g.keys {
			ok |= subtle.ConstantTimeCompare(sum[:], g.keys[i][:])
		}
		if ok != 1 {
			g.log.Warn("http: invalid API key", "path", r.URL.Path, "remote", r.RemoteAddr)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"detail": "Invalid API key"})
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // our own values: cannot happen
		status, b = http.StatusInternalServerError, []byte(`{"detail":"cannot encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// envelope is OpenContext's answer: code 0 and status 200 on success, both
// the HTTP status otherwise; data only when there is some.
type envelope struct {
	Code    int    `json:"code"`
	Status  int    `json:"status"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

func okAnswer(w http.ResponseWriter, message string, data any) {
	writeJSON(w, http.StatusOK, envelope{Code: 0, Status: http.StatusOK, Message: message, Data: data})
}

func fail(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, envelope{Code: status, Status: status, Message: message})
}

// healthData is OpenContext's health answer, its members in its order.
type healthData struct {
	Status     string          `json:"status"`
	Service    string          `json:"service"`
	Components map[string]bool `json:"components,omitempty"`
}

func (g *gateway) health(w http.ResponseWriter, _ *http.Request) {
	okAnswer(w, "success", healthData{Status: "healthy", Service: "opencontext"})
}

// apiHealth adds the components; 503 while NATS is unreachable.
func (g *gateway) apiHealth(w http.ResponseWriter, _ *http.Request) {
	if !g.nc.IsConnected() {
		fail(w, http.StatusServiceUnavailable, "Service unhealthy")
		return
	}
	okAnswer(w, "success", healthData{Status: "healthy", Service: "opencontext", Components: map[string]bool{"nats": true}})
}

func (g *gateway) authStatus(w http.ResponseWriter, _ *http.Request) {
	okAnswer(w, "success", map[string]bool{"auth_enabled": !g.o.NoAuth})
}
