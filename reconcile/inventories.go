package reconcile

import "context"

// inventoryWatcher keeps the index of the apps' inventories that every
// apply's ownership check reads (*apply.Applier).
type inventoryWatcher interface {
	WatchInventories(ctx context.Context)
}

// WatchInventories keeps the ownership check's view of every app's
// inventory fresh from a watch until ctx ends, so that an apply does not
// list every inventory of the cluster (at cold start, N lists of N). Run
// it while apps run; without it each apply lists them.
func (r *Reconciler) WatchInventories(ctx context.Context) {
	if w, ok := r.applier.(inventoryWatcher); ok {
		w.WatchInventories(ctx)
	}
}
