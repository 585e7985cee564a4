package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/internal/natstest"
)

// Three worker processes against one Redis and one NATS: 20,000 messages
// over 500 conversations, hostile ids among them, each in exactly one
// well-formed batch; then every worker stops cleanly on SIGTERM.
func TestThreeWorkerProcesses(t *testing.T) {
	for _, tc := range []struct {
		name string
		nats func(testing.TB) *natstest.Server
	}{{"nats-binary", natstest.Binary}, {"nats-embedded", natstest.Embedded}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSystem(t, tc.nats)
			var ws []*workerProc
			for range 3 {
				ws = append(ws, s.startWorker())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			res := s.load(ctx, "--conversations", "500", "--messages", "20000", "--hostile", "--verify-timeout", "3m")
			requireExactlyOnce(t, res.Report, 20000)
			t.Logf("nats-server %s: %d batches %v, out of order %d, latency %s",
				res.NATSServer, res.Report.Batches, res.Report.BatchesByReason, res.Report.OutOfOrder, res.Report.Latency)
			for _, w := range ws {
				if err := w.stop(15 * time.Second); err != nil {
					t.Errorf("worker on SIGTERM: %v (want exit 0)", err)
				}
			}
		})
	}
}

// /readyz follows Redis: 503 while it is down, 200 again once it is back.
func TestReadyzFollowsRedis(t *testing.T) {
	s := newSystem(t, natstest.Embedded)
	w := s.startWorker()
	s.redis.Stop()
	waitStatus(t, w, http.StatusServiceUnavailable)
	s.redis.Restart()
	waitStatus(t, w, http.StatusOK)
}

func waitStatus(t *testing.T, w *workerProc, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, err := w.readyz()
		if code == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d, %v; want %d", code, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
