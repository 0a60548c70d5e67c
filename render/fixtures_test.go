package render_test

import (
	"os"
	"path/filepath"
	"testing"
)

// writeTree writes files (slash paths → content) under root.
func writeTree(t testing.TB, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func symlink(t testing.TB, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// appRepo is a repository with a base, a component and an overlay using
// patches, generators, images and labels, and a plain-YAML folder.
var appRepo = map[string]string{
	"base/kustomization.yaml": `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- deployment.yaml
- service.yaml
configMapGenerator:
- name: app-config
  files:
  - config/app.properties
  literals:
  - LOG_LEVEL=info
images:
- name: nginx
  newTag: "1.25"
`,
	"base/deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx
        envFrom:
        - configMapRef:
            name: app-config
      - name: sidecar
        image: busybox:1.36
        args: ["sleep", "3600"]
`,
	"base/service.yaml": `apiVersion: v1
kind: Service
metadata:
  name: web
  annotations:
    team: platform
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
`,
	"base/config/app.properties": "greeting=hello\n",
	"components/monitoring/kustomization.yaml": `apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
resources:
- monitor.yaml
patches:
- patch: |-
    - op: add
      path: /metadata/annotations/prometheus.io~1scrape
      value: "true"
  target:
    kind: Service
`,
	"components/monitoring/monitor.yaml": `apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: web
spec:
  selector:
    matchLabels:
      app: web
`,
	"overlays/prod/kustomization.yaml": `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: prod
namePrefix: prod-
labels:
- pairs:
    env: prod
resources:
- ../../base
- namespace.yaml
components:
- ../../components/monitoring
patches:
- path: replicas.yaml
configMapGenerator:
- name: app-config
  behavior: merge
  literals:
  - LOG_LEVEL=warn
images:
- name: nginx
  newName: registry.example.com/nginx
  newTag: "1.27"
`,
	"overlays/prod/namespace.yaml": `apiVersion: v1
kind: Namespace
metadata:
  name: prod
`,
	"overlays/prod/replicas.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
`,
	"plain/a.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: a
data:
  k: v
`,
	"plain/b.yml": `---
apiVersion: v1
kind: ConfigMap
metadata:
  name: b1
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: b2
---
`,
	"plain/values.yaml":             "replicaCount: 2\nimage:\n  tag: x\n",
	"plain/README.md":               "# not yaml\n",
	"plain/.github/ci.yml":          "on: push\n",
	"plain/sub/c.yaml":              "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n",
	"plain/kust/kustomization.yaml": "resources:\n- d.yaml\nnamePrefix: k-\n",
	"plain/kust/d.yaml":             "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: d\n",
	"plain/kust/ignored.yaml":       "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: not-listed\n",
	"plain/comp/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources:\n- e.yaml\n",
	"plain/comp/e.yaml":             "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: e\n",
	"empty/README.md":               "nothing here\n",
}
