package v1alpha1

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/pmezard/go-difflib/difflib"
)

// controllerGen finds the generator pinned in doc.go's go:generate line,
// so the test and "go generate" cannot drift apart.
func controllerGen(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`//go:generate go run (sigs\.k8s\.io/controller-tools/cmd/controller-gen@v[0-9.]+) `).FindSubmatch(doc)
	if m == nil {
		t.Fatal("doc.go: no go:generate line running a pinned controller-gen")
	}
	return string(m[1])
}

// TestGeneratedUpToDate fails when the deep copies or the CRD differ from
// what the pinned controller-gen makes of the types: run
// "go generate ./api/..." and commit the result.
func TestGeneratedUpToDate(t *testing.T) {
	gen := controllerGen(t)
	for _, tc := range []struct{ name, file string }{
		{"object", "zz_generated.deepcopy.go"},
		{"crd", filepath.Join("..", "..", "deploy", "crds", "refit.dev_apps.yaml")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(t.Context(), "go", "run", gen, tc.name, "paths=.", "output:"+tc.name+":stdout")
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s: %v\n%s", gen, err, stderr.String())
			}
			have, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(have, stdout.Bytes()) {
				d, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
					A: difflib.SplitLines(string(have)), B: difflib.SplitLines(stdout.String()),
					FromFile: tc.file, ToFile: "generated", Context: 2,
				})
				t.Errorf("%s is stale: run go generate ./api/... (-have +generated)\n%s", tc.file, d)
			}
		})
	}
}
