package apply

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/refit-gitops/refit/diff"
)

// inventoryIndex is what the inventories of the cluster say, for the
// ownership check of every apply: kept by a watch (WatchInventories) rather
// than read with a list of every inventory per apply, which at cold start
// is N lists of N inventories.
//
// A watch lags the writes it reports, and so did the list: an app that
// checked ownership and has not written its inventory yet is invisible to
// both. Within one process that gap is closed by claims: an app's check
// and the claim of what it is about to write are one step under the
// index's lock, and the claim holds until the watch shows the inventory
// write that made it durable. Two apps of one process that apply the same
// new object at once are so refused one of them, never both admitted.
// Between processes (sharded replicas) the gap is what it was with the
// list: from one replica's check to the other's seeing its inventory.
type inventoryIndex struct {
	mu sync.Mutex
	// synced: entries mirror the cluster (the watch has listed).
	synced  bool
	entries map[string]*indexEntry
	// byRef maps each object an inventory lists (unversioned) to the
	// inventories that list it.
	byRef map[diff.Ref]map[string]bool
	// unreadable are the inventories that name no app or cannot be
	// decoded, with why.
	unreadable map[string]string
	claims     map[string]*claim
	now        func() time.Time
}

// indexEntry is one inventory ConfigMap as the watch last saw it.
type indexEntry struct {
	namespace, name, app, resourceVersion string
	refs                                  []diff.Ref
}

// claim is what an app of this process is applying: from its ownership
// check until the watch shows its inventory write (rv), or claimTTL after
// that write if the watch never shows that very version (a later write of
// the same ConfigMap, or a relist, skips it).
type claim struct {
	app     string
	refs    map[diff.Ref]bool
	rv      string
	written time.Time
}

const claimTTL = time.Minute

func newInventoryIndex() *inventoryIndex {
	return &inventoryIndex{entries: map[string]*indexEntry{}, byRef: map[diff.Ref]map[string]bool{},
		unreadable: map[string]string{}, claims: map[string]*claim{}, now: time.Now}
}

func indexKey(namespace, name string) string { return namespace + "/" + name }

// set records cm as the watch (or a list) shows it.
func (x *inventoryIndex) set(cm *corev1.ConfigMap) {
	key := indexKey(cm.Namespace, cm.Name)
	x.drop(key)
	if c := x.claims[key]; c != nil && c.rv != "" && c.rv == cm.ResourceVersion {
		delete(x.claims, key) // the watch has caught up with the app's write
	}
	app := cm.Data[inventoryApp]
	if app == "" || InventoryName(app) != cm.Name {
		x.unreadable[key] = fmt.Sprintf("%s: names app %q", key, app)
		return
	}
	refs, err := decodeInventory(cm.Data[inventoryKey])
	if err != nil {
		x.unreadable[key] = fmt.Sprintf("%s: %v", key, err)
		return
	}
	e := &indexEntry{namespace: cm.Namespace, name: cm.Name, app: app, resourceVersion: cm.ResourceVersion, refs: make([]diff.Ref, len(refs))}
	for i, r := range refs {
		e.refs[i] = unversioned(r)
		if x.byRef[e.refs[i]] == nil {
			x.byRef[e.refs[i]] = map[string]bool{}
		}
		x.byRef[e.refs[i]][key] = true
	}
	x.entries[key] = e
}

// drop forgets what the index holds of key.
func (x *inventoryIndex) drop(key string) {
	delete(x.unreadable, key)
	e := x.entries[key]
	if e == nil {
		return
	}
	for _, r := range e.refs {
		delete(x.byRef[r], key)
		if len(x.byRef[r]) == 0 {
			delete(x.byRef, r)
		}
	}
	delete(x.entries, key)
}

// ownersQuery is one reading of the index: by the app whose inventory is
// self (namespace ns), about refs, or about everything when all is set.
type ownersQuery struct {
	app, ns string
	refs    []diff.Ref
	all     bool
}

