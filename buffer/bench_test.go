package buffer_test

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontext/chatbuf/buffer"
	"github.com/opencontext/chatbuf/chat"
	"github.com/opencontext/chatbuf/internal/redistest"
)

// The benchmarks report msgs/s so that they can be set against the
// reference, redis-benchmark's pipelined RPUSH, measured on the same
// redis-server in the same run:
//
//	go test -run '^$' -bench . -benchmem ./buffer/

const benchConvs = 10000

func benchItems(n int) []buffer.Item {
	items := make([]buffer.Item, n)
	now := time.Now()
	content := []byte(`"` + strings.Repeat("x", 200) + `"`)
	for i := range items {
		c := chat.Conversation{User: fmt.Sprintf("u%d", i%benchConvs), Device: "d", Agent: "a"}
		m := chat.Message{Role: "user", Content: content}
		seq := uint64(i + 1)
		items[i] = buffer.Item{Conv: c, Key: m.DedupeKey(seq, 1), Record: chat.NewRecord(&m, 0, seq, false, now)}
	}
	return items
}

func reportRate(b *testing.B, msgs int) {
	b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkAppendOne appends one message per round trip.
func BenchmarkAppendOne(b *testing.B) {
	s := buffer.NewRedis(redistest.Start(b).Client(b), buffer.Config{})
	items := benchItems(b.N)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Append(ctx, items[i]); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, b.N)
}

// BenchmarkAppendBatch appends 256 messages of many conversations per round
// trip, as the worker does.
func BenchmarkAppendBatch(b *testing.B) {
	const batch = 256
	s := buffer.NewRedis(redistest.Start(b).Client(b), buffer.Config{})
	items := benchItems(b.N * batch)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.AppendBatch(ctx, items[i*batch:(i+1)*batch]); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, b.N*batch)
}

// BenchmarkClaimCommit claims and commits batches of 10.
func BenchmarkClaimCommit(b *testing.B) {
	s := buffer.NewRedis(redistest.Start(b).Client(b), buffer.Config{})
	ctx := context.Background()
	items := benchItems(b.N * 10)
	for i := 0; i < len(items); i += 1000 {
		if _, err := s.AppendBatch(ctx, items[i:min(i+1000, len(items))]); err != nil {
			b.Fatal(err)
		}
	}
	want := buffer.ClaimOptions{Max: 10, Min: 1, Reason: chat.TriggerManual}
	b.ResetTimer()
	n := 0
	for i := range b.N {
		c := chat.Conversation{User: fmt.Sprintf("u%d", i%benchConvs), Device: "d", Agent: "a"}
		bt, err := s.Claim(ctx, c, 1, want)
		if err != nil {
			b.Fatal(err)
		}
		if bt.Token == 0 {
			continue
		}
		if _, err := s.Commit(ctx, c, 1, bt.Token, uint64(i)); err != nil {
			b.Fatal(err)
		}
		n += len(bt.Records)
	}
	reportRate(b, n)
}

// BenchmarkReferenceRedisBenchmarkRPUSH runs redis-benchmark -P 16 RPUSH
// over 10,000 random keys against a private redis-server, for scale.
func BenchmarkReferenceRedisBenchmarkRPUSH(b *testing.B) {
	srv := redistest.Start(b)
	// b.N RPUSHes, so that ns/op is the time of one (the process start is
	// amortised as the benchmark grows b.N).
	out, err := exec.Command("redis-benchmark", "-h", "127.0.0.1", "-p", strconv.Itoa(srv.Port),
		"-P", "16", "-r", "10000", "-n", strconv.Itoa(b.N), "-q",
		"RPUSH", "bench:__rand_int__", strings.Repeat("x", 256)).CombinedOutput()
	if err != nil {
		b.Fatalf("redis-benchmark: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`([0-9.]+) requests per second`).FindSubmatch(out)
	if m == nil {
		b.Fatalf("redis-benchmark output not understood:\n%s", out)
	}
	rate, _ := strconv.ParseFloat(string(m[1]), 64)
	b.ReportMetric(rate, "msgs/s")
}
