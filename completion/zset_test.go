package completion

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
)

type scored struct {
	Member string
	Score  float64
}

func (z *zset) all() []scored {
	var out []scored
	for x := z.first(); x != nil; x = x.next[0] {
		out = append(out, scored{x.member, x.score})
	}
	return out
}

// zset against a sorted slice, under random adds, moves and removes.
func TestZsetMatchesModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	z := newZset()
	model := map[string]float64{}
	for i := range 5000 {
		m := fmt.Sprint(r.IntN(300))
		if r.IntN(3) == 0 {
			_, had := model[m]
			if got := z.remove(m); got != had {
				t.Fatalf("step %d: remove(%s) = %v, want %v", i, m, got, had)
			}
			delete(model, m)
			continue
		}
		s := float64(r.IntN(20))
		z.add(m, s)
		model[m] = s
	}
	var want []scored
	for m, s := range model {
		want = append(want, scored{m, s})
	}
	slices.SortFunc(want, func(a, b scored) int {
		return cmp.Or(cmp.Compare(a.Score, b.Score), cmp.Compare(a.Member, b.Member))
	})
	if diff := gocmp.Diff(want, z.all()); diff != "" {
		t.Fatalf("order (-want +got):\n%s", diff)
	}
	if z.len() != len(want) {
		t.Fatalf("len = %d, want %d", z.len(), len(want))
	}
	if x := z.seek(5, ""); x != nil && x.score < 5 {
		t.Fatalf("seek(5) = %v", x.score)
	}
}
