package render_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/refit-gitops/refit/render"
)

// bigTree writes a base of 1,000 objects (250 apps × Deployment, Service,
// ConfigMap, ServiceAccount in 50 files) and an overlay over it with a
// namespace, prefix, labels, an image override and a patch.
func bigTree(b *testing.B) (root string, objects int) {
	root = b.TempDir()
	files := map[string]string{}
	var resources string
	for f := 0; f < 50; f++ {
		name := fmt.Sprintf("apps-%02d.yaml", f)
		resources += "- " + name + "\n"
		var doc string
		for a := 0; a < 5; a++ {
			app := fmt.Sprintf("app-%02d-%d", f, a)
			doc += fmt.Sprintf(`---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  labels: {app: %[1]s}
spec:
  replicas: 2
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      serviceAccountName: %[1]s
      containers:
      - name: main
        image: registry.example.com/%[1]s:1.0.0
        ports: [{containerPort: 8080}]
        envFrom: [{configMapRef: {name: %[1]s}}]
      - name: proxy
        image: envoyproxy/envoy:v1.30.0
---
apiVersion: v1
kind: Service
metadata: {name: %[1]s}
spec:
  selector: {app: %[1]s}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: %[1]s}
data: {LOG_LEVEL: info, FEATURE_X: "true"}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: %[1]s}
`, app)
			objects += 4
		}
		files["base/"+name] = doc
	}
	files["base/kustomization.yaml"] = "resources:\n" + resources
	files["prod/kustomization.yaml"] = `resources:
- ../base
namespace: prod
namePrefix: prod-
labels:
- pairs: {env: prod}
images:
- name: envoyproxy/envoy
  newTag: v1.31.0
patches:
- target: {kind: Deployment}
  patch: |-
    - op: replace
      path: /spec/replicas
      value: 3
`
	writeTree(b, root, files)
	return root, objects
}

// BenchmarkRender renders the 1,000-object overlay with render and with
// plain kustomize (the library, same options) in one run, so the cost of
// the safety checks and origin tracking shows; and with kubectl kustomize
// when kubectl is installed.
//
//	go test -run '^$' -bench . -benchmem ./render
func BenchmarkRender(b *testing.B) {
	root, want := bigTree(b)
	dir := filepath.Join(root, "prod")
	b.Run("render", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			objs, err := render.Render(context.Background(), render.Options{Root: root, Path: "prod"})
			if err != nil || len(objs) != want {
				b.Fatalf("render: %d objects, %v", len(objs), err)
			}
		}
		b.ReportMetric(float64(want), "objects")
	})
	b.Run("kustomize", func(b *testing.B) {
		b.ReportAllocs()
		opts := krusty.MakeDefaultOptions()
		opts.Reorder = krusty.ReorderOptionUnspecified
		for b.Loop() {
			m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
			if err != nil || m.Size() != want {
				b.Fatalf("kustomize: %v", err)
			}
		}
	})
	b.Run("kubectl-kustomize", func(b *testing.B) {
		kubectl, err := exec.LookPath("kubectl")
		if err != nil {
			b.Skip("kubectl not installed: no comparison")
		}
		for b.Loop() {
			if out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput(); err != nil {
				b.Fatalf("kubectl kustomize: %v\n%s", err, out)
			}
		}
	})
}
