package shard

import (
	"fmt"
	"testing"
)

func keys(n int) []string {
	k := make([]string, n)
	for i := range k {
		k[i] = fmt.Sprintf("team-%d/app-%d", i%37, i)
	}
	return k
}

func TestOwnerBalance(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members []string
	}{
		{"three pods", []string{"refit-7d9f8-abcde", "refit-7d9f8-fghij", "refit-7d9f8-klmno"}},
		{"statefulset", []string{"refit-0", "refit-1", "refit-2"}},
		{"single letters", []string{"a", "b", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			count := map[string]int{}
			for _, k := range keys(1000) {
				count[Owner(k, tc.members)]++
			}
			want := 1000 / len(tc.members)
			for _, m := range tc.members {
				if c := count[m]; c < want*85/100 || c > want*115/100 {
					t.Errorf("%s owns %d of 1000 keys, want %d ±15%% (all: %v)", m, c, want, count)
				}
			}
		})
	}
}

func TestOwnerMoves(t *testing.T) {
	all := []string{"refit-0", "refit-1", "refit-2", "refit-3"}
	for _, tc := range []struct {
		name          string
		before, after []string
	}{
		{"remove one", all, []string{"refit-0", "refit-2", "refit-3"}},
		{"add one", all[:3], all},
		{"remove two", all, []string{"refit-1", "refit-3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			moved := 0
			for _, k := range keys(1000) {
				b, a := Owner(k, tc.before), Owner(k, tc.after)
				if b == a {
					continue
				}
				moved++
				// A key moves only off a member that left or onto one
				// that joined.
				if in(b, tc.after) && in(a, tc.before) {
					t.Errorf("key %s moved from %s to %s, both members before and after", k, b, a)
				}
			}
			if moved == 0 {
				t.Errorf("no key moved")
			}
		})
	}
}

func TestOwnerEdges(t *testing.T) {
	if got := Owner("ns/app", nil); got != "" {
		t.Errorf("Owner with no members = %q, want \"\"", got)
	}
	if got := Owner("ns/app", []string{"only"}); got != "only" {
		t.Errorf("Owner with one member = %q, want only", got)
	}
	// The order members are listed in does not matter.
	if a, b := Owner("ns/app", []string{"x", "y", "z"}), Owner("ns/app", []string{"z", "x", "y"}); a != b {
		t.Errorf("Owner depends on order: %s vs %s", a, b)
	}
}

func in(s string, list []string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
