package apply

import (
	"testing"

	"github.com/fluxcd/cli-utils/pkg/object"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

func TestPollByList(t *testing.T) {
	id := func(kind, ns, name string) object.ObjMetadata {
		return object.ObjMetadata{GroupKind: schema.GroupKind{Kind: kind}, Namespace: ns, Name: name}
	}
	many := func(kind, ns string, n int) object.ObjMetadataSet {
		var out object.ObjMetadataSet
		for i := range n {
			out = append(out, id(kind, ns, string(rune('a'+i))))
		}
		return out
	}
	for _, tc := range []struct {
		name string
		ids  object.ObjMetadataSet
		want bool
	}{
		{"one Deployment", object.ObjMetadataSet{id("Deployment", "a", "web")}, false},
		{"one of each kind", object.ObjMetadataSet{id("Deployment", "a", "web"), id("Service", "a", "web"), id("ConfigMap", "a", "x")}, false},
		{"many ConfigMaps in one namespace", many("ConfigMap", "a", 10), true},
		{"many ConfigMaps and a Namespace", append(many("ConfigMap", "a", 10), id("Namespace", "", "a")), false},
		{"three per group", many("ConfigMap", "a", 3), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pollByList(tc.ids); got != tc.want {
				t.Errorf("pollByList = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCurrentMessage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		obj     string
		current bool
	}{
		{"ConfigMap", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: a}\n", true},
		{"Namespace active", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\nstatus: {phase: Active}\n", true},
		{"Deployment just created", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: a, generation: 1}\n" +
			"spec: {replicas: 0, progressDeadlineSeconds: 600}\nstatus: {}\n", false},
		{"Deployment whose new generation is not observed", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: a, generation: 2}\n" +
			"spec: {replicas: 0}\nstatus: {observedGeneration: 1}\n", false},
		{"Job just created", "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j, namespace: a, generation: 1}\nspec: {parallelism: 1}\nstatus: {}\n", false},
		{"CRD not yet established", "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: things.x.dev, generation: 1}\n" +
			"spec: {group: x.dev}\nstatus: {conditions: [{type: NamesAccepted, status: \"True\"}]}\n", false},
		{"ClusterIP Service", "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: a}\nspec: {type: ClusterIP, clusterIP: 10.0.0.1}\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(tc.obj), &u.Object); err != nil {
				t.Fatal(err)
			}
			if got := currentMessage(u) != ""; got != tc.current {
				t.Errorf("current = %v (%q), want %v", got, currentMessage(u), tc.current)
			}
		})
	}
}
