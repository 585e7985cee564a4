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
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"

	"github.com/opencontext/chatbuf/internal/procs"
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
	opts     Options
}

// Options configure a nats-server binary started with BinaryWith.
type Options struct {
	// Path is the nats-server binary; empty: the one on the PATH.
	Path string
	// Config is the text of a configuration file, passed with -c. The
	// command line's listen address (127.0.0.1 and a free port) overrides
	// the file's. JetStream is on, stored in Dir, unless the file sets a
	// store_dir of its own (then the file decides).
	Config string
	// Env is added to the server's environment, for variables the
	// configuration refers to ($NAME).
	Env []string
	// Client are the options of the readiness check and of Conn: the
	// credentials and TLS settings the configuration asks for.
	Client []nats.Option
}

// Embedded starts the nats-server compiled into the test binary, with
// JetStream and file storage in a temporary directory.
func Embedded(tb testing.TB) *Server {
	tb.Helper()
	port, err := procs.FreePort()
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
	return BinaryWith(tb, Options{})
}

// BinaryWith is Binary with a configuration file, environment and client
// options.
func BinaryWith(tb testing.TB, o Options) *Server {
	tb.Helper()
	bin := o.Path
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("nats-server"); err != nil {
			tb.Fatalf("natstest: nats-server not found in PATH (install it: apt-get install -y nats-server): %v", err)
		}
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		tb.Fatalf("natstest: %s --version: %v", bin, err)
	}
	port, err := procs.FreePort()
	if err != nil {
		tb.Fatalf("natstest: %v", err)
	}
	s := &Server{Port: port, Dir: tb.TempDir(), tb: tb, bin: bin, opts: o}
	s.URL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	s.Version = strings.TrimPrefix(strings.TrimSpace(string(out)), "nats-server: ")
	if o.Config != "" {
		if err := os.WriteFile(filepath.Join(s.Dir, "nats-server.conf"), []byte(o.Config), 0o600); err != nil {
			tb.Fatalf("natstest: %v", err)
		}
	}
	s.startBinary()
	tb.Cleanup(s.Stop)
	return s
}

func (s *Server) startBinary() {
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-l", filepath.Join(s.Dir, "nats.log")}
	if !strings.Contains(s.opts.Config, "store_dir") { // the server refuses two
		args = append(args, "-js", "-sd", s.Dir)
	}
	if s.opts.Config != "" {
		args = append(args, "-c", filepath.Join(s.Dir, "nats-server.conf"))
	}
	cmd := exec.Command(s.bin, args...)
	cmd.SysProcAttr = procs.DieWithParent() // no server outlives a killed test
	if len(s.opts.Env) > 0 {
		cmd.Env = append(os.Environ(), s.opts.Env...)
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("natstest: start %s: %v", s.bin, err)
	}
	go func() { _ = cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if nc, err := nats.Connect(s.URL, append(slices.Clone(s.opts.Client), nats.Timeout(200*time.Millisecond))...); err == nil {
			nc.Close()
			s.cmd = cmd
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	log, _ := os.ReadFile(filepath.Join(s.Dir, "nats.log"))
	s.tb.Fatalf("natstest: nats-server on port %d not ready after 10s; stderr:\n%s\nlog:\n%s", s.Port, stderr, log)
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Stop stops the server (the binary with SIGKILL). Stopping a stopped server
// does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	stopServer(s.embedded, s.cmd, nil, s.Port)
	s.embedded, s.cmd = nil, nil
}

// stopServer stops a server, embedded or the binary cmd (with SIGKILL; done,
// when not nil, is closed once cmd has exited), and waits until nothing
// listens on its ports.
func stopServer(embedded *server.Server, cmd *exec.Cmd, done <-chan struct{}, ports ...int) {
	switch {
	case embedded != nil:
		embedded.Shutdown()
		embedded.WaitForShutdown()
	case cmd != nil:
		_ = cmd.Process.Kill()
		if done != nil {
			<-done
		}
		for _, p := range ports {
			for {
				c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 100*time.Millisecond)
				if err != nil {
					break
				}
				c.Close()
				time.Sleep(10 * time.Millisecond)
			}
		}
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

// Conn connects a client, closed at test end. A server started with
// BinaryWith's Client options connects with those first, then opts.
func (s *Server) Conn(tb testing.TB, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.URL, append(slices.Clone(s.opts.Client), opts...)...)
	if err != nil {
		tb.Fatalf("natstest: connect %s: %v", s.URL, err)
	}
	tb.Cleanup(nc.Close)
	return nc
}
