package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/procs"
	"github.com/opencontext/chatbuf/verify"
)

// The fault tests run short by default (CI) and long with CHATBUF_CHAOS=long.
func chaosLong() bool { return os.Getenv("CHATBUF_CHAOS") == "long" }

// pick returns short in the default mode and long with CHATBUF_CHAOS=long.
func pick[T any](short, long T) T {
	if chaosLong() {
		return long
	}
	return short
}

func mode() string { return pick("short", "long") }

// summaryRows collects one row per fault test for the table TestMain prints.
var summaryRows struct {
	mu   sync.Mutex
	rows []string
}

const summaryHeader = "fault | published | delivered | lost | duplicated | misplaced"

// logRow logs the test's one summary line and keeps it for the table.
func logRow(t *testing.T, fault string, r *verify.Report) {
	t.Helper()
	row := fmt.Sprintf("%s | %d | %d | %d | %d | %d", fault, r.Published, r.Delivered, r.Lost, r.Duplicated, r.Misplaced)
	t.Logf("%s\n%s", summaryHeader, row)
	summaryRows.mu.Lock()
	summaryRows.rows = append(summaryRows.rows, row)
	summaryRows.mu.Unlock()
}

// printSummary writes the rows of the fault tests that ran, as a table.
func printSummary(w io.Writer) {
	summaryRows.mu.Lock()
	defer summaryRows.mu.Unlock()
	if len(summaryRows.rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\nfault summary (%s mode)\n%s\n", mode(), summaryHeader)
	for _, r := range summaryRows.rows {
		fmt.Fprintln(w, r)
	}
}

// runningLoad is a `producer load --verify --json` running in the background.
type runningLoad struct {
	// publishing is closed once the producer has stopped publishing (it
	// starts verifying) or has exited.
	publishing chan struct{}
	done       chan loadOutcome
	stderr     *watchWriter
}

type loadOutcome struct {
	res    loadResult
	err    error // exit status of the producer
	jerr   error // the output was not understood
	stdout string
}

// startLoad starts the producer's load with --verify --json (which fails
// on an order violation unless args say --allow-unordered). Faults are
// injected while it publishes; wait collects the report.
func (s *system) startLoad(ctx context.Context, args ...string) *runningLoad {
	l := &runningLoad{publishing: make(chan struct{}), done: make(chan loadOutcome, 1)}
	l.stderr = &watchWriter{marker: []byte("verifying:"), hit: l.publishing}
	cmd := exec.CommandContext(ctx, bin.producer, append([]string{"--nats", s.nats.URL, "load", "--verify", "--json"}, args...)...)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, l.stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start producer: %v", err)
	}
	go func() {
		err := cmd.Wait()
		l.stderr.fire()
		o := loadOutcome{err: err, stdout: stdout.String()}
		o.jerr = json.Unmarshal(stdout.Bytes(), &o.res)
		if o.jerr == nil && o.res.Report == nil {
			o.jerr = fmt.Errorf("no report in the output")
		}
		l.done <- o
	}()
	return l
}

// published reports whether the producer has stopped publishing.
func (l *runningLoad) published() bool {
	select {
	case <-l.publishing:
		return true
	default:
		return false
	}
}

// wait waits for the producer and returns its result; it fails the test
// when the output is not a report.
func (l *runningLoad) wait(t *testing.T) loadResult {
	t.Helper()
	o := <-l.done
	if o.jerr != nil {
		t.Fatalf("producer load: %v; output not understood (%v):\n%s\nstderr:\n%s", o.err, o.jerr, o.stdout, l.stderr.String())
	}
	t.Logf("producer (exit %v): %s", o.err, strings.TrimSpace(l.stderr.String()))
	return o.res
}

// watchWriter keeps what is written and closes hit once marker appears.
type watchWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker []byte
	hit    chan struct{}
	fired  bool
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.fired && bytes.Contains(w.buf.Bytes(), w.marker) {
		w.fired = true
		close(w.hit)
	}
	return len(p), nil
}

func (w *watchWriter) fire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.fired {
		w.fired = true
		close(w.hit)
	}
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// pid is the worker's process id.
func (w *workerProc) pid() int { return w.cmd.Process.Pid }

