package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/refit-gitops/refit/test/cluster/kubeletsim"
)

type stage struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchExpressions []struct {
				Key string `json:"key"`
			} `json:"matchExpressions"`
		} `json:"selector"`
		Delay *struct {
			DurationMilliseconds int64 `json:"durationMilliseconds"`
		} `json:"delay"`
		Next struct {
			StatusTemplate string `json:"statusTemplate"`
		} `json:"next"`
	} `json:"spec"`
}

func renderedStages(t *testing.T, opts Options) map[string]stage {
	t.Helper()
	out, err := renderStages(opts)
	if err != nil {
		t.Fatal(err)
	}
	stages := map[string]stage{}
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		var s stage
		if err := yaml.Unmarshal(doc, &s); err != nil {
			t.Fatalf("stage document is not YAML: %v\n%s", err, doc)
		}
		if s.Kind == "" {
			continue // the leading comment block
		}
		if s.Kind != "Stage" || s.Metadata.Name == "" {
			t.Fatalf("want a named Stage, got kind %q name %q", s.Kind, s.Metadata.Name)
		}
		stages[s.Metadata.Name] = s
	}
	return stages
}

func TestRenderStages(t *testing.T) {
	opts := DefaultOptions()
	opts.RestartDelay = 1234e6
	opts.BadImagePattern = `it's\.bad:\d+`
	stages := renderedStages(t, opts)

	for _, name := range []string{"node-initialize", "node-heartbeat", "pod-create", "pod-start", "pod-image-pull-error",
		"pod-image-pull-backoff", "pod-image-pulling", "pod-container-kill", "pod-container-restart", "pod-ready-recompute", "pod-delete"} {
		if _, ok := stages[name]; !ok {
			t.Errorf("stage %s missing", name)
		}
	}
	if d := stages["pod-container-restart"].Spec.Delay; d == nil || d.DurationMilliseconds != 1234 {
		t.Errorf("pod-container-restart delay = %+v, want 1234 ms", d)
	}
	// The pattern reaches jq as a string literal equal to the pattern.
	found := false
	for _, e := range stages["pod-start"].Spec.Selector.MatchExpressions {
		start := strings.Index(e.Key, "test(")
		if start < 0 {
			continue
		}
		rest := e.Key[start+len("test("):]
		lit := rest[:strings.Index(rest, ")")]
		var got string
		if err := json.Unmarshal([]byte(lit), &got); err != nil || got != opts.BadImagePattern {
			t.Errorf("jq literal %s decodes to %q (%v), want %q", lit, got, err, opts.BadImagePattern)
		}
		found = true
	}
	if !found {
		t.Error("pod-start does not test images against the bad-image pattern")
	}
}

