package diff

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The masks a Secret's values are shown as, as flux diff shows them
// (fluxcd/pkg ssa.SanitizeUnstructuredData): a value never reaches the
// output, nor its length; a changed value shows as a changed mask.
const (
	maskSame   = "***"
	maskBefore = "*** (before)"
	maskAfter  = "*** (after)"
)

// lastApplied is kubectl's copy of the whole object (a Secret's values
// included): noise in a diff at best, a leak at worst.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// diffContext is the number of unchanged lines shown around a change.
const diffContext = 3

// Unified returns the unified diff of c's YAML: the object in the cluster
// (--- live/<ref>) against what applying it would leave there (+++ git/<ref>),
// the server-side-apply dry-run result, so defaults and other managers'
// fields are no change. Fields the server sets (managedFields, uid,
// resourceVersion, status…) are left out, and a Secret's values are
// masked. A creation is diffed against /dev/null, a deletion to it. It is
// empty when the YAML does not differ.
func Unified(c Change) (string, error) {
	before, after := c.Live, c.Merged
	if after == nil {
		// No dry-run result: a creation validated when applied, a forced
		// recreation, a binding of a role the plan creates. What Git holds
		// is what would be applied.
		after = c.Desired
	}
	if c.Action == Delete {
		after = nil
	}
	from, to := "/dev/null", "/dev/null"
	if before != nil {
		before, from = shown(before), "live/"+c.Ref.String()
	}
	if after != nil {
		after, to = shown(after), "git/"+c.Ref.String()
	}
	if isSecret(c.Ref) {
		maskSecrets(before, after)
	}
	a, err := yamlLines(before)
	if err != nil {
		return "", fmt.Errorf("%s: live: %w", c.Ref, err)
	}
	b, err := yamlLines(after)
	if err != nil {
		return "", fmt.Errorf("%s: desired: %w", c.Ref, err)
	}
	return difflib.GetUnifiedDiffString(difflib.UnifiedDiff{A: a, B: b, FromFile: from, ToFile: to, Context: diffContext})
}

// shown is a copy of obj without what the server sets and nobody applies.
func shown(obj *unstructured.Unstructured) *unstructured.Unstructured {
	out := obj.DeepCopy()
	delete(out.Object, "status")
	meta, ok := out.Object["metadata"].(map[string]any)
	if !ok {
		return out
	}
	for _, f := range []string{"managedFields", "uid", "resourceVersion", "generation", "creationTimestamp",
		"deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"} {
		delete(meta, f)
	}
	if ann, ok := meta["annotations"].(map[string]any); ok {
		delete(ann, lastApplied)
		if len(ann) == 0 {
			delete(meta, "annotations")
		}
	}
	// A Pod template's creationTimestamp: null is an artefact of the typed
	// ObjectMeta's encoding, on both sides of every workload.
	if tmpl, ok, _ := unstructured.NestedMap(out.Object, "spec", "template", "metadata"); ok {
		if ts, set := tmpl["creationTimestamp"]; set && ts == nil {
			unstructured.RemoveNestedField(out.Object, "spec", "template", "metadata", "creationTimestamp")
		}
	}
	return out
}

func isSecret(r Ref) bool { return r.Group == "" && r.Kind == "Secret" }

// maskSecrets replaces every value of data and stringData of the Secrets
// before and after (either may be nil) with a mask: maskSame where the
// value is the same on both sides or on one side only, maskBefore and
// maskAfter where it changed. Values are compared decoded, stringData
// over data as the API server merges them, so a key moved from data to
// stringData with the same value is no change.
func maskSecrets(before, after *unstructured.Unstructured) {
	bv, av := secretValues(before), secretValues(after)
	mask := func(obj *unstructured.Unstructured, own, other map[string][]byte, changed string) {
		if obj == nil {
			return
		}
		for _, field := range []string{"data", "stringData"} {
			m, ok := obj.Object[field].(map[string]any)
			if !ok {
				continue
			}
			for k := range m {
				theirs, both := other[k]
				if both && !bytes.Equal(own[k], theirs) {
					m[k] = changed
				} else {
					m[k] = maskSame
				}
			}
		}
	}
	mask(before, bv, av, maskBefore)
	mask(after, av, bv, maskAfter)
}

// secretValues are a Secret's values by key, decoded. A value that is not
// valid base64 is compared as written.
func secretValues(obj *unstructured.Unstructured) map[string][]byte {
	out := map[string][]byte{}
	if obj == nil {
		return out
	}
	if data, ok := obj.Object["data"].(map[string]any); ok {
		for k, v := range data {
			s, _ := v.(string)
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				b = []byte(s)
			}
			out[k] = b
		}
	}
	if data, ok := obj.Object["stringData"].(map[string]any); ok {
		for k, v := range data {
			s, _ := v.(string)
			out[k] = []byte(s)
		}
	}
	return out
}

// yamlLines is obj as YAML (keys sorted), one line per element, each with
// its newline; none for a nil obj.
func yamlLines(obj *unstructured.Unstructured) ([]string, error) {
	if obj == nil {
		return nil, nil
	}
	data, err := yaml.Marshal(obj.Object)
	if err != nil {
		return nil, err
	}
	// Not difflib.SplitLines: it adds an empty last line to text that
	// ends with a newline.
	lines := strings.SplitAfter(string(data), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines, nil
}
