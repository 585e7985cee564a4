package main

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/opencontext/chatbuf/internal/natsconn"
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

// natsSecurityVars are the variables of NATS credentials and TLS.
var natsSecurityVars = natsconn.SecurityVars

// natsSecurity returns the connection options for the configured
// credentials and TLS files (see natsconn.Security.Options).
func (c config) natsSecurity() ([]nats.Option, error) { return c.natsSecurityConfig().Options() }

func (c config) natsSecurityConfig() natsconn.Security { return c.Security() }

// urlHasCredentials reports whether a NATS_URL (a comma-separated list)
// carries a user, password or token.
func urlHasCredentials(s string) bool { return natsconn.URLHasCredentials(s) }

// redactURL hides the credentials of a NATS URL or list of them.
func redactURL(s string) string { return natsconn.RedactURL(s) }

// connectNATS connects, retrying in the background when the server is not
// there yet, and reconnecting forever (see natsconn.Connect). onConnect is
// called after each (re)connection.
func connectNATS(url string, opts []nats.Option, log *slog.Logger, onError func(error), onConnect func(*nats.Conn)) (*nats.Conn, error) {
	return natsconn.Connect(url, "chatbuf-worker", opts, log, onError, onConnect)
}
