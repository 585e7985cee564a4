package procs

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestStopAllStopsEveryProcess(t *testing.T) {
	g := NewGroup()
	dir := t.TempDir()
	var ps []*Proc
	for i := range 2 {
		p, err := g.Start("sleeper", filepath.Join(dir, strconv.Itoa(i)+".log"), nil, "sleep", "600")
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		if !p.Alive() {
			t.Fatalf("pid %d exited at once: %v", p.Pid(), p.ExitError())
		}
	}
	g.StopAll()
	for _, p := range ps {
		select {
		case <-p.Done():
		default:
			t.Fatalf("pid %d still running after StopAll", p.Pid())
		}
	}
}

func TestWaitForReportsAnExitWithItsOutput(t *testing.T) {
	g := NewGroup()
	t.Cleanup(g.StopAll)
	p, err := g.Start("failing", filepath.Join(t.TempDir(), "out.log"), nil, "sh", "-c", "echo first; echo boom; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	err = WaitFor(context.Background(), p, time.Minute, func() error { return os.ErrNotExist })
	if err == nil || !strings.Contains(err.Error(), "failing") || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("WaitFor: got %v, want the exit of failing with status 3 and its output", err)
	}
}

func TestLogTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("a\nb\nc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(LogTail(path, 2), ","); got != "b,c" {
		t.Fatalf("LogTail(2) = %q, want b,c", got)
	}
}

func TestLinuxReaders(t *testing.T) {
	pid := os.Getpid()
	if _, err := CPUTime(pid); err != nil {
		t.Errorf("CPUTime: %v", err)
	}
	for name, f := range map[string]func(int) (int64, error){"PeakRSS": PeakRSS, "RSS": RSS} {
		if n, err := f(pid); err != nil || n <= 0 {
			t.Errorf("%s = %d, %v; want a positive size", name, n, err)
		}
	}
	if _, err := RSS(-1); err == nil {
		t.Error("RSS of no process: no error")
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("FreePort %d: cannot listen on it: %v", port, err)
	}
	l.Close()
}