// owners is what the index says about q; the caller holds the lock. As
// ownersFrom, an inventory outside ns vouches only for objects in its own
// namespace.
func (x *inventoryIndex) owners(q ownersQuery) owners {
	self := indexKey(q.ns, InventoryName(q.app))
	o := owners{others: map[diff.Ref]string{}}
	keys := make([]string, 0, len(x.unreadable))
	for k := range x.unreadable {
		if k != self {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		o.unreadable = append(o.unreadable, x.unreadable[k])
	}
	add := func(key string, r diff.Ref) {
		e := x.entries[key]
		if key == self || e == nil {
			return
		}
		name := e.app
		if e.namespace != q.ns {
			if r.Namespace != e.namespace {
				return
			}
			name += " (inventory " + key + ")"
		}
		o.others[r] = name
	}
	wanted := map[diff.Ref]bool{}
	if q.all {
		for key, e := range x.entries {
			for _, r := range e.refs {
				add(key, r)
			}
		}
	} else {
		for _, r := range q.refs {
			r = unversioned(r)
			wanted[r] = true
			for key := range x.byRef[r] {
				add(key, r)
			}
		}
	}
	now := x.now()
	for key, c := range x.claims {
		if c.rv != "" && now.Sub(c.written) > claimTTL {
			delete(x.claims, key)
			continue
		}
		if key == self {
			continue
		}
		for r := range c.refs {
			if q.all || wanted[r] {
				o.others[r] = c.app + " (applying it now)"
			}
		}
	}
	return o
}

// check reads q from view (x itself, or the inventories of one list when
// no watch runs) together with the claims of x and, when take is set and
// none of want is another app's, claims want for q.app: in one step, so
// that of two apps applying one new object at once one is refused. The
// claim replaces the app's earlier one.
func (x *inventoryIndex) check(view *inventoryIndex, q ownersQuery, want []diff.Ref, take bool) owners {
	x.mu.Lock()
	defer x.mu.Unlock()
	if view == nil {
		view = x
	}
	view.claims, view.now = x.claims, x.now
	o := view.owners(q)
	if !take {
		return o
	}
	for _, r := range want {
		if o.others[unversioned(r)] != "" {
			return o // refused: nothing claimed
		}
	}
	c := &claim{app: q.app, refs: make(map[diff.Ref]bool, len(want))}
	for _, r := range want {
		c.refs[unversioned(r)] = true
	}
	x.claims[indexKey(q.ns, InventoryName(q.app))] = c
	return o
}

// written records that app's inventory, listing refs, was written at
// version rv: its claim now holds those objects until the watch shows rv.
// An empty rv (nothing written) drops the claim.
func (x *inventoryIndex) written(ns, app string, refs []diff.Ref, rv string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	key := indexKey(ns, InventoryName(app))
	if rv == "" {
		delete(x.claims, key)
		return
	}
	c := &claim{app: app, refs: make(map[diff.Ref]bool, len(refs)), rv: rv, written: x.now()}
	for _, r := range refs {
		c.refs[unversioned(r)] = true
	}
	if e := x.entries[key]; e != nil && e.resourceVersion == rv {
		return // the watch was quicker
	}
	x.claims[key] = c
}

// release drops app's claim if it was never written (the apply stopped
// before its inventory write).
func (x *inventoryIndex) release(ns, app string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	key := indexKey(ns, InventoryName(app))
	if c := x.claims[key]; c != nil && c.rv == "" {
		delete(x.claims, key)
	}
}

// forget drops app's claim: its inventory is deleted.
func (x *inventoryIndex) forget(ns, app string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.claims, indexKey(ns, InventoryName(app)))
}

// listed is an index of the inventories of one list, for an apply while
// no watch runs.
func listed(items []corev1.ConfigMap) *inventoryIndex {
	x := newInventoryIndex()
	for i := range items {
		x.set(&items[i])
	}
	return x
}

// WatchInventories keeps the index of every app's inventory fresh from a
// watch of the labelled ConfigMaps until ctx ends, across the cluster when
// refit may list ConfigMaps everywhere, otherwise in the inventory
// namespace. Until it has listed, and when it does not run, each apply
// lists the inventories as before.
func (a *Applier) WatchInventories(ctx context.Context) {
	if a.typed == nil {
		return
	}
	ns := metav1.NamespaceAll
	probe := metav1.ListOptions{LabelSelector: InventoryLabel, Limit: 1}
	if _, err := a.typed.CoreV1().ConfigMaps(ns).List(ctx, probe); apierrors.IsForbidden(err) {
		ns = a.inventoryNamespace
	}
	informer := inventoryInformer(a.typed, ns)
	x := a.index
	_, _ = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { x.onWatch(obj, false) },
		UpdateFunc: func(_, obj any) { x.onWatch(obj, false) },
		DeleteFunc: func(obj any) { x.onWatch(obj, true) },
	})
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
			x.mu.Lock()
			x.synced = true
			x.mu.Unlock()
		}
	}()
	informer.Run(ctx.Done())
	x.mu.Lock()
	x.synced = false
	x.mu.Unlock()
}

// InventoriesWatched reports whether the ownership check reads the
// watched index (WatchInventories has listed) rather than a list per apply.
func (a *Applier) InventoriesWatched() bool {
	a.index.mu.Lock()
	defer a.index.mu.Unlock()
	return a.index.synced
}

func (x *inventoryIndex) onWatch(obj any, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if deleted {
		x.drop(indexKey(cm.Namespace, cm.Name))
		return
	}
	x.set(cm)
}

// inventoryInformer watches the inventory ConfigMaps of ns, keeping only
// what the ownership check reads (the app and its entries): not the
// bad-commit memory's reasons, nor the managed fields.
func inventoryInformer(c kubernetes.Interface, ns string) cache.SharedIndexInformer {
	lw := cache.NewFilteredListWatchFromClient(c.CoreV1().RESTClient(), "configmaps", ns,
		func(o *metav1.ListOptions) { o.LabelSelector = InventoryLabel })
	informer := cache.NewSharedIndexInformer(lw, &corev1.ConfigMap{}, 0, cache.Indexers{})
	_ = informer.SetTransform(func(obj any) (any, error) {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok {
			return obj, nil
		}
		slim := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: cm.Namespace, Name: cm.Name,
			ResourceVersion: cm.ResourceVersion, Labels: cm.Labels}}
		slim.Data = map[string]string{inventoryApp: cm.Data[inventoryApp], inventoryKey: cm.Data[inventoryKey]}
		return slim, nil
	})
	return informer
}
