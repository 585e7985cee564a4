package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/internal/natstest"
	"github.com/opencontext/chatbuf/internal/redistest"
	"github.com/opencontext/chatbuf/verify"
)

// bin holds the binaries built once by TestMain: chatbuf's, and the
// nats-server of go.mod's version (the one embedded elsewhere), for faults
// that need a server process of the current release.
var bin struct{ worker, producer, gateway, natsServer string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chatbuf-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	bin.worker, bin.producer, bin.gateway = filepath.Join(dir, "worker"), filepath.Join(dir, "producer"), filepath.Join(dir, "gateway")
	bin.natsServer = filepath.Join(dir, "nats-server")
	for out, pkg := range map[string]string{bin.worker: "../cmd/worker", bin.producer: "../cmd/producer", bin.gateway: "../cmd/gateway",
		bin.natsServer: "github.com/nats-io/nats-server/v2"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: build %s: %v\n", pkg, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	printSummary(os.Stdout)
	os.RemoveAll(dir)
	os.Exit(code)
}

// currentBinary starts the nats-server of go.mod's version as its own
// process, which a test can kill -9 and start again.
func currentBinary(tb testing.TB) *natstest.Server {
	return natstest.BinaryWith(tb, natstest.Options{Path: bin.natsServer})
}

// system is one Redis and one NATS with worker processes around them.
type system struct {
	t     *testing.T
	redis *redistest.Server
	nats  *natstest.Server
	env   []string

	mu      sync.Mutex
	workers []*workerProc
}

func newSystem(t *testing.T, nats func(testing.TB) *natstest.Server, env ...string) *system {
	return newSystemRedisArgs(t, nats, nil, env...)
}

// newSystemRedisArgs is newSystem with extra redis-server arguments, such as
// "--appendfsync", "always".
func newSystemRedisArgs(t *testing.T, nats func(testing.TB) *natstest.Server, redisArgs []string, env ...string) *system {
	s := &system{t: t, redis: redistest.Start(t, redisArgs...), nats: nats(t)}
	s.env = append([]string{
		"REDIS_HOST=127.0.0.1",
		"REDIS_PORT=" + strconv.Itoa(s.redis.Port),
		"NATS_URL=" + s.nats.URL,
		"LOG_LEVEL=warn",
		"CHAT_FLUSH_MAX_AGE=2s",
		"CHAT_LOCK_TTL=2s",
		"CHAT_ACK_WAIT=5s",
	}, env...)
	t.Logf("nats-server %s, redis on %s", s.nats.Version, s.redis.Addr)
	return s
}

// workerProc is one worker process.
type workerProc struct {
	cmd     *exec.Cmd
	metrics string
	log     *bytes.Buffer
	done    chan error
}

// startWorker starts a worker process and waits until it is ready.
func (s *system) startWorker(extra ...string) *workerProc {
	s.t.Helper()
	port, err := redistest.FreePort()
	if err != nil {
		s.t.Fatal(err)
	}
	w := &workerProc{metrics: fmt.Sprintf("127.0.0.1:%d", port), log: &bytes.Buffer{}, done: make(chan error, 1)}
	w.cmd = exec.Command(bin.worker)
	w.cmd.Env = append(append(os.Environ(), s.env...), append([]string{"METRICS_ADDR=" + w.metrics}, extra...)...)
	w.cmd.Stderr = &syncWriter{w: w.log}
	if err := w.cmd.Start(); err != nil {
		s.t.Fatalf("start worker: %v", err)
	}
	go func() { w.done <- w.cmd.Wait() }()
	s.mu.Lock()
	s.workers = append(s.workers, w)
	s.mu.Unlock()
	s.t.Cleanup(func() {
		_ = w.cmd.Process.Kill()
		<-w.done
		if s.t.Failed() {
			s.t.Logf("worker %d log:\n%s", w.cmd.Process.Pid, w.log)
		}
	})
	if err := w.waitReady(20 * time.Second); err != nil {
		s.t.Fatalf("worker not ready: %v\nlog:\n%s", err, w.log)
	}
	return w
}

func (w *workerProc) readyz() (int, error) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + w.metrics + "/readyz")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (w *workerProc) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		code, err := w.readyz()
		if code == http.StatusOK {
			return nil
		}
		select {
		case err := <-w.done:
			w.done <- err
			return fmt.Errorf("exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/readyz: %d, %v after %v", code, err, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and returns the exit error (nil for status 0).
func (w *workerProc) stop(timeout time.Duration) error {
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-w.done:
		w.done <- err
		return err
	case <-time.After(timeout):
		return fmt.Errorf("still running %v after SIGTERM", timeout)
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// loadResult is what `producer load --json` prints.
type loadResult struct {
	Requested  int            `json:"requested"`
	Published  int            `json:"published"`
	Failures   int            `json:"failures"` // publishes given up after retries
	Retries    int            `json:"retries"`
	DupAcks    int            `json:"duplicate_acks"`
	Errors     []string       `json:"errors"`
	NATSServer string         `json:"nats_server"`
	Report     *verify.Report `json:"report"`
}

// load runs the producer binary's load with --verify --json.
func (s *system) load(ctx context.Context, args ...string) loadResult {
	s.t.Helper()
	cmd := exec.CommandContext(ctx, bin.producer, append([]string{"--nats", s.nats.URL, "load", "--verify", "--json"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var res loadResult
	if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr != nil || res.Report == nil {
		s.t.Fatalf("producer load: %v; output not understood (%v):\n%s\nstderr:\n%s", err, jerr, stdout.String(), stderr.String())
	}
	s.t.Logf("producer: %s", bytes.TrimSpace(stderr.Bytes()))
	return res
}

// requireExactlyOnce fails the test unless the report shows every published
// message in exactly one well-formed batch of its conversation.
func requireExactlyOnce(t *testing.T, r *verify.Report, published int) {
	t.Helper()
	if r.Published != published || r.Delivered != published || r.Lost != 0 || r.Duplicated != 0 ||
		r.Misplaced != 0 || r.Malformed != 0 || r.Unexpected != 0 || r.DeadLettered != 0 || !r.OK() {
		t.Errorf("report: published %d (want %d), delivered %d, lost %d, duplicated %d, misplaced %d, malformed %d, unexpected %d, dead %d, out of order %d across batches and %d within (allowed: %v); problems: %v; lost sample: %v",
			r.Published, published, r.Delivered, r.Lost, r.Duplicated, r.Misplaced, r.Malformed, r.Unexpected, r.DeadLettered,
			r.OutOfOrder, r.UnorderedInBatch, r.AllowUnordered, r.Problems, r.LostSample)
	}
}
