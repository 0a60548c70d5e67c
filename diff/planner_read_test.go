package diff

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestReadPlan(t *testing.T) {
	gvr := func(group, resource string) schema.GroupVersionResource {
		return schema.GroupVersionResource{Group: group, Version: "v1", Resource: resource}
	}
	item := func(resource, ns, name string) planned {
		scope := meta.RESTScopeNamespace
		if ns == "" {
			scope = meta.RESTScopeRoot
		}
		return planned{ref: Ref{Version: "v1", Kind: resource, Namespace: ns, Name: name}, namespaced: ns != "",
			mapping: &meta.RESTMapping{Resource: gvr("", resource), Scope: scope}}
	}
	roles := func(n int) []planned {
		var out []planned
		for i := range n {
			out = append(out, item("clusterroles", "", fmt.Sprint("r", i)))
		}
		return out
	}
	ns := func(name string) planned {
		it := item("namespaces", "", name)
		it.ref.Kind = "Namespace"
		return it
	}
	newKind := planned{ref: Ref{Group: "x.dev", Version: "v1", Kind: "Thing", Namespace: "a", Name: "t"}, namespaced: true}
	for _, tc := range []struct {
		name       string
		items      []planned
		namespaces map[string]bool
		lists      []listKey
		gets       []int
	}{
		{"an app in a new namespace: nothing read (its Namespace was, by existingNamespaces)",
			[]planned{ns("a"), item("deployments", "a", "web"), item("configmaps", "a", "x")},
			map[string]bool{"a": false}, nil, nil},
		{"an app in an existing namespace: one list per kind",
			[]planned{ns("a"), item("deployments", "a", "web"), item("configmaps", "a", "x"), item("configmaps", "a", "y")},
			map[string]bool{"a": true}, []listKey{{gvr("", "deployments"), "a"}, {gvr("", "configmaps"), "a"}}, nil},
		{"a Namespace alone: by GET", []planned{ns("a")}, map[string]bool{}, nil, []int{0}},
		{"a few cluster-scoped objects: GET each", roles(3), nil, nil, []int{0, 1, 2}},
		{"many cluster-scoped objects: one list", roles(4), nil, []listKey{{gvr("", "clusterroles"), ""}}, nil},
		{"a kind its plan's CRD defines: not read", []planned{newKind}, map[string]bool{"a": true}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lists, gets := readPlan(tc.items, tc.namespaces)
			if d := cmp.Diff(tc.lists, lists, cmp.AllowUnexported(listKey{})); d != "" {
				t.Errorf("lists (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.gets, gets); d != "" {
				t.Errorf("gets (-want +got):\n%s", d)
			}
		})
	}
}
