package diff

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func TestForceRecreates(t *testing.T) {
	for _, tc := range []struct {
		name string
		live string
		want []string
	}{
		{"config map", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", []string{"deletes it and creates it again"}},
		{"bound claim", "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {volumeName: pv-1}\n",
			[]string{"the claim's data is lost", "PersistentVolume pv-1"}},
		{"pending claim", "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\n", []string{"the claim's data is lost", "its volume"}},
		{"stateful set deleting its claims", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec: {persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete}}\n",
			[]string{"PersistentVolumeClaims and their data are deleted"}},
		{"stateful set keeping its claims", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\n", []string{"PersistentVolumeClaims are kept"}},
		{"job", "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate}\n", []string{"with its Pods"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(tc.live), &live.Object); err != nil {
				t.Fatal(err)
			}
			got := ForceRecreates(live)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("%q does not say %q", got, w)
				}
			}
		})
	}
}

func TestListed(t *testing.T) {
	inventory := []Ref{{Group: "autoscaling", Version: "v1", Kind: "HorizontalPodAutoscaler", Namespace: "a", Name: "web"}}
	for _, tc := range []struct {
		name string
		ref  Ref
		want bool
	}{
		{"same", inventory[0], true},
		{"another version", Ref{Group: "autoscaling", Version: "v2", Kind: "HorizontalPodAutoscaler", Namespace: "a", Name: "web"}, true},
		{"another namespace", Ref{Group: "autoscaling", Version: "v1", Kind: "HorizontalPodAutoscaler", Namespace: "b", Name: "web"}, false},
		{"another kind", Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "a", Name: "web"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := listed(inventory, tc.ref); got != tc.want {
				t.Errorf("listed = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRefitState(t *testing.T) {
	for _, tc := range []struct {
		name, obj string
		want      bool
	}{
		{"an inventory", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: refit-inventory-shop, namespace: refit-system}\n", true},
		{"labelled", "apiVersion: v1\nkind: Secret\nmetadata: {name: s, labels: {refit.dev/inventory: \"x\"}}\n", true},
		{"a ConfigMap", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: refit-settings}\n", false},
		{"a custom kind with the prefix", "apiVersion: example.com/v1\nkind: ConfigMap\nmetadata: {name: refit-inventory-x}\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(tc.obj), &obj.Object); err != nil {
				t.Fatal(err)
			}
			if got := RefitState(obj) != ""; got != tc.want {
				t.Errorf("refit state = %v (%q), want %v", got, RefitState(obj), tc.want)
			}
		})
	}
}
