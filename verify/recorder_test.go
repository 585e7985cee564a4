package verify

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opencontext/chatbuf/chat"
)

func TestMarkerIn(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{"marker and text", `"run1/42 hello"`, "run1/42"},
		{"marker only", `"run1/7"`, "run1/7"},
		{"another run", `"run2/42 hello"`, ""},
		{"a run id that only starts alike", `"run12/42 hello"`, ""},
		{"no digits", `"run1/ hello"`, ""},
		{"not at the start", `"hi run1/42"`, ""},
		{"array content", `[{"type":"text","text":"run1/42"}]`, ""},
		{"empty", ``, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := markerIn("run1", []byte(tt.content)); got != tt.want {
				t.Errorf("markerIn(%s) = %q, want %q", tt.content, got, tt.want)
			}
		})
	}
}

func TestRecorder(t *testing.T) {
	run := NewRunID()
	if err := chat.ValidateID("load-" + run); err != nil || len(run) != 10 || strings.ContainsAny(run, "/ ") {
		t.Fatalf("NewRunID() = %q: want 10 characters usable in ids (%v)", run, err)
	}
	r := NewRecorder(run)
	if got := r.Content(3, 5); got != run+"/3 " {
		t.Errorf("Content(3, 5) = %q, want the marker and a space", got)
	}
	if got := r.Content(3, 100); len(got) != 100 || !strings.HasPrefix(got, run+"/3 ") {
		t.Errorf("Content(3, 100) = %q, want 100 bytes starting with the marker", got)
	}

	a := chat.Conversation{User: "a", Device: "d", Agent: "x"}
	b := chat.Conversation{User: "b", Device: "d", Agent: "x"}
	for i, c := range []chat.Conversation{b, a, b} {
		r.Add(Sent{Marker: r.Marker(i), Conversation: c, Seq: uint64(i + 1)})
	}
	if diff := cmp.Diff([]chat.Conversation{b, a}, r.Conversations()); diff != "" {
		t.Errorf("Conversations() (-want +got):\n%s", diff)
	}
	if r.Len() != 3 {
		t.Errorf("Len() = %d, want 3", r.Len())
	}
}

func TestSummarize(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		ds := make([]time.Duration, len(n))
		for i, v := range n {
			ds[i] = time.Duration(v) * time.Millisecond
		}
		return ds
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i
	}
	tests := []struct {
		name string
		ds   []time.Duration
		want Latency
	}{
		{"none", nil, Latency{}},
		{"one", ms(5), Latency{Count: 1, P50MS: 5, P99MS: 5, MaxMS: 5}},
		{"two", ms(9, 1), Latency{Count: 2, P50MS: 1, P99MS: 9, MaxMS: 9}},
		{"a hundred, unsorted", ms(hundred...), Latency{Count: 100, P50MS: 50, P99MS: 99, MaxMS: 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Summarize(tt.ds)); diff != "" {
				t.Errorf("Summarize (-want +got):\n%s", diff)
			}
		})
	}
}
