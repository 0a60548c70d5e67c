package main

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/refit-gitops/refit/api/v1alpha1"
)

func TestNameHolder(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	app := func(ns, name string, created time.Time, deleting bool) *v1alpha1.App {
		a := &v1alpha1.App{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(created)}}
		if deleting {
			now := metav1.NewTime(created.Add(time.Hour))
			a.DeletionTimestamp = &now
		}
		return a
	}
	tests := []struct {
		name string
		apps []*v1alpha1.App
		want string // namespace of the holder of "shop"
	}{
		{name: "alone", apps: []*v1alpha1.App{app("a", "shop", t0, false)}, want: "a"},
		{name: "the oldest holds it", apps: []*v1alpha1.App{app("a", "shop", t0.Add(time.Second), false), app("b", "shop", t0, false)}, want: "b"},
		{name: "a tie goes to the namespace first in order", apps: []*v1alpha1.App{app("z", "shop", t0, false), app("m", "shop", t0, false)}, want: "m"},
		{name: "held while being deleted", apps: []*v1alpha1.App{app("a", "shop", t0, true), app("b", "shop", t0.Add(time.Second), false)}, want: "a"},
		{name: "other names do not count", apps: []*v1alpha1.App{app("a", "web", t0, false), app("b", "shop", t0.Add(time.Second), false)}, want: "b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := nameHolder("shop", tc.apps)
			if got == nil || got.Namespace != tc.want {
				t.Fatalf("holder %v, want namespace %s", got, tc.want)
			}
		})
	}
	if nameHolder("api", []*v1alpha1.App{app("a", "shop", t0, false)}) != nil {
		t.Error("a name no App has has a holder")
	}
}
