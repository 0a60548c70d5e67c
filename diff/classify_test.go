package diff

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// Each testdata/<case> holds live.yaml (the object in the cluster) and
// merged.yaml (what a server-side-apply dry-run of Git's version returns);
// classification.golden is the expected result, rewritten by -update.
func TestClassifyFixtures(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			live, merged := readObject(t, dir, "live.yaml"), readObject(t, dir, "merged.yaml")
			got := Classify(live.GroupVersionKind().GroupKind(), live.Object, merged.Object)
			gotJSON, err := json.MarshalIndent(got, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join(dir, "classification.golden")
			if *update {
				if err := os.WriteFile(golden, append(gotJSON, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./diff -update to create it)", err)
			}
			if d := cmp.Diff(string(want), string(gotJSON)+"\n"); d != "" {
				t.Errorf("classification (-want +got):\n%s", d)
			}
		})
	}
}

func readObject(t *testing.T, dir, name string) *unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &obj.Object); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return obj
}

func TestDecide(t *testing.T) {
	imageOnly := Classification{Changed: true, Class: ImageOnly, PodsAffected: true}
	template := Classification{Changed: true, Class: Structural, PodsAffected: true}
	replicas := Classification{Changed: true, Class: Structural}
	for _, tc := range []struct {
		name   string
		c      Classification
		policy Policy
		want   Path
	}{
		{"image default", imageOnly, InPlaceIfPossible, PathInPlace},
		{"image in-place-only", imageOnly, InPlaceOnly, PathInPlace},
		{"image recreate", imageOnly, Recreate, PathRecreate},
		{"template default", template, InPlaceIfPossible, PathRecreate},
		{"template in-place-only", template, InPlaceOnly, PathRefused},
		{"template recreate", template, Recreate, PathRecreate},
		{"replicas in-place-only", replicas, InPlaceOnly, PathApply},
		{"replicas default", replicas, InPlaceIfPossible, PathApply},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := Decide(tc.c, tc.policy)
			if err != nil || got != tc.want {
				t.Errorf("Decide(%+v, %s) = %s, %v; want %s", tc.c, tc.policy, got, err, tc.want)
			}
		})
	}
	if _, _, err := Decide(imageOnly, "Sometimes"); err == nil {
		t.Error("Decide with an unknown policy: want an error")
	}
}
