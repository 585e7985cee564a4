// Package natstest starts NATS servers with JetStream for tests: the current
// nats-server embedded in the test process, or the nats-server binary on the
// PATH (Debian's 2.9 on the development machines) as a separate process.
package natstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"

	"github.com/opencontext/chatbuf/internal/redistest"
)

// Server is a NATS server with JetStream owned by one test.
type Server struct {
	URL     string
	Port    int
	Dir     string
	Version string

	tb       testing.TB
	mu       sync.Mutex
	embedded *server.Server
	cmd      *exec.Cmd
	bin      string
}

// Embedded starts the nats-server compiled into the test binary, with
// JetStream and file storage in a temporary directory.
func Embedded(tb testing.TB) *Server {
	tb.Helper()
	port, err := redistest.FreePort()
	if err != nil {
		tb.Fatalf("natstest: %v", err)
	}
	s := &Server{Port: port, Dir: tb.TempDir(), tb: tb}
	s.URL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	s.startEmbedded()
	tb.Cleanup(s.Stop)
	return s
}

func (s *Server) startEmbedded() {
	opts := natsserver.DefaultTestOptions
	opts.Host = "127.0.0.1"
	opts.Port = s.Port
	opts.JetStream = true
	opts.StoreDir = s.Dir
	opts.NoLog = true
	opts.NoSigs = true
	srv, err := server.NewServer(&opts)
	if err != nil {
		s.tb.Fatalf("natstest: new embedded server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		s.tb.Fatalf("natstest: embedded nats-server on port %d not ready after 10s", s.Port)
	}
	s.embedded = srv
	s.Version = server.VERSION
}

// Binary starts the nats-server found on the PATH as its own process.
func Binary(tb testing.TB) *Server {
	tb.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		tb.Fatalf("natstest: nats-server not found in PATH (install it: apt-get install -y nats-server): %v", err)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		tb.Fatalf("natstest: %s --version: %v", bin, err)
	}
	port, err := redistest.FreePort()
	if err != nil {
		tb.Fatalf("natstest: %v", err)
	}
	s := &Server{Port: port, Dir: tb.TempDir(), tb: tb, bin: bin}
	s.URL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	s.Version = strings.TrimPrefix(strings.TrimSpace(string(out)), "nats-server: ")
	s.startBinary()
	tb.Cleanup(s.Stop)
	return s
}

func (s *Server) startBinary() {
	cmd := exec.Command(s.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-js", "-sd", s.Dir,
		"-l", filepath.Join(s.Dir, "nats.log"))
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("natstest: start %s: %v", s.bin, err)
	}
	go func() { _ = cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if nc, err := nats.Connect(s.URL, nats.Timeout(200*time.Millisecond)); err == nil {
			nc.Close()
			s.cmd = cmd
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	log, _ := os.ReadFile(filepath.Join(s.Dir, "nats.log"))
	s.tb.Fatalf("natstest: nats-server on port %d not ready after 10s; log:\n%s", s.Port, log)
}

// Stop stops the server (the binary with SIGKILL). Stopping a stopped server
// does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.embedded != nil:
		s.embedded.Shutdown()
		s.embedded.WaitForShutdown()
		s.embedded = nil
	case s.cmd != nil:
		_ = s.cmd.Process.Kill()
		for {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), 100*time.Millisecond)
			if err != nil {
				break
			}
			c.Close()
			time.Sleep(10 * time.Millisecond)
		}
		s.cmd = nil
	}
}

// Restart starts a stopped server again on the same port and store.
func (s *Server) Restart() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bin != "" {
		s.startBinary()
	} else {
		s.startEmbedded()
	}
}

// Conn connects a client, closed at test end.
func (s *Server) Conn(tb testing.TB, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.URL, opts...)
	if err != nil {
		tb.Fatalf("natstest: connect %s: %v", s.URL, err)
	}
	tb.Cleanup(nc.Close)
	return nc
}
