package e2e

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/internal/natstest"
)

// Redis goes away for a while under load. The workers buffer locally with
// their acks held; one of them is killed (SIGKILL) during the outage, so
// its held messages must come back by redelivery. When Redis returns the
// survivors move their buffers back. Every message is in exactly one batch.
func TestRedisOutageWithFallback(t *testing.T) {
	outage, messages, rate := 6*time.Second, "6000", "500"
	if os.Getenv("CHATBUF_CHAOS") == "long" {
		outage, messages, rate = 30*time.Second, "30000", "500"
	}
	s := newSystem(t, natstest.Embedded)
	ws := []*workerProc{s.startWorker(), s.startWorker(), s.startWorker()}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	results := make(chan loadResult, 1)
	go func() {
		results <- s.load(ctx, "--conversations", "200", "--messages", messages, "--rate", rate, "--verify-timeout", "3m", "--allow-unordered")
	}()

	time.Sleep(2 * time.Second)
	s.redis.Shutdown()
	waitStatus(t, ws[0], http.StatusServiceUnavailable)
	time.Sleep(outage / 2)
	ws[2].kill() // dies holding unacked local messages: they must be redelivered
	time.Sleep(outage / 2)
	s.redis.Restart()
	for _, w := range ws[:2] {
		waitStatus(t, w, http.StatusOK)
	}
	s.startWorker()

	res := <-results
	requireExactlyOnce(t, res.Report, res.Published)
	t.Logf("fault | published | delivered | lost | duplicated | misplaced")
	t.Logf("redis outage %v with fallback, one worker killed | %d | %d | %d | %d | %d",
		outage, res.Report.Published, res.Report.Delivered, res.Report.Lost, res.Report.Duplicated, res.Report.Misplaced)
	for _, w := range ws[:2] {
		if !strings.Contains(w.logText(), "buffering in local memory") {
			t.Errorf("worker %d never reported local mode in its log", w.pid())
		}
	}
}