// exited reports whether the worker process has ended, and how.
func (w *workerProc) exited() (error, bool) {
	select {
	case err := <-w.done:
		w.done <- err
		return err, true
	default:
		return nil, false
	}
}

// kill sends SIGKILL and waits for the process to end.
func (w *workerProc) kill() {
	_ = w.cmd.Process.Kill()
	err := <-w.done
	w.done <- err
}

func (w *workerProc) signal(sig syscall.Signal) error { return w.cmd.Process.Signal(sig) }

// logText returns what the worker has logged so far.
func (w *workerProc) logText() string {
	if sw, ok := w.cmd.Stderr.(*syncWriter); ok {
		sw.mu.Lock()
		defer sw.mu.Unlock()
	}
	return w.log.String()
}

// requireAlive fails the test for every worker that ended by itself.
func requireAlive(t *testing.T, ws []*workerProc) {
	t.Helper()
	for _, w := range ws {
		if err, ok := w.exited(); ok {
			t.Errorf("worker %d exited by itself: %v\nlog:\n%s", w.pid(), err, w.logText())
		}
	}
}

// stopAll sends SIGTERM to every worker at once and requires a clean exit.
func stopAll(t *testing.T, ws []*workerProc) {
	t.Helper()
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Go(func() { errs[i] = w.stop(20 * time.Second) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("worker %d on SIGTERM: %v (want exit 0)", ws[i].pid(), err)
		}
	}
}

// rssKB reads VmRSS of a process from /proc, in kB.
func rssKB(pid int) (int, error) {
	n, err := procs.RSS(pid)
	return int(n >> 10), err
}

