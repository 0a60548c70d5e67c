package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/reconcile"
	"github.com/refit-gitops/refit/source"
)

type planFlags struct {
	src    sourceFlags
	kube   kubeFlags
	app    string
	policy string
	output string
	// prune: the apply this previews deletes what left Git. Without it
	// deletions are not listed: the apply would not make them.
	prune bool
	// diff: each changed object's YAML diff, live against what the
	// apply would leave there.
	diff bool
}

func newPlanCommand() *cobra.Command {
	var f planFlags
	cmd := &cobra.Command{
		Use:   "plan (--dir DIR | --repo URL [--ref REF]) [--path PATH]",
		Short: "Show what applying would change, and which workloads go in place",
		Long: `Plan renders PATH, compares it with the cluster through a server-side-apply
dry-run (so defaults and other managers' fields are not changes), and says for
each changed object what would happen: created, updated in place (what
goes in place: container images, CPU and memory through pods/resize, template
labels and annotations), recreated by its controller (and why), or deleted.
--diff adds each changed object's unified diff: live against that dry-run's
result, without the fields the server sets, Secret values masked.
Exit status: 0 no changes, 2 changes, 1 error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	f.src.register(cmd.Flags())
	f.kube.register(cmd.Flags())
	cmd.Flags().StringVar(&f.app, "app", "", "app name: its inventory tells what left Git (default: derived from the folder or repository and the path)")
	cmd.Flags().BoolVar(&f.prune, "prune", false, "preview an apply with --prune: list the objects that left Git as deletions")
	cmd.Flags().StringVar(&f.policy, "policy", string(diff.InPlaceIfPossible), "update policy of workloads without the refit.dev/update-policy annotation")
	cmd.Flags().StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	cmd.Flags().BoolVar(&f.diff, "diff", false, "show a unified diff of each changed object's YAML: live against what the apply would leave (server-set fields left out, Secret values masked)")
	return cmd
}

func (f *planFlags) run(ctx context.Context, out io.Writer) error {
	if f.output != "text" && f.output != "json" {
		return fmt.Errorf("--output %q: want text or json", f.output)
	}
	plan, rev, err := f.plan(ctx)
	if err != nil {
		return err
	}
	// The apply this previews would stop: so does the plan.
	app, err := f.appName()
	if err != nil {
		return err
	}
	ao := apply.DefaultOptions()
	ao.App, ao.Prune = app, f.prune
	if err := apply.EmptyRender(plan, ao); err != nil {
		return err
	}
	plan, kept := previewed(plan, f.prune)
	var diffs []string
	if f.diff {
		if diffs, err = planDiffs(plan); err != nil {
			return err
		}
	}
	if f.output == "json" {
		err = writePlanJSON(out, plan, rev, kept, diffs)
	} else {
		writeDiffs(out, diffs, colours(out))
		writePlanText(out, plan, colours(out))
		writeKept(out, kept)
	}
	if err != nil {
		return err
	}
	if plan.HasChanges() {
		return &exitStatus{code: 2, err: errChanges}
	}
	return nil
}

// errChanges is plan's "not an error" exit 2; main prints nothing for it.
var errChanges = fmt.Errorf("changes planned")

func (f *planFlags) plan(ctx context.Context) (*diff.Plan, *source.Revision, error) {
	root, rev, err := f.src.checkout(ctx)
	if err != nil {
		return nil, nil, err
	}
	cfg, ns, err := f.kube.config()
	if err != nil {
		return nil, nil, err
	}
	r, err := reconcile.New(cfg, f.kube.reconcileOptions(cfg, ns)...)
	if err != nil {
		return nil, nil, err
	}
	app, err := f.appName()
	if err != nil {
		return nil, nil, err
	}
	opts := reconcile.DefaultOptions()
	opts.App, opts.Path, opts.Namespace = app, f.src.path, ns
	opts.DefaultPolicy, opts.AllowRemoteBases = diff.Policy(f.policy), f.src.allowRemoteBases
	plan, err := r.Plan(ctx, root, opts)
	if err != nil {
		return nil, nil, err
	}
	// What the apply would refuse before any write, the plan refuses too.
	return plan, rev, r.Claims(ctx, plan, app)
}

// appName is --app, or the app derived from the source (defaultApp).
func (f *planFlags) appName() (string, error) {
	if f.app != "" {
		return f.app, nil
	}
	return defaultApp(f.src.dir, f.src.repo, f.src.path)
}

// previewed is plan as the apply it previews carries it out: without
// pruning, the objects that left Git are not deleted, so they are not
// listed (kept counts them).
func previewed(plan *diff.Plan, prune bool) (*diff.Plan, int) {
	if prune {
		return plan, 0
	}
	out := &diff.Plan{Changes: make([]diff.Change, 0, len(plan.Changes))}
	kept := 0
	for _, c := range plan.Changes {
		if c.Action == diff.Delete {
			kept++
			continue
		}
		out.Changes = append(out.Changes, c)
	}
	return out, kept
}

func writeKept(out io.Writer, kept int) {
	if kept > 0 {
		fmt.Fprintf(out, "%d objects of this app left Git and stay (--prune deletes them)\n", kept)
	}
}

type palette struct{ add, change, del, inplace, dim, reset string }

func colours(out io.Writer) palette {
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) && os.Getenv("NO_COLOR") == "" {
		return palette{add: "\x1b[32m", change: "\x1b[33m", del: "\x1b[31m", inplace: "\x1b[36m", dim: "\x1b[2m", reset: "\x1b[0m"}
	}
	return palette{}
}

// writePlanText prints one line per changed object and a summary.
func writePlanText(out io.Writer, plan *diff.Plan, c palette) {
	for _, ch := range plan.Changes {
		switch ch.Action {
		case diff.Create:
			fmt.Fprintf(out, "%s+ %s%s  create\n", c.add, ch.Ref, c.reset)
		case diff.Delete:
			fmt.Fprintf(out, "%s- %s%s  delete\n", c.del, ch.Ref, c.reset)
		case diff.Update:
			fmt.Fprintf(out, "%s~ %s%s  %s\n", c.change, ch.Ref, c.reset, describeUpdate(ch, c))
		}
	}
	fmt.Fprintln(out, plan.Summary())
}

func describeUpdate(ch diff.Change, c palette) string {
	var b strings.Builder
	switch ch.Path {
	case diff.PathInPlace:
		fmt.Fprintf(&b, "%supdate in place%s", c.inplace, c.reset)
		if len(ch.InPlace) > 0 {
			fmt.Fprintf(&b, " (%s)", diff.AspectsString(ch.InPlace))
		}
		b.WriteString(":")
		b.WriteString(strings.Join(inPlaceParts(ch), ";"))
		b.WriteString(prePullNote(ch))
		// A workload under an in-place rollout: why a change that is not
		// image-only goes in place too (its hold is kept).
		if ch.Reason != "" {
			fmt.Fprintf(&b, " (%s)", ch.Reason)
		}
		if len(ch.Fields) > 0 {
			fmt.Fprintf(&b, " %s%s%s", c.dim, strings.Join(ch.Fields, ", "), c.reset)
		}
		return b.String()
	case diff.PathRecreate:
		fmt.Fprintf(&b, "update, Pods recreated (%s)", ch.Reason)
	case diff.PathRefused:
		fmt.Fprintf(&b, "%sREFUSED%s (%s)", c.del, c.reset, ch.Reason)
	case diff.PathApply:
		b.WriteString("update, no Pod replaced")
	default:
		b.WriteString("update")
		// A forced recreation says what it deletes.
		if ch.Reason != "" {
			fmt.Fprintf(&b, " (%s)", ch.Reason)
		}
	}
	if len(ch.Images) > 0 {
		for _, img := range ch.Images {
			fmt.Fprintf(&b, " %s %s → %s;", img.Container, img.From, img.To)
		}
	}
	if len(ch.Fields) > 0 {
		fmt.Fprintf(&b, " %s%s%s", c.dim, strings.Join(ch.Fields, ", "), c.reset)
	}
	return b.String()
}

// inPlaceParts are what an in-place change does (diff.InPlaceParts), one
// part per container image, resource, label or annotation, each starting
// with a space.
func inPlaceParts(ch diff.Change) []string {
	var parts []string
	for _, img := range ch.Images {
		parts = append(parts, fmt.Sprintf(" %s %s → %s", img.Container, img.From, img.To))
	}
	for _, p := range diff.InPlaceParts(ch) {
		parts = append(parts, " "+p)
	}
	return parts
}

type jsonPlan struct {
	Revision string       `json:"revision,omitempty"`
	Changes  []jsonChange `json:"changes"`
	// NotPruned counts the objects that left Git and that the apply
	// previewed (without --prune) keeps.
	NotPruned int `json:"notPruned,omitempty"`
}

type jsonChange struct {
	Kind      string             `json:"kind"`
	Group     string             `json:"group,omitempty"`
	Namespace string             `json:"namespace,omitempty"`
	Name      string             `json:"name"`
	Source    string             `json:"source,omitempty"`
	Action    diff.Action        `json:"action"`
	Class     diff.Class         `json:"class,omitempty"`
	Policy    diff.Policy        `json:"policy,omitempty"`
	Path      diff.Path          `json:"path,omitempty"`
	Reason    string             `json:"reason,omitempty"`
	Images    []diff.ImageChange `json:"images,omitempty"`
	// InPlace lists what goes in place (image, resources, metadata);
	// Resources and Metadata detail the last two.
	InPlace   []diff.Aspect         `json:"inPlace,omitempty"`
	Resources []diff.ResourceChange `json:"resources,omitempty"`
	Metadata  []diff.MetadataChange `json:"metadata,omitempty"`
	Fields    []string              `json:"fields,omitempty"`
	// Diff is the unified diff of --diff.
	Diff string `json:"diff,omitempty"`
}

// writePlanJSON writes plan; diffs (from planDiffs, or nil) gives each
// change its diff.
func writePlanJSON(out io.Writer, plan *diff.Plan, rev *source.Revision, notPruned int, diffs []string) error {
	jp := jsonPlan{Changes: []jsonChange{}, NotPruned: notPruned}
	if rev != nil {
		jp.Revision = rev.Commit
	}
	for i, ch := range plan.Changes {
		jc := jsonChange{
			Kind: ch.Ref.Kind, Group: ch.Ref.Group, Namespace: ch.Ref.Namespace, Name: ch.Ref.Name, Source: ch.Source,
			Action: ch.Action, Class: ch.Class, Policy: ch.Policy, Path: ch.Path, Reason: ch.Reason, Images: ch.Images, Fields: ch.Fields,
			InPlace: ch.InPlace, Resources: ch.Resources, Metadata: ch.Metadata,
		}
		if diffs != nil {
			jc.Diff = diffs[i]
		}
		jp.Changes = append(jp.Changes, jc)
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(jp)
}
