//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
)

// Two apps of one refit apply the same new object at the same moment: one
// is admitted and the other refused naming it, never both (neither
// inventory lists the object yet when both check). With the inventory
// watch running, the ownership check makes no list of the inventories.
func TestOwnershipConcurrentNewObject(t *testing.T) {
	ns := namespace(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Only this applier's own LISTs count: the API server's request
	// metrics also count other clients (the namespace controller lists
	// every resource of a namespace another test deletes).
	var listed atomic.Int64
	cfg := rest.CopyConfig(bed.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return configMapLists{rt, &listed} })
	a, err := apply.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); a.WatchInventories(ctx) }()
	defer func() { cancel(); <-watchDone }()
	waitUntil(t, 30*time.Second, "the inventory watch listed", func(context.Context) (bool, string) {
		return a.InventoriesWatched(), "not yet"
	})
	var lists int64 // during the applies (planning lists the namespace's ConfigMaps)
	for round := range 5 {
		apps := []string{fmt.Sprintf("%s-a%d", ns, round), fmt.Sprintf("%s-b%d", ns, round)}
		name := fmt.Sprintf("shared-%d", round)
		plans := make([]*diff.Plan, 2)
		for i, app := range apps {
			plans[i] = planApp(t, a, ns, app, parseFile(t, app+".yaml", configMap(name, app)))
		}
		errs := make([]error, 2)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, app := range apps {
			wg.Go(func() {
				<-start
				_, errs[i] = a.Apply(context.Background(), plans[i], applyOptions(app))
			})
		}
		lists0 := listed.Load()
		close(start)
		wg.Wait()
		lists += listed.Load() - lists0
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("round %d: apply errors %v, want exactly one of the two apps refused", round, errs)
		}
		winner, loser := 0, 1
		if errs[0] != nil {
			winner, loser = 1, 0
		}
		var verr *apply.ValidationError
		if !errors.As(errs[loser], &verr) || !strings.Contains(errs[loser].Error(), "belongs to app "+apps[winner]) {
			t.Errorf("round %d: the refused apply: %v, want a validation error naming app %s", round, errs[loser], apps[winner])
		}
		if inv, err := a.Inventory(ctx, apps[loser]); err != nil || inv != nil {
			t.Errorf("round %d: inventory of the refused app: %v, %v; want none", round, refString(inv), err)
		}
		// Once written, the winner's object is refused to a third app too.
		third := ns + "-c" + strconv.Itoa(round)
		plan := planApp(t, a, ns, third, parseFile(t, "c.yaml", configMap(name, "c")))
		lists0 = listed.Load()
		if _, err := a.Apply(ctx, plan, applyOptions(third)); !errors.As(err, &verr) {
			t.Errorf("round %d: apply of a third app: %v, want it refused", round, err)
		}
		lists += listed.Load() - lists0
	}
	if lists != 0 {
		t.Errorf("%d lists of ConfigMaps during 15 applies, want none: the ownership check reads the watched index", lists)
	}
}

// configMapLists counts the LISTs of ConfigMaps sent through it (not the
// inventory watch's WATCH requests).
type configMapLists struct {
	next  http.RoundTripper
	count *atomic.Int64
}

func (c configMapLists) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/configmaps") && req.URL.Query().Get("watch") != "true" {
		c.count.Add(1)
	}
	return c.next.RoundTrip(req)
}
