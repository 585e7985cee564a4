// Command gateway serves OpenContext's HTTP push API in front of chatbuf:
// each chat message becomes a JetStream publish to CHAT_IN, answered 200
// once JetStream acknowledged it. Configuration comes from the environment;
// see the README.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	shared "github.com/opencontext/chatbuf/internal/config"
	"github.com/opencontext/chatbuf/internal/natsconn"
	"github.com/opencontext/chatbuf/internal/tracing"
)

func main() {
	shared.Main("gateway", loadConfig, func(c config) string { return c.LogLevel }, run)
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	traces, err := tracing.Start(ctx, cfg.otel, "chatbuf-gateway")
	if err != nil {
		return err
	}
	defer traces.Close(log)
	traces.Announce(log)

	natsOpts, err := cfg.natsSecurity().Options()
	if err != nil {
		return err
	}
	if cfg.NATSInboxPrefix != "" {
		natsOpts = append(natsOpts, nats.CustomInboxPrefix(cfg.NATSInboxPrefix))
	}
	nc, err := natsconn.Connect(cfg.NATSURL, "chatbuf-gateway", natsOpts, log, nil, nil)
	if err != nil {
		return err
	}
	defer nc.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g, err := newGateway(nc, Options{
		Prefix:          cfg.SubjectPrefix,
		MaxMessageBytes: cfg.MaxMessageBytes,
		MaxBodyBytes:    cfg.MaxBodyBytes,
		PublishTimeout:  cfg.PublishTimeout.D(),
		FlushTimeout:    cfg.FlushTimeout.D(),
		Keys:            cfg.keys(),
		NoAuth:          !cfg.Auth,
		Logger:          log,
		Registry:        reg,
		Tracer:          traces.Tracer("github.com/opencontext/chatbuf"),
	})
	if err != nil {
		return err
	}
	if !cfg.Auth {
		log.Warn("http: authentication is off (GATEWAY_AUTH=false): any client may push")
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("GATEWAY_ADDR=%q: %w", cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           g.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      cfg.PublishTimeout.D() + cfg.FlushTimeout.D() + 30*time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("http: serving OpenContext's push API", "addr", ln.Addr().String(), "nats", natsconn.RedactURL(cfg.NATSURL),
		"prefix", cfg.SubjectPrefix, "auth", cfg.Auth, "keys", len(cfg.keys()))

	select {
	case err := <-served:
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	log.Info("http: shutting down: finishing requests in flight", "timeout", cfg.ShutdownTimeout.D().String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("http: shutdown: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	log.Info("gateway: stopped")
	return nil
}
