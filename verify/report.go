package verify

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// maxProblems bounds Report.Problems; Malformed still counts every batch.
const maxProblems = 100

// Report is what Check found for one run. Message counts are of distinct
// messages (by marker); batch counts are of distinct batch ids.
type Report struct {
	Run        string `json:"run"`
	Published  int    `json:"published"`    // messages recorded as accepted
	Delivered  int    `json:"delivered"`    // of those, seen in at least one batch
	Lost       int    `json:"lost"`         // neither in a batch nor dead-lettered
	Duplicated int    `json:"duplicated"`   // in more than one distinct batch, or both in a batch and dead-lettered
	Misplaced  int    `json:"misplaced"`    // in a batch of another conversation
	Unexpected int    `json:"unexpected"`   // in the run's batches but not recorded (or another CHAT_IN copy)
	OutOfOrder int    `json:"out_of_order"` // backward steps in CHAT_IN seq between a conversation's consecutive batches

	// UnorderedInBatch counts backward (or repeated) steps in seq between
	// consecutive messages of one batch: a contract violation, so such
	// batches are malformed too.
	UnorderedInBatch int `json:"unordered_in_batch"`

	DeadLettered int            `json:"dead_lettered"` // recorded messages seen in CHAT_DEAD
	Dead         map[string]int `json:"dead"`          // the run's distinct dead letters by reason

	Batches            int            `json:"batches"`
	BatchesByReason    map[string]int `json:"batches_by_reason"`
	RedeliveredBatches int            `json:"redelivered_batches"` // the same batch again under its batch_id
	Malformed          int            `json:"malformed"`           // batches breaking the contract
	Problems           []string       `json:"problems,omitempty"`  // what is wrong, the first 100

	Latency     Latency `json:"latency"`      // publish to batch stored in CHAT_FLUSHED
	SizeLatency Latency `json:"size_latency"` // the same, size-triggered batches only

	LostSample []string     `json:"lost_sample,omitempty"` // a few lost markers with their conversation
	Flush      *FlushResult `json:"flush,omitempty"`       // the drain wait and manual flushes, when asked for
	TimedOut   bool         `json:"timed_out"`             // the timeout passed before every message was seen
	// AllowUnordered: the run was told order may break (the in-memory
	// fallback was used), so OK ignores OutOfOrder and UnorderedInBatch.
	AllowUnordered bool `json:"allow_unordered,omitempty"`
}

// OK reports whether the run kept the guarantees: no loss, no duplicate, no
// misplaced message, no malformed batch, and, unless AllowUnordered, every
// conversation's messages in CHAT_IN order.
func (r *Report) OK() bool {
	return r.Lost == 0 && r.Duplicated == 0 && r.Misplaced == 0 && r.Malformed == 0 &&
		(r.AllowUnordered || (r.OutOfOrder == 0 && r.UnorderedInBatch == 0))
}

// String is a short human summary, one fact per line.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "verify %s: published %d, delivered %d, lost %d, duplicated %d, misplaced %d, unexpected %d\n",
		r.Run, r.Published, r.Delivered, r.Lost, r.Duplicated, r.Misplaced, r.Unexpected)
	fmt.Fprintf(&b, "order: %d out of order across batches, %d within batches\n", r.OutOfOrder, r.UnorderedInBatch)
	fmt.Fprintf(&b, "dead letters: %d recorded messages; by reason %s\n", r.DeadLettered, counts(r.Dead))
	fmt.Fprintf(&b, "batches: %d (%s), %d redelivered, %d malformed\n",
		r.Batches, counts(r.BatchesByReason), r.RedeliveredBatches, r.Malformed)
	fmt.Fprintf(&b, "latency publish->batch: %s; size batches: %s\n", r.Latency, r.SizeLatency)
	if f := r.Flush; f != nil {
		fmt.Fprintf(&b, "flush: drained %t (pending %d); %d conversations asked, %d failed, %d batches\n",
			f.Drained, f.Pending, f.Requested, f.Failed, f.Batches)
		for _, e := range f.Errors {
			fmt.Fprintf(&b, "  flush error: %s\n", e)
		}
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "  problem: %s\n", p)
	}
	if len(r.LostSample) > 0 {
		fmt.Fprintf(&b, "  lost, e.g.: %s\n", strings.Join(r.LostSample, ", "))
	}
	if r.TimedOut {
		b.WriteString("timed out before every message was seen\n")
	}
	if r.OK() {
		b.WriteString("OK\n")
	} else {
		b.WriteString("FAILED: lost, duplicated, misplaced or malformed\n")
	}
	return b.String()
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// Latency summarises durations by nearest-rank percentiles, in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	P50MS float64 `json:"p50_ms"`
	P99MS float64 `json:"p99_ms"`
	MaxMS float64 `json:"max_ms"`
}

// Summarize returns the latency summary of ds (which it sorts).
func Summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	return Latency{Count: len(ds), P50MS: ms(percentile(ds, 50)), P99MS: ms(percentile(ds, 99)), MaxMS: ms(ds[len(ds)-1])}
}

func (l Latency) String() string {
	if l.Count == 0 {
		return "none"
	}
	return fmt.Sprintf("p50 %.1fms p99 %.1fms max %.1fms (n=%d)", l.P50MS, l.P99MS, l.MaxMS, l.Count)
}

// percentile returns the nearest-rank p-th percentile of sorted ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(ds)))) - 1
	return ds[max(i, 0)]
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
