package inplace

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestResolveMaxUnavailable(t *testing.T) {
	pct := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	num := func(n int) *intstr.IntOrString { v := intstr.FromInt(n); return &v }
	for _, tc := range []struct {
		name     string
		v        *intstr.IntOrString
		def      intstr.IntOrString
		replicas int
		round    Rounding
		want     int
	}{
		{"deployment default 25% of 20", nil, intstr.FromString("25%"), 20, RoundDown, 5},
		{"deployment 25% of 10 rounds down", pct("25%"), intstr.FromString("25%"), 10, RoundDown, 2},
		{"deployment 25% of 3 rounds down to 0", pct("25%"), intstr.FromString("25%"), 3, RoundDown, 0},
		{"daemonset 25% of 10 rounds up", pct("25%"), intstr.FromInt(1), 10, RoundUp, 3},
		{"daemonset default", nil, intstr.FromInt(1), 3, RoundUp, 1},
		{"absolute", num(2), intstr.FromInt(1), 3, RoundUp, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveMaxUnavailable(tc.v, tc.def, tc.replicas, tc.round)
			if err != nil || got != tc.want {
				t.Errorf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestSelectBatch(t *testing.T) {
	avail := func(name string, ord int) Candidate { return Candidate{Name: name, Ordinal: ord, Available: true} }
	down := func(name string, ord int) Candidate { return Candidate{Name: name, Ordinal: ord} }
	restarting := func(name string) Candidate { return Candidate{Name: name, Ordinal: -1, InProgress: true} }
	done := func(name string) Candidate { return Candidate{Name: name, Ordinal: -1, Done: true, Available: true} }
	for _, tc := range []struct {
		name string
		pods []Candidate
		max  int
		want []string
	}{
		{"first batch of the window", []Candidate{avail("a", -1), avail("b", -1), avail("c", -1)}, 2, []string{"a", "b"}},
		{"window full while two restart", []Candidate{restarting("a"), restarting("b"), avail("c", -1)}, 2, nil},
		{"slides as one finishes", []Candidate{done("a"), restarting("b"), avail("c", -1), avail("d", -1)}, 2, []string{"c"}},
		{"an unavailable old Pod costs nothing more", []Candidate{down("a", -1), avail("b", -1), avail("c", -1)}, 1, []string{"a"}},
		{"unavailable for other reasons eat the budget", []Candidate{down("x", -1), avail("b", -1), avail("c", -1)}, 2, []string{"x", "b"}},
		{"statefulset highest ordinal first", []Candidate{avail("s-0", 0), avail("s-1", 1), avail("s-2", 2)}, 2, []string{"s-2", "s-1"}},
		{"all done", []Candidate{done("a"), done("b")}, 1, nil},
		{"max zero never takes an available Pod", []Candidate{avail("a", -1)}, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, SelectBatch(tc.pods, tc.max-countUnavailable(tc.pods))); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// The window never lets more than maxUnavailable Pods be unavailable,
// whatever the mix: a brute-force check over small fleets.
func TestSelectBatchNeverExceedsTheBound(t *testing.T) {
	for n := 1; n <= 6; n++ {
		for mask := 0; mask < 1<<(2*n); mask++ {
			var pods []Candidate
			unavailable := 0
			for i := 0; i < n; i++ {
				c := Candidate{Name: string(rune('a' + i)), Ordinal: -1}
				switch (mask >> (2 * i)) & 3 {
				case 0:
					c.Available = true
				case 1:
					c.InProgress = true
				case 2:
					c.Done, c.Available = true, true
				}
				if !c.Available {
					unavailable++
				}
				pods = append(pods, c)
			}
			for max := 1; max <= n; max++ {
				picked := SelectBatch(pods, max-countUnavailable(pods))
				after := unavailable
				for _, name := range picked {
					for _, p := range pods {
						if p.Name == name && p.Available {
							after++
						}
					}
				}
				if after > max && after > unavailable {
					t.Fatalf("n=%d mask=%b max=%d: %d unavailable after the batch %v", n, mask, max, after, picked)
				}
			}
		}
	}
}

func countUnavailable(pods []Candidate) int {
	n := 0
	for _, p := range pods {
		if !p.Available {
			n++
		}
	}
	return n
}
