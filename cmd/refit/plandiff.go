package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/refit-gitops/refit/diff"
)

// planDiffs are the unified diffs of the plan's changes, by index in
// plan.Changes ("" for an unchanged object).
func planDiffs(plan *diff.Plan) ([]string, error) {
	out := make([]string, len(plan.Changes))
	for i, ch := range plan.Changes {
		if ch.Action == diff.Unchanged {
			continue
		}
		d, err := diff.Unified(ch)
		if err != nil {
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}

// writeDiffs prints diffs one after the other, lines coloured by c as git
// colours them: hunk ranges cyan, removals red, additions green (headers
// stay plain).
func writeDiffs(out io.Writer, diffs []string, c palette) {
	for _, d := range diffs {
		if d == "" {
			continue
		}
		for _, line := range strings.SplitAfter(strings.TrimSuffix(d, "\n"), "\n") {
			text := strings.TrimSuffix(line, "\n")
			colour := ""
			switch {
			case strings.HasPrefix(text, "--- "), strings.HasPrefix(text, "+++ "):
			case strings.HasPrefix(text, "@@"):
				colour = c.inplace
			case strings.HasPrefix(text, "-"):
				colour = c.del
			case strings.HasPrefix(text, "+"):
				colour = c.add
			}
			if colour == "" {
				fmt.Fprintln(out, text)
				continue
			}
			fmt.Fprintf(out, "%s%s%s\n", colour, text, c.reset)
		}
		fmt.Fprintln(out)
	}
}
