package diff

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func secret(fields map[string]any) *unstructured.Unstructured {
	obj := map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "s", "namespace": "a"}}
	for k, v := range fields {
		obj[k] = v
	}
	return &unstructured.Unstructured{Object: obj}
}

// TestMaskSecrets: every value is masked; a value changed shows as a
// changed mask, whatever its encoding (data or stringData) and never with
// its length.
func TestMaskSecrets(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		before, after         *unstructured.Unstructured
		wantBefore, wantAfter map[string]any
	}{
		{
			name:       "same, changed, removed and added keys",
			before:     secret(map[string]any{"data": map[string]any{"same": "YQ==", "changed": "Yg==", "gone": "Yw=="}}),
			after:      secret(map[string]any{"data": map[string]any{"same": "YQ==", "changed": "YmJiYmJiYmJiYmJi", "new": "ZA=="}}),
			wantBefore: map[string]any{"data": map[string]any{"same": maskSame, "changed": maskBefore, "gone": maskSame}},
			wantAfter:  map[string]any{"data": map[string]any{"same": maskSame, "changed": maskAfter, "new": maskSame}},
		},
		{
			name:       "stringData compared decoded",
			before:     secret(map[string]any{"data": map[string]any{"moved": "YQ==", "edited": "YQ=="}}),
			after:      secret(map[string]any{"stringData": map[string]any{"moved": "a", "edited": "b"}}),
			wantBefore: map[string]any{"data": map[string]any{"moved": maskSame, "edited": maskBefore}},
			wantAfter:  map[string]any{"stringData": map[string]any{"moved": maskSame, "edited": maskAfter}},
		},
		{
			name:      "a creation",
			after:     secret(map[string]any{"data": map[string]any{"k": "YQ=="}, "stringData": map[string]any{"s": "x"}}),
			wantAfter: map[string]any{"data": map[string]any{"k": maskSame}, "stringData": map[string]any{"s": maskSame}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			maskSecrets(tc.before, tc.after)
			for _, side := range []struct {
				obj  *unstructured.Unstructured
				want map[string]any
			}{{tc.before, tc.wantBefore}, {tc.after, tc.wantAfter}} {
				if side.obj == nil {
					continue
				}
				got := map[string]any{}
				for _, f := range []string{"data", "stringData"} {
					if v, ok := side.obj.Object[f]; ok {
						got[f] = v
					}
				}
				if d := cmp.Diff(side.want, got); d != "" {
					t.Errorf("masked (-want +got):\n%s", d)
				}
			}
		})
	}
}

// TestUnifiedLeavesTheCallersObjects: the plan's objects are not masked or
// stripped by showing them.
func TestUnifiedLeavesTheCallersObjects(t *testing.T) {
	live := secret(map[string]any{"data": map[string]any{"k": "YQ=="}, "status": map[string]any{"x": "y"}})
	live.SetUID("u1")
	merged := secret(map[string]any{"data": map[string]any{"k": "Yg=="}})
	before, after := live.DeepCopy(), merged.DeepCopy()
	d, err := Unified(Change{Ref: RefOf(live), Action: Update, Live: live, Merged: merged})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(d, "-  k: '*** (before)'\n+  k: '*** (after)'\n") {
		t.Errorf("diff:\n%s", d)
	}
	if !cmp.Equal(before, live) || !cmp.Equal(after, merged) {
		t.Errorf("Unified changed its arguments")
	}
}
