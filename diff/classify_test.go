package diff

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
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
	held := func(c Classification) Classification { c.UnderRollout = true; return c }
	for _, tc := range []struct {
		name   string
		c      Classification
		policy Policy
		want   Path
		// reason is a part of the reason Decide must give.
		reason string
	}{
		{"image default", imageOnly, InPlaceIfPossible, PathInPlace, ""},
		{"image in-place-only", imageOnly, InPlaceOnly, PathInPlace, ""},
		{"image recreate", imageOnly, Recreate, PathRecreate, "update policy Recreate"},
		{"template default", template, InPlaceIfPossible, PathRecreate, "structural change"},
		{"template in-place-only", template, InPlaceOnly, PathRefused, "refused by update policy InPlaceOnly"},
		{"template recreate", template, Recreate, PathRecreate, "structural change"},
		{"replicas in-place-only", replicas, InPlaceOnly, PathApply, "no Pod is replaced"},
		{"replicas default", replicas, InPlaceIfPossible, PathApply, "no Pod is replaced"},

		// An in-place rollout is under way: an ordinary apply would drop its
		// hold, so only a change that ends it on purpose goes that way.
		{"rollout: replicas default", held(replicas), InPlaceIfPossible, PathInPlace, "in-place rollout under way: the change is applied with its hold kept"},
		{"rollout: replicas in-place-only", held(replicas), InPlaceOnly, PathInPlace, "applied with its hold kept"},
		{"rollout: replicas recreate", held(replicas), Recreate, PathRecreate, "update policy Recreate: the in-place rollout under way ends"},
		{"rollout: new image", held(imageOnly), InPlaceIfPossible, PathInPlace, "re-targeted"},
		{"rollout: new image, recreate", held(imageOnly), Recreate, PathRecreate, "the controller replaces the Pods under its own strategy"},
		{"rollout: template default", held(template), InPlaceIfPossible, PathRecreate, "structural change: the in-place rollout under way ends and the controller replaces the Pods under its own strategy"},
		{"rollout: template recreate", held(template), Recreate, PathRecreate, "the in-place rollout under way ends"},
		{"rollout: template in-place-only", held(template), InPlaceOnly, PathRefused, "refused by update policy InPlaceOnly: the in-place rollout under way stays held where it is"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reason, err := Decide(tc.c, tc.policy)
			if err != nil || got != tc.want {
				t.Errorf("Decide(%+v, %s) = %s, %v; want %s", tc.c, tc.policy, got, err, tc.want)
			}
			if !strings.Contains(reason, tc.reason) {
				t.Errorf("Decide(%+v, %s): reason %q, want it to say %q", tc.c, tc.policy, reason, tc.reason)
			}
		})
	}
	if _, _, err := Decide(imageOnly, "Sometimes"); err == nil {
		t.Error("Decide with an unknown policy: want an error")
	}
}