// The Stages that act on a Pod's spec report the generation they acted on,
// as the kubelet does; the back-off Stage, which only moves an earlier
// pull's state on, must not claim a newer one.
func TestStagesReportObservedGeneration(t *testing.T) {
	stages := renderedStages(t, DefaultOptions())
	const line = "{{ with .metadata.generation }}observedGeneration: {{ . }}{{ end }}"
	for _, name := range []string{"pod-create", "pod-start", "pod-image-pull-error", "pod-container-kill", "pod-container-restart"} {
		if !strings.Contains(stages[name].Spec.Next.StatusTemplate, line) {
			t.Errorf("stage %s does not write status.observedGeneration from metadata.generation", name)
		}
	}
	for _, name := range []string{"pod-image-pull-backoff", "pod-ready-recompute"} {
		if strings.Contains(stages[name].Spec.Next.StatusTemplate, "observedGeneration") {
			t.Errorf("stage %s writes status.observedGeneration: it does not act on the spec", name)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Options)
		want   string
	}{
		{"default", func(*Options) {}, ""},
		{"bad name", func(o *Options) { o.Name = "Refit_1" }, "cluster name"},
		{"no pods", func(o *Options) { o.PodsPerNode = 0 }, "pods per node"},
		{"bad regexp", func(o *Options) { o.BadImagePattern = "(" }, "not a regexp"},
		{"nil log", func(o *Options) { o.Log = nil }, "Log is nil"},
		{"negative pull delay", func(o *Options) { o.PullDelay = -time.Second }, "pull delay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := DefaultOptions()
			tc.mutate(&opts)
			err := opts.validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestEnsureToolsWithoutGo(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := EnsureTools(context.Background(), t.TempDir(), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "go toolchain is not on PATH") {
		t.Fatalf("EnsureTools without go = %v, want a message naming the missing toolchain", err)
	}
}

// A failed build names the group, says why, and leaves no cache entry, so
// the next run builds again instead of using half a tool set.
func TestFailedBuildLeavesNoCacheEntry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo-v1")
	g := toolGroup{
		name:     "demo-v1",
		binaries: []string{"demo"},
		build: func(_ context.Context, _ *builder, out string) error {
			_ = os.WriteFile(filepath.Join(out, "demo"), []byte("#!/bin/sh\n"), 0o755)
			return errors.New("compile failed")
		},
	}
	var log bytes.Buffer
	err := ensureGroup(context.Background(), &builder{}, g, dir, &log)
	if err == nil || !strings.Contains(err.Error(), "build demo-v1: compile failed") {
		t.Fatalf("ensureGroup = %v, want the group and the cause", err)
	}
	for _, p := range []string{dir, dir + ".partial"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s exists after a failed build", p)
		}
	}
	if !strings.Contains(log.String(), "building demo-v1") {
		t.Errorf("no progress line: %q", log.String())
	}
}

// The simulator's cached binary is keyed by its sources: another checkout
// with other sources must not run this one's binary.
func TestSourcesHash(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module x\n")
	write("sim/a.go", "package sim\n")
	write("sim/a_test.go", "package sim\n")
	patterns := []string{"go.mod", "sim/*.go"}
	first, err := sourcesHash(dir, patterns)
	if err != nil {
		t.Fatal(err)
	}
	write("sim/a_test.go", "package sim // a test changed\n")
	if again, _ := sourcesHash(dir, patterns); again != first {
		t.Errorf("a test file changed the hash: %s, then %s", first, again)
	}
	write("sim/a.go", "package sim // changed\n")
	if changed, _ := sourcesHash(dir, patterns); changed == first {
		t.Errorf("a source changed and the hash did not: %s", first)
	}
	if _, err := sourcesHash(dir, []string{"missing/*.go"}); err == nil {
		t.Error("no error for a pattern matching nothing")
	}
}

// The Stages and refit-kubeletsim agree on the pulling mark: a start or a
// restart waits for it to go, and pod-image-pulling holds the Pod meanwhile.
func TestStagesWaitForPulls(t *testing.T) {
	stages := renderedStages(t, DefaultOptions())
	mark := fmt.Sprintf("select(.type == %q)", kubeletsim.PullingCondition)
	for _, name := range []string{"pod-start", "pod-container-restart", "pod-image-pulling"} {
		found := false
		for _, e := range stages[name].Spec.Selector.MatchExpressions {
			found = found || strings.Contains(e.Key, mark)
		}
		if !found {
			t.Errorf("stage %s does not select on %s", name, mark)
		}
	}
	if d := stages["pod-image-pulling"].Spec.Delay; d == nil || d.DurationMilliseconds < 3600*1000 {
		t.Errorf("pod-image-pulling delay = %+v, want it never to play while a pull lasts", d)
	}
	for _, name := range []string{"pod-image-pull-error", "pod-image-pull-backoff", "pod-container-kill", "pod-container-restart"} {
		if tmpl := stages[name].Spec.Next.StatusTemplate; !strings.Contains(tmpl, "resources: {{ toJson . }}") || !strings.Contains(tmpl, "allocatedResources: {{ toJson . }}") {
			t.Errorf("stage %s rewrites containerStatuses without keeping resources and allocatedResources", name)
		}
	}
}
