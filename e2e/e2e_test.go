package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

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

// Any worker answers the completion service; a plain NATS client can use it.
func TestCompletionServiceFromWorkers(t *testing.T) {
	s := newSystem(t, natstest.Embedded)
	s.startWorker()
	s.startWorker()
	nc, err := nats.Connect(s.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := func(subject, body string) *nats.Msg {
		t.Helper()
		m, err := nc.Request(subject, []byte(body), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		return m
	}
	info := req("$SRV.INFO.completion", "")
	if !strings.Contains(string(info.Data), `"name":"completion"`) {
		t.Errorf("$SRV.INFO.completion = %s", info.Data)
	}
	put := req("completion.put", `{"user":"alice","key":"def main","context_hash":"h1","confidence":0.8,"suggestions":[{"text":"def main():","score":0.9,"metadata":{"n":12345678901234567890}}]}`)
	if string(put.Data) != `{"ok":true}` {
		t.Errorf("put = %s (%v)", put.Data, put.Header)
	}
	// Every worker gives the same answer: ask several times.
	for range 4 {
		get := req("completion.get", `{"user":"alice","key":"def main","context_hash":"h1"}`)
		if !strings.Contains(string(get.Data), `"hit":true`) || !strings.Contains(string(get.Data), `12345678901234567890`) {
			t.Errorf("get = %s", get.Data)
		}
	}
	if other := req("completion.get", `{"user":"bob","key":"def main","context_hash":"h1"}`); !strings.Contains(string(other.Data), `"hit":false`) {
		t.Errorf("bob sees alice's entry: %s", other.Data)
	}
	bad := req("completion.get", `{not json`)
	if code := bad.Header.Get("Nats-Service-Error-Code"); code != "400" {
		t.Errorf("bad request: error code %q, want 400", code)
	}
}