// waitAnyStatus polls the workers' /readyz until one answers want; it
// fails the test after timeout.
func waitAnyStatus(t *testing.T, ws []*workerProc, want int, timeout time.Duration) *workerProc {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, w := range ws {
			if code, _ := w.readyz(); code == want {
				return w
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no worker's /readyz answered %d within %v", want, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitAllStatus waits until every worker's /readyz answers want.
func waitAllStatus(t *testing.T, ws []*workerProc, want int) {
	t.Helper()
	for _, w := range ws {
		waitStatus(t, w, want)
	}
}

// readStream returns every message of a stream, read with an ordered
// consumer until none is pending.
func readStream(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) []jetstream.Msg {
	t.Helper()
	cons, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	if info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	defer it.Stop()
	var out []jetstream.Msg
	for {
		msg, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("read %s after %d messages: %v", name, len(out), err)
		}
		out = append(out, msg)
		meta, err := msg.Metadata()
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if meta.NumPending == 0 {
			return out
		}
	}
}

// place is one batch of CHAT_FLUSHED that holds a message.
type place struct {
	seq   uint64 // CHAT_FLUSHED stream sequence
	at    time.Time
	batch *chat.Batch
}

func (p place) String() string {
	seqs := make([]string, len(p.batch.Messages))
	for i, m := range p.batch.Messages {
		seqs[i] = strconv.FormatUint(m.Seq, 10)
	}
	return fmt.Sprintf("CHAT_FLUSHED seq %d at %s: batch_id %s, reason %s, token %d, created %s, CHAT_IN seqs [%s]",
		p.seq, p.at.Format(time.RFC3339Nano), p.batch.BatchID, p.batch.Reason, p.batch.FencingToken,
		p.batch.CreateTime.Format(time.RFC3339Nano), strings.Join(seqs, " "))
}

// batchesByMarker reads CHAT_FLUSHED back and returns, for each message of
// the run (by its marker "<run>/<n>"), the batches that hold it, one entry
// per distinct batch_id.
func (s *system) batchesByMarker(t *testing.T, run string) map[string][]place {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js, err := jetstream.New(s.nats.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	in := map[string][]place{}
	seen := map[string]bool{} // batch ids
	head := `"` + run + "/"
	for _, msg := range readStream(ctx, t, js, "CHAT_FLUSHED") {
		var b chat.Batch
		if json.Unmarshal(msg.Data(), &b) != nil || seen[b.BatchID] {
			continue
		}
		seen[b.BatchID] = true
		meta, err := msg.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range b.Messages {
			c := string(m.Content)
			if !strings.HasPrefix(c, head) {
				continue
			}
			marker, _, _ := strings.Cut(c[1:], " ")
			in[marker] = append(in[marker], place{seq: meta.Sequence.Stream, at: meta.Timestamp, batch: &b})
		}
	}
	return in
}

// checkExactlyOnce is requireExactlyOnce plus, when it fails with
// duplicates or losses, the batches that hold the messages concerned, read
// back from CHAT_FLUSHED, so that the failure can be traced in the workers'
// logs.
func (s *system) checkExactlyOnce(t *testing.T, r *verify.Report, published int) {
	t.Helper()
	requireExactlyOnce(t, r, published)
	if r.Duplicated == 0 && r.Lost == 0 {
		return
	}
	s.explain(t, r)
}

// explain logs the batches of duplicated messages and of the lost sample.
func (s *system) explain(t *testing.T, r *verify.Report) {
	t.Helper()
	in := s.batchesByMarker(t, r.Run)
	shown := 0
	for marker, ps := range in {
		if len(ps) < 2 || shown >= 5 {
			continue
		}
		shown++
		var b strings.Builder
		fmt.Fprintf(&b, "duplicated message %s is in %d batches:", marker, len(ps))
		for _, p := range ps {
			fmt.Fprintf(&b, "\n  %s", p)
		}
		t.Log(b.String())
	}
	for _, lost := range r.LostSample {
		marker, _, _ := strings.Cut(lost, " ")
		var b strings.Builder
		fmt.Fprintf(&b, "message %s, counted lost, is in %d batches", lost, len(in[marker]))
		for _, p := range in[marker] {
			fmt.Fprintf(&b, "\n  %s", p)
		}
		t.Log(b.String())
	}
	s.mu.Lock()
	ws := append([]*workerProc(nil), s.workers...)
	s.mu.Unlock()
	for _, w := range ws {
		if _, ok := w.exited(); !ok {
			t.Logf("worker %d: chatbuf_messages_deduplicated_total %v", w.pid(), w.metric("chatbuf_messages_deduplicated_total"))
		}
	}
}

// metric returns the sum of a metric's samples on the worker's /metrics
// (-1 when it cannot be read).
func (w *workerProc) metric(name string) float64 {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + w.metrics + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(line)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// inState describes what is left in CHAT_IN and the workers' consumer,
// and returns the number of messages left in CHAT_IN (-1: unknown).
func (s *system) inState(t *testing.T) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(s.nats.Conn(t))
	if err != nil {
		return err.Error(), -1
	}
	st, err := js.Stream(ctx, "CHAT_IN")
	if err != nil {
		return "CHAT_IN: " + err.Error(), -1
	}
	state := st.CachedInfo().State
	var b strings.Builder
	fmt.Fprintf(&b, "CHAT_IN: %d messages, seq %d..%d, %d deleted", state.Msgs, state.FirstSeq, state.LastSeq, state.NumDeleted)
	if cons, err := st.Consumer(ctx, "chatbuf-worker"); err != nil {
		fmt.Fprintf(&b, "; consumer: %v", err)
	} else if ci, err := cons.Info(ctx); err != nil {
		fmt.Fprintf(&b, "; consumer: %v", err)
	} else {
		fmt.Fprintf(&b, "; consumer chatbuf-worker: pending %d, ack pending %d, redelivered %d, waiting pulls %d, delivered %d/%d, ack floor %d/%d",
			ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting, ci.Delivered.Consumer, ci.Delivered.Stream,
			ci.AckFloor.Consumer, ci.AckFloor.Stream)
	}
	shown := 0
	for seq := state.FirstSeq; state.Msgs > 0 && seq <= state.LastSeq && shown < 5; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		shown++
		fmt.Fprintf(&b, "\n  left in CHAT_IN: seq %d at %s on %s, Nats-Msg-Id %q: %.120s", m.Sequence, m.Time.Format(time.RFC3339Nano),
			m.Subject, m.Header.Get(jetstream.MsgIDHeader), m.Data)
	}
	return b.String(), int(state.Msgs)
}
