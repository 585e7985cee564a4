package completion

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSuggestionJSONRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   Suggestion
	}{
		{name: "text only", in: Suggestion{Text: "hello"}},
		{name: "full", in: sampleSuggestions()[0]},
		{name: "unicode and escapes", in: Suggestion{Text: "\"<é>\"\n\t✓", Kind: "k", Score: -1.5e-300}},
		{name: "big numbers in metadata", in: Suggestion{Text: "x", Metadata: map[string]json.RawMessage{"n": json.RawMessage(`1e400`), "i": json.RawMessage(`-99999999999999999999`)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			var got Suggestion
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.in, got); diff != "" {
				t.Fatalf("round trip (-want +got):\n%s", diff)
			}
		})
	}
	// The wire names.
	b, err := json.Marshal(Suggestion{Text: "t", Kind: "k", Score: 0.5, ContextUsed: []string{"c"}, Metadata: map[string]json.RawMessage{"m": json.RawMessage(`1`)}})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"text":"t","kind":"k","score":0.5,"context_used":["c"],"metadata":{"m":1}}`
	if diff := cmp.Diff(want, string(b)); diff != "" {
		t.Fatalf("JSON (-want +got):\n%s", diff)
	}
}
