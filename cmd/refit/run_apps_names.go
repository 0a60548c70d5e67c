package main

import (
	"fmt"

	"github.com/refit-gitops/refit/api/v1alpha1"
)

// nameHolder is the App that holds name among apps: the oldest (namespace
// breaks a tie), also while it is being deleted, until it is gone. refit
// names an app's inventory, bad-commit memory and the app label of its
// metrics by its name alone, so two Apps of one name in two namespaces would share them:
// the later one's prune would delete the earlier one's objects. Only the
// holder runs; the others are refused until it is gone.
func nameHolder(name string, apps []*v1alpha1.App) *v1alpha1.App {
	var holder *v1alpha1.App
	for _, a := range apps {
		if a.Name != name {
			continue
		}
		if holder == nil || older(a, holder) {
			holder = a
		}
	}
	return holder
}

func older(a, b *v1alpha1.App) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Namespace < b.Namespace
}

// nameTaken says why obj may not run while holder holds its name.
func nameTaken(holder *v1alpha1.App) string {
	return fmt.Sprintf("the name %q is taken by App %s/%s: refit names an app's inventory by its name alone; rename this App",
		holder.Name, holder.Namespace, holder.Name)
}
