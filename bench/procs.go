package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// procs owns every long-running process the harness starts, so that all of
// them are stopped on the way out, on success, error or Ctrl-C alike.
type procs struct {
	mu   sync.Mutex
	live map[*proc]bool
}

func newProcs() *procs { return &procs{live: map[*proc]bool{}} }

// proc is one child process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // where its stdout and stderr go
	done chan struct{}
	err  error // set when done is closed
	ps   *procs
}

// start launches bin with args and env (nil: the harness's environment),
// writing its output to logPath. The child gets its own process group, so
// that a Ctrl-C on the terminal reaches only the harness, which then stops it
// in order, and is killed by the kernel should the harness die first.
func (ps *procs) start(name, logPath string, env []string, bin string, args ...string) (*proc, error) {
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{}), ps: ps}
	ps.mu.Lock()
	ps.live[p] = true
	ps.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		out.Close()
		ps.mu.Lock()
		delete(ps.live, p)
		ps.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILL, and waits for the exit.
func (p *proc) stop(grace time.Duration) {
	if !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// logTail returns the last lines of the process's output.
func (p *proc) logTail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// exitError describes how a process that should still run ended.
func (p *proc) exitError() error {
	how := "with status 0"
	if p.err != nil {
		how = "(" + p.err.Error() + ")"
	}
	return fmt.Errorf("%s (pid %d) exited %s; last output:\n%s", p.name, p.pid(), how, p.logTail(15))
}

// stopAll stops every process still running, all at once.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	list := make([]*proc, 0, len(ps.live))
	for p := range ps.live {
		list = append(list, p)
	}
	ps.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range list {
		wg.Go(func() { p.stop(5 * time.Second) })
	}
	wg.Wait()
}

// freePort asks the kernel for a free loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// command runs a short-lived command and returns its combined output.
func command(ctx context.Context, env []string, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// On Ctrl-C, interrupt rather than kill, so that "go build" removes its
	// work directory from /tmp; kill only if it does not stop soon.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// version runs "bin --version" and returns its first line.
func version(ctx context.Context, bin string) (string, error) {
	out, err := command(ctx, nil, bin, "--version")
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line, nil
}

// --- NATS ---

// natsBinary is one nats-server build under comparison.
type natsBinary struct {
	Label   string `json:"label"` // "current" or "debian"
	Path    string `json:"path"`
	Version string `json:"version"` // nats-server --version
}

// natsServer is one nats-server process with JetStream in its own store
// directory, which stop removes.
type natsServer struct {
	bin *natsBinary
	p   *proc
	url string
	dir string
}

func startNATS(ctx context.Context, ps *procs, bin *natsBinary, dir string) (*natsServer, error) {
	var lastErr error
	for range 5 {
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		p, err := ps.start("nats-server "+bin.Version, filepath.Join(dir, "nats.log"), nil, bin.Path,
			"-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-sd", filepath.Join(dir, "store"))
		if err != nil {
			return nil, err
		}
		n := &natsServer{bin: bin, p: p, url: fmt.Sprintf("nats://127.0.0.1:%d", port), dir: dir}
		lastErr = waitFor(ctx, p, 15*time.Second, func() error {
			nc, err := nats.Connect(n.url, nats.Timeout(time.Second))
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			_, err = js.AccountInfo(ctx)
			return err
		})
		if lastErr == nil {
			return n, nil
		}
		p.stop(time.Second)
	}
	return nil, fmt.Errorf("nats-server %s did not come up: %w", bin.Version, lastErr)
}

// connect returns a client connection and its JetStream context.
func (n *natsServer) connect(opts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(n.url, nats.Name("chatbuf-bench"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", n.url, err)
	}
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func (n *natsServer) stop() {
	if n == nil {
		return
	}
	n.p.stop(10 * time.Second)
	_ = os.RemoveAll(filepath.Join(n.dir, "store"))
}

// waitFor polls check until it succeeds, p exits, or timeout passes.
func waitFor(ctx context.Context, p *proc, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if !p.alive() {
			return p.exitError()
		}
		if err = check(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %v: %w", p.name, timeout, err)
}

// --- /proc ---

// clockTicks is USER_HZ, 100 on every Linux the harness targets (the same
// assumption Prometheus's process collector makes).
const clockTicks = 100

// cpuTime returns the user+system CPU time of pid so far.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("malformed /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// selfCPU returns the harness's own CPU time so far.
func selfCPU() time.Duration {
	d, _ := cpuTime(os.Getpid())
	return d
}

// peakRSS returns VmHWM of pid in bytes.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// loadAvg returns the 1-minute load average.
func loadAvg() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
