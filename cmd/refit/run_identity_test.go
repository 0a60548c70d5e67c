package main

import (
	"context"
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/reconcile"
)

// Which apps get a Reconciler of their own, and which share one. Nothing
// here reaches the (unreachable) API server: clients are built, not used.
func TestIdentitiesPerApp(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	base, err := reconcile.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	app := func(name, ns, sa string) config.App {
		return config.App{Name: name, Namespace: ns, ServiceAccountName: sa}
	}

	ids := &identities{base: base, cfg: cfg}
	defer ids.stop()
	if rec, err := ids.reconciler(ctx, app("shared", "shop", "")); err != nil || rec != nil {
		t.Errorf("app without serviceAccountName and no default: %v, %v; want refit's own (nil)", rec, err)
	}
	a1, err := ids.reconciler(ctx, app("a1", "team-a", "deployer"))
	if err != nil || a1 == nil {
		t.Fatalf("app with serviceAccountName: %v, %v", a1, err)
	}
	if a2, _ := ids.reconciler(ctx, app("a2", "team-a", "deployer")); a2 != a1 {
		t.Errorf("two apps of one ServiceAccount: want one Reconciler (one gate keeper, one recorder)")
	}
	if b, _ := ids.reconciler(ctx, app("b", "team-b", "deployer")); b == nil || b == a1 {
		t.Errorf("same name in another namespace: want a Reconciler of its own")
	}
	if _, err := ids.reconciler(ctx, app("bad", "team-a", "Deployer!")); err == nil || !strings.Contains(err.Error(), `service account "Deployer!"`) {
		t.Errorf("invalid serviceAccountName: %v; want an error naming it", err)
	}

	withDefault := &identities{base: base, cfg: cfg, defaultSA: "refit-deployer"}
	defer withDefault.stop()
	if rec, err := withDefault.reconciler(ctx, app("shared", "shop", "")); err != nil || rec == nil {
		t.Errorf("--default-service-account: %v, %v; want the app to act as shop:refit-deployer", rec, err)
	}
	if user := serviceAccountUser("shop", "refit-deployer"); user != "system:serviceaccount:shop:refit-deployer" {
		t.Errorf("user %q", user)
	}
}
