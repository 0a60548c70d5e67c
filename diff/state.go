package diff

import (
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// refit keeps its own state, per app, in a ConfigMap named StatePrefix+app
// and labelled StateLabel: the inventory (what the app applied, the only
// thing pruning trusts) and the bad-commit memory.
const (
	StatePrefix = "refit-inventory-"
	StateLabel  = "refit.dev/inventory"
)

// RefitState says why obj is refit's own state, or "" if it is not. Such
// an object can never come from Git, whatever the namespace: a commit that
// rewrote an inventory could make refit prune another app's objects, and
// one that rewrote the memory could make it retry a commit that crashed it.
func RefitState(obj *unstructured.Unstructured) string {
	if _, ok := obj.GetLabels()[StateLabel]; ok {
		return "carries the label " + StateLabel + " of refit's own state (an app's inventory): refit's state never comes from Git"
	}
	gvk := obj.GroupVersionKind()
	if gvk.Group == "" && gvk.Kind == "ConfigMap" && strings.HasPrefix(obj.GetName(), StatePrefix) {
		return "is named like refit's own state (" + StatePrefix + "<app>: an app's inventory and bad-commit memory): refit's state never comes from Git"
	}
	return ""
}
