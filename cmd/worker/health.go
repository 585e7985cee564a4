package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
)

// health tracks whether the worker can consume and append: NATS connected
// and streams set up, and Redis answering (or Redis disabled by design).
type health struct {
	nc        *nats.Conn
	rdb       redis.UniversalClient // nil when Redis is disabled
	streamsUp atomic.Bool
	redisUp   atomic.Bool
	log       *slog.Logger
	gauge     func(float64)
	mode      func() string // where appends go, for the /readyz text
	limits    func() error  // the server's max_payload does not fit the batches
	refusal   func() error  // why the store refuses appends as a whole; nil when it does not
}

// probe pings Redis every second until ctx is done, logging changes.
func (h *health) probe(ctx context.Context) {
	if h.rdb == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := h.rdb.Ping(pctx).Err()
		cancel()
		up := err == nil
		if was := h.redisUp.Swap(up); was != up {
			if up {
				h.log.Info("redis: reachable")
			} else {
				h.log.Warn("redis: unreachable", "error", err)
			}
		}
		h.gauge(boolFloat(h.ready() == nil))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *health) ready() error {
	var errs []error
	if !h.nc.IsConnected() {
		errs = append(errs, errors.New("nats: not connected"))
	}
	if !h.streamsUp.Load() {
		errs = append(errs, errors.New("nats: streams not set up yet"))
	}
	if h.rdb != nil && !h.redisUp.Load() {
		msg := "redis: unreachable"
		if h.mode != nil && h.mode() == "local" {
			msg += " (fallback: buffering in local memory, acks held)"
		}
		errs = append(errs, errors.New(msg))
	}
	if h.limits != nil {
		if err := h.limits(); err != nil && h.nc.IsConnected() {
			errs = append(errs, err)
		}
	}
	if h.refusal != nil {
		if err := h.refusal(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// serveHTTP serves /metrics, /healthz and /readyz on addr until ctx is done.
func serveHTTP(ctx context.Context, addr string, m *metrics, h *health, log *slog.Logger) (func(context.Context) error, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := h.ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("METRICS_ADDR=%q: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http: serve failed", "error", err)
		}
	}()
	log.Info("http: serving /metrics, /healthz, /readyz", "addr", ln.Addr().String())
	return srv.Shutdown, nil
}
