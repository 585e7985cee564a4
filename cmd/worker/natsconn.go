package main

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// startEmbedded starts an in-process nats-server with JetStream listening on
// addr and storing under dir.
func startEmbedded(addr, dir string, log *slog.Logger) (*server.Server, string, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", fmt.Errorf("NATS_EMBEDDED_ADDR=%q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, "", fmt.Errorf("NATS_EMBEDDED_ADDR=%q: bad port", addr)
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "chatbuf-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
	})
	if err != nil {
		return nil, "", fmt.Errorf("embedded nats-server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, "", fmt.Errorf("embedded nats-server: not ready on %s after 10s (is the port taken? set NATS_EMBEDDED_ADDR)", addr)
	}
	url := "nats://" + net.JoinHostPort(host, strconv.Itoa(port))
	log.Info("nats: embedded server started", "url", url, "store", dir, "version", server.VERSION)
	return srv, url, nil
}

// connectNATS connects, retrying in the background when the server is not
// there yet, and reconnecting forever.
func connectNATS(url string, log *slog.Logger, onError func(error)) (*nats.Conn, error) {
	nc, err := nats.Connect(url,
		nats.Name("chatbuf-worker"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats: disconnected", "error", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats: reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats: connected", "url", nc.ConnectedUrlRedacted(), "server_version", nc.ConnectedServerVersion())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			onError(err)
			log.Warn("nats: async error", "error", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("NATS_URL=%q: %w", url, err)
	}
	return nc, nil
}
