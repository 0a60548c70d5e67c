package main

import (
	"bytes"
	"encoding/base64"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/refit-gitops/refit/diff"
)

var update = flag.Bool("update", false, "rewrite testdata/plandiff/*/want.diff")

// TestPlanDiffGolden renders the diff of real object pairs: live.yaml and
// merged.yaml are what a kube-apiserver returned for a GET and for the
// server-side-apply dry-run of desired.yaml (the planner's Live and
// Merged); a case without live.yaml is a creation, one with live.yaml
// only a deletion. want.diff is the output, rewritten by -update.
func TestPlanDiffGolden(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "plandiff", "*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			ch := loadChange(t, dir)
			diffs, err := planDiffs(&diff.Plan{Changes: []diff.Change{ch}})
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			writeDiffs(&got, diffs, palette{})
			golden := filepath.Join(dir, "want.diff")
			if *update {
				if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(string(want), got.String()); d != "" {
				t.Errorf("diff of %s (-want +got):\n%s", dir, d)
			}
			assertNoServerFields(t, got.String())
			assertNoSecretValue(t, ch, got.String())
		})
	}
}

// loadChange reads a case's objects into the Change the planner makes of
// them.
func loadChange(t *testing.T, dir string) diff.Change {
	t.Helper()
	read := func(name string) *unstructured.Unstructured {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &obj.Object); err != nil {
			t.Fatalf("%s/%s: %v", dir, name, err)
		}
		return obj
	}
	ch := diff.Change{Live: read("live.yaml"), Merged: read("merged.yaml"), Desired: read("desired.yaml"), Action: diff.Update}
	switch {
	case ch.Live == nil:
		ch.Action = diff.Create
	case ch.Merged == nil && ch.Desired == nil:
		ch.Action = diff.Delete
	}
	for _, obj := range []*unstructured.Unstructured{ch.Live, ch.Merged, ch.Desired} {
		if obj != nil {
			ch.Ref = diff.RefOf(obj)
		}
	}
	return ch
}

func assertNoServerFields(t *testing.T, out string) {
	t.Helper()
	for _, f := range []string{"managedFields:", "status:", "uid:", "resourceVersion:", "generation:", "creationTimestamp:", "last-applied-configuration"} {
		if strings.Contains(out, f) {
			t.Errorf("the diff shows %q:\n%s", f, out)
		}
	}
}

// assertNoSecretValue fails if any value of a Secret of ch, decoded or as
// written, is in out.
func assertNoSecretValue(t *testing.T, ch diff.Change, out string) {
	t.Helper()
	if ch.Ref.Kind != "Secret" {
		return
	}
	for _, obj := range []*unstructured.Unstructured{ch.Live, ch.Merged, ch.Desired} {
		if obj == nil {
			continue
		}
		for _, field := range []string{"data", "stringData"} {
			m, _, _ := unstructured.NestedStringMap(obj.Object, field)
			for k, v := range m {
				values := []string{v}
				if b, err := base64.StdEncoding.DecodeString(v); err == nil && field == "data" {
					values = append(values, string(b))
				}
				for _, v := range values {
					if strings.Contains(out, v) {
						t.Errorf("the diff shows the value of %s %s %q", field, k, v)
					}
				}
			}
		}
	}
}

// TestPlanDiffColours: on a terminal removals are red, additions green and
// hunk ranges cyan; the headers and context stay plain.
func TestPlanDiffColours(t *testing.T) {
	ch := loadChange(t, filepath.Join("testdata", "plandiff", "configmap-data"))
	diffs, err := planDiffs(&diff.Plan{Changes: []diff.Change{ch}})
	if err != nil {
		t.Fatal(err)
	}
	c := palette{add: "<g>", change: "<y>", del: "<r>", inplace: "<c>", dim: "<d>", reset: "</>"}
	var got bytes.Buffer
	writeDiffs(&got, diffs, c)
	for _, want := range []string{"\n<r>-  mode: fast</>\n", "\n<g>+  mode: safe</>\n", "\n<c>@@ ", "\n--- live/ConfigMap/", "+++ git/ConfigMap/", "\n   retries: \"3\"\n"} {
		if !strings.Contains("\n"+got.String(), want) {
			t.Errorf("coloured diff lacks %q:\n%s", want, got.String())
		}
	}
}

// TestPlanDiffUnchanged: an unchanged object has no diff, and a plan
// without --diff carries none in its JSON.
func TestPlanDiffUnchanged(t *testing.T) {
	ch := loadChange(t, filepath.Join("testdata", "plandiff", "configmap-data"))
	ch.Action, ch.Merged = diff.Unchanged, ch.Live
	plan := &diff.Plan{Changes: []diff.Change{ch}}
	diffs, err := planDiffs(plan)
	if err != nil || diffs[0] != "" {
		t.Fatalf("diff of an unchanged object: %q, %v", diffs[0], err)
	}
	var out bytes.Buffer
	if err := writePlanJSON(&out, plan, nil, 0, nil); err != nil || strings.Contains(out.String(), `"diff"`) {
		t.Errorf("plan without --diff: %v\n%s", err, out.String())
	}
}
