// Package procs starts, watches and stops the helper processes of the
// benchmark harness and the test packages (redis-server, nats-server, the
// worker), and reads what Linux says of them: CPU time and memory from
// /proc, free loopback ports.
package procs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Group owns long-running processes, so that all of them are stopped on
// the way out, on success, error or Ctrl-C alike.
type Group struct {
	mu   sync.Mutex
	live map[*Proc]bool
}

// NewGroup returns an empty group.
func NewGroup() *Group { return &Group{live: map[*Proc]bool{}} }

// Proc is one child process of a Group.
type Proc struct {
	name string
	cmd  *exec.Cmd
	log  string // where its stdout and stderr go
	done chan struct{}
	err  error // set when done is closed
}

// Start launches bin with args and env (nil: this process's environment),
// writing its output to logPath. The child gets its own process group, so
// that a Ctrl-C on the terminal reaches only the caller, which then stops
// it in order, and is killed by the kernel should the caller die first.
func (g *Group) Start(name, logPath string, env []string, bin string, args ...string) (*Proc, error) {
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
	p := &Proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	g.mu.Lock()
	g.live[p] = true
	g.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		out.Close()
		g.mu.Lock()
		delete(g.live, p)
		g.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Name is the name Start was given.
func (p *Proc) Name() string { return p.name }

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Alive reports whether the process still runs.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM, waits up to grace, then SIGKILL, and waits for the exit.
func (p *Proc) Stop(grace time.Duration) {
	if !p.Alive() {
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

// LogTail returns the last n lines of the process's output.
func (p *Proc) LogTail(n int) string { return strings.Join(LogTail(p.log, n), "\n") }

// ExitError describes how a process that should still run ended.
func (p *Proc) ExitError() error {
	how := "with status 0"
	if p.err != nil {
		how = "(" + p.err.Error() + ")"
	}
	return fmt.Errorf("%s (pid %d) exited %s; last output:\n%s", p.name, p.Pid(), how, p.LogTail(15))
}

// StopAll stops every process still running, all at once.
func (g *Group) StopAll() {
	g.mu.Lock()
	list := make([]*Proc, 0, len(g.live))
	for p := range g.live {
		list = append(list, p)
	}
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range list {
		wg.Go(func() { p.Stop(5 * time.Second) })
	}
	wg.Wait()
}

// WaitFor polls check until it succeeds, p exits, or timeout passes.
func WaitFor(ctx context.Context, p *Proc, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if !p.Alive() {
			return p.ExitError()
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

// Command runs a short-lived command and returns its combined output; env
// is added to this process's environment.
func Command(ctx context.Context, env []string, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = DieWithParent()
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

// Version runs "bin --version" and returns its first line.
func Version(ctx context.Context, bin string) (string, error) {
	out, err := Command(ctx, nil, bin, "--version")
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line, nil
}

// DieWithParent is the SysProcAttr of a child that must not outlive the
// process that started it (a server of a killed test, say): the kernel
// kills it when its parent dies.
func DieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
