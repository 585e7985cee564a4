// Package redistest starts private redis-server processes for tests.
//
// Every server listens on a free loopback port and keeps its data in a
// temporary directory, so a test can stop it, restart it on the same port
// with the same data, and never touches a Redis that something else owns.
package redistest

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/internal/procs"
)

// Server is a redis-server process owned by one test.
type Server struct {
	Addr string // host:port
	Port int
	Dir  string

	tb       testing.TB
	mu       sync.Mutex
	cmd      *exec.Cmd
	args     []string
	username string
	password string
	tls      *tls.Config // nil: plain TCP
}

// Options are what StartWith adds to Start's redis-server.
type Options struct {
	// Password is the default user's password (--requirepass). The
	// readiness check, Client and Shutdown authenticate with it.
	Password string
	// Username and UserPassword, when set, create that ACL user (the
	// default user keeps Password, or no password), and the readiness
	// check and Client log in as it.
	Username, UserPassword string
	// UserRules are the ACL rules of Username, space-separated; empty:
	// every key, channel and command ("~* &* +@all").
	UserRules string
	// TLS, when set, makes the server speak TLS only: its port is the
	// --tls-port and the plain port is off.
	TLS *TLS
	// Args are more redis-server arguments, such as "--appendfsync", "always".
	Args []string
}

// TLS is a TLS-only server's certificate, its CA, and whether clients must
// show a certificate of that CA.
type TLS struct {
	Certs             Certs
	RequireClientCert bool
}

// Start launches redis-server with append-only persistence on a free port
// and stops it when the test ends. It fails the test with a clear message
// when redis-server is missing or does not come up.
func Start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	return StartWith(tb, Options{Args: extra})
}

// StartWith is Start with a password, an ACL user or TLS.
func StartWith(tb testing.TB, o Options) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redistest: redis-server not found in PATH (install it: apt-get install -y redis-server): %v", err)
	}
	dir := tb.TempDir()
	var lastErr error
	for range 5 {
		port, err := FreePort()
		if err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		s := &Server{
			Addr:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			Port:     port,
			Dir:      dir,
			tb:       tb,
			password: o.Password,
		}
		s.args = []string{
			"--bind", "127.0.0.1",
			"--port", strconv.Itoa(port),
			"--dir", dir,
			"--save", "",
			"--appendonly", "yes",
			"--appendfsync", "everysec",
			"--protected-mode", "no",
			"--logfile", filepath.Join(dir, "redis.log"),
		}
		if o.Password != "" {
			s.args = append(s.args, "--requirepass", o.Password)
		}
		if o.Username != "" {
			rules := strings.Fields(o.UserRules)
			if len(rules) == 0 {
				rules = []string{"~*", "&*", "+@all"}
			}
			s.args = append(append(s.args, "--user", o.Username, "on", ">"+o.UserPassword), rules...)
			s.username, s.password = o.Username, o.UserPassword
		}
		if o.TLS != nil {
			c := o.TLS.Certs
			s.args = append(s.args, "--port", "0", "--tls-port", strconv.Itoa(port),
				"--tls-cert-file", c.ServerCert, "--tls-key-file", c.ServerKey, "--tls-ca-cert-file", c.CA,
				"--tls-auth-clients", map[bool]string{true: "yes", false: "no"}[o.TLS.RequireClientCert])
			s.tls = c.ClientTLS(tb)
		}
		s.args = append(s.args, o.Args...)
		s.args = append([]string{bin}, s.args...)
		if lastErr = s.start(); lastErr == nil {
			tb.Cleanup(s.Stop)
			return s
		}
	}
	tb.Fatalf("redistest: cannot start redis-server: %v", lastErr)
	return nil
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.SysProcAttr = procs.DieWithParent() // no server outlives a killed test
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			return fmt.Errorf("redis-server exited at start (%v); log: %s", err, s.logTail())
		default:
		}
		if s.ping() == nil {
			s.cmd = cmd
			go func() { <-done }()
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return fmt.Errorf("redis-server on %s not answering after 10s; log: %s", s.Addr, s.logTail())
}

func (s *Server) logTail() string {
	return strings.Join(procs.LogTail(filepath.Join(s.Dir, "redis.log"), 5), " | ")
}

// ping sends PING (after AUTH when the server has a password, over TLS
// when it speaks TLS) and wants PONG.
func (s *Server) ping() error {
	d := &net.Dialer{Timeout: 200 * time.Millisecond}
	var (
		c   net.Conn
		err error
	)
	if s.tls != nil {
		c, err = tls.DialWithDialer(d, "tcp", s.Addr, s.tls)
	} else {
		c, err = d.Dial("tcp", s.Addr)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(c)
	if s.password != "" {
		auth := []string{"AUTH", s.password}
		if s.username != "" {
			auth = []string{"AUTH", s.username, s.password}
		}
		if _, err := c.Write(command(auth...)); err != nil {
			return err
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.HasPrefix(line, "+OK") {
			return fmt.Errorf("unexpected AUTH reply %q", strings.TrimSpace(line))
		}
	}
	if _, err := c.Write(command("PING")); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected PING reply %q", line)
	}
	return nil
}

// command encodes a Redis command in RESP.
func command(args ...string) []byte {
	b := fmt.Appendf(nil, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b
}

// Options returns go-redis options for the server: its address, credentials
// and TLS.
func (s *Server) Options() *redis.Options {
	return &redis.Options{Addr: s.Addr, Username: s.username, Password: s.password, TLSConfig: s.tls, MaxRetries: -1}
}

// Stop kills the server (SIGKILL: what is not in the append-only file is lost,
// as in a crash). Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	for s.ping() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	s.cmd = nil
}

// Shutdown stops the server cleanly, flushing its append-only file.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	c := redis.NewClient(s.Options())
	_ = c.ShutdownSave(context.Background()).Err()
	_ = c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for s.ping() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	_ = s.cmd.Process.Kill()
	s.cmd = nil
}

// Restart starts a stopped server again on the same port and data directory.
func (s *Server) Restart() {
	s.tb.Helper()
	var err error
	for range 50 {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // the port may linger briefly
	}
	s.tb.Fatalf("redistest: restart on %s: %v", s.Addr, err)
}

// Client returns a go-redis client for the server, closed at test end.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(s.Options())
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// FreePort asks the kernel for a free loopback TCP port.
func FreePort() (int, error) { return procs.FreePort() }
