//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"golang.org/x/crypto/ssh"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/refit-gitops/refit/test/gitserver"
)

// The bad-input corpus: repository states, CLI requests, config files and
// webhook requests that must each get a clear error (naming the file or
// object and the cause) and leave the cluster as it was. One cluster, one
// namespace with a deployed baseline app, one table per kind of input.
//
// A case whose fix came with another part of issue 11 names it in part,
// for whoever reads a failure.

// corpusBaseline is what the app holds before every case: a case that
// applied, pruned or rewrote anything would show in the snapshot.
func corpusBaseline(ns string) map[string]string {
	return map[string]string{
		"base/app.yaml": `apiVersion: apps/v1
kind: Deployment
metadata: {name: corpus-web}
spec:
  replicas: 2
  selector: {matchLabels: {app: corpus-web}}
  template:
    metadata: {labels: {app: corpus-web}}
    spec:
      containers:
      - {name: web, image: "web:1.0"}
---
apiVersion: v1
kind: Service
metadata: {name: corpus-web}
spec:
  selector: {app: corpus-web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: corpus-settings}
data: {mode: fast}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: corpus-frozen}
immutable: true
data: {key: "1"}
`,
	}
}

// corpusCase is one request that must fail and change nothing.
type corpusCase struct {
	name string
	// part names the part of issue 11 whose fix the case proves ("" for
	// what refit did before it).
	part string
	// files is the repository state, merged over the baseline; a value of
	// "\x00fifo" makes a FIFO, "\x00symlink:TARGET" a symlink.
	files map[string]string
	// git, when set, builds the repository with go-git instead (entries
	// at its root) and the request uses --repo file://…
	git []rawEntry
	// cmd is render, plan or apply (default).
	cmd string
	// path is --path (default "case").
	path string
	// args are extra flags.
	args []string
	// want are substrings the output must hold: the file or object, and
	// the cause.
	want []string
}

func cm(name, extra string) string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\ndata: {a: \"1\"}\n" + extra
}

func corpusCases(ns string) []corpusCase {
	deep := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: corpus-deep}\ndata: {a: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "}\n"
	bomb := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: corpus-bomb}\ndata:\n  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		bomb += "  " + n + ": &" + n + " [" + strings.TrimSuffix(strings.Repeat("*"+prev+",", 9), ",") + "]\n"
		prev = n
	}
	var manyDocs strings.Builder
	for i := range 10050 {
		fmt.Fprintf(&manyDocs, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: corpus-m%d}\n", i)
	}
	lfs := "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n"
	newValid := cm("corpus-new", "")
	return []corpusCase{
		// YAML the parser refuses.
		{name: "malformed yaml", files: map[string]string{"case/app.yaml": newValid + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: corpus-x\n"}, want: []string{"app.yaml", "did not find expected"}},
		{name: "tab indentation", files: map[string]string{"case/app.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n\tname: corpus-x\n"}, want: []string{"app.yaml", "line 4", "cannot start any token"}},
		{name: "alias bomb", files: map[string]string{"case/app.yaml": bomb}, want: []string{"app.yaml", "too many aliases"}},
		{name: "deep nesting", files: map[string]string{"case/app.yaml": deep}, want: []string{"app.yaml", "max depth"}},
		{name: "huge file", files: map[string]string{"case/app.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: corpus-huge}\ndata:\n  a: \"" + strings.Repeat("x", 40<<20) + "\"\n"}, want: []string{"app.yaml", "bytes, more than"}},
		{name: "too many documents", files: map[string]string{"case/app.yaml": manyDocs.String()}, want: []string{"app.yaml", "more than 10000 YAML documents"}},
		{name: "binary garbage", files: map[string]string{"case/app.yaml": "\x00\x01\xff\xfe" + strings.Repeat("\xc3\x28", 100)}, want: []string{"app.yaml"}},
		{name: "object without a name", files: map[string]string{"case/app.yaml": newValid + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"}, want: []string{"missing metadata.name"}},
		{name: "duplicate object", files: map[string]string{"case/app.yaml": newValid + "---\n" + newValid}, want: []string{"corpus-new", "already registered id"}},

		// Kustomizations reaching outside the repository or running code.
		{name: "resource escaping by ..", files: map[string]string{"case/kustomization.yaml": "resources: [../../../../etc/hostname]\n"}, want: []string{"kustomization.yaml", "outside the repository root"}},
		{name: "base escaping by ..", files: map[string]string{"case/kustomization.yaml": "resources: [../../..]\n"}, want: []string{"kustomization.yaml", "outside the repository root"}},
		{name: "absolute resource path", files: map[string]string{"case/kustomization.yaml": "resources: [/etc/hostname]\n"}, want: []string{"kustomization.yaml", "absolute path"}},
		{name: "generator file outside", files: map[string]string{"case/kustomization.yaml": "configMapGenerator:\n- name: corpus-gen\n  files: [../../../../etc/passwd]\n"}, want: []string{"kustomization.yaml", "outside the repository root"}},
		{name: "patch file absolute", files: map[string]string{"case/kustomization.yaml": "resources: [app.yaml]\npatches:\n- path: /etc/hostname\n", "case/app.yaml": newValid}, want: []string{"kustomization.yaml", "absolute path"}},
		{name: "component outside", files: map[string]string{"case/kustomization.yaml": "components: [../../../../tmp]\n"}, want: []string{"kustomization.yaml", "outside the repository root"}},
		{name: "exec plugin", files: map[string]string{"case/kustomization.yaml": "generators: [gen.yaml]\n",
			"case/gen.yaml": "apiVersion: corpus.example/v1\nkind: ExecGen\nmetadata:\n  name: corpus-x\n  annotations:\n    config.kubernetes.io/function: |\n      exec:\n        path: /bin/sh\n"}, want: []string{"ExecGen", "plugins disabled"}},
		{name: "container KRM function", files: map[string]string{"case/kustomization.yaml": "transformers: [t.yaml]\n",
			"case/t.yaml": "apiVersion: corpus.example/v1\nkind: ContainerFn\nmetadata:\n  name: corpus-x\n  annotations:\n    config.kubernetes.io/function: |\n      container:\n        image: corpus/evil:1\n"}, want: []string{"ContainerFn", "plugins disabled"}},
		{name: "validator KRM function", files: map[string]string{"case/kustomization.yaml": "resources: [app.yaml]\nvalidators: [v.yaml]\n", "case/app.yaml": newValid,
			"case/v.yaml": "apiVersion: corpus.example/v1\nkind: ValidatorFn\nmetadata:\n  name: corpus-x\n  annotations:\n    config.kubernetes.io/function: |\n      container:\n        image: corpus/evil:1\n"}, want: []string{"ValidatorFn", "plugins disabled"}},
		{name: "helm chart", files: map[string]string{"case/kustomization.yaml": "helmCharts:\n- name: nginx\n  repo: https://charts.example.com\n  version: 1.0.0\n"}, want: []string{"kustomization.yaml", "helm"}},
		{name: "remote base over https", files: map[string]string{"case/kustomization.yaml": "resources:\n- https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v3.3.1\n"}, want: []string{"kustomization.yaml", "remote"}},
		{name: "remote base over ssh", files: map[string]string{"case/kustomization.yaml": "resources:\n- git@github.com:kubernetes-sigs/kustomize.git//examples/helloWorld\n"}, want: []string{"kustomization.yaml", "remote"}},
		{name: "missing resource", files: map[string]string{"case/kustomization.yaml": "resources: [nope.yaml]\n"}, want: []string{"nope.yaml", "no such file"}},
		{name: "unknown kustomization field", files: map[string]string{"case/kustomization.yaml": "resourcez: [app.yaml]\n"}, want: []string{"unknown field \"resourcez\""}},
		{name: "FIFO", files: map[string]string{"case/app.yaml": "\x00fifo"}, want: []string{"app.yaml", "not a regular file"}},
		{name: "symlink out of the folder", files: map[string]string{"case/app.yaml": "\x00symlink:/etc/passwd"}, want: []string{"app.yaml", "outside the repository root"}},
		{name: "path escaping by ..", path: "../../..", want: []string{"outside"}},
		{name: "absolute path", path: "/etc", want: []string{"/etc"}},
		{name: "plan of malformed yaml", cmd: "plan", files: map[string]string{"case/app.yaml": "kind: [\n"}, want: []string{"app.yaml"}},
		{name: "render of an exec plugin", cmd: "render", files: map[string]string{"case/kustomization.yaml": "generators: [gen.yaml]\n",
			"case/gen.yaml": "apiVersion: corpus.example/v1\nkind: ExecGen\nmetadata:\n  name: corpus-x\n  annotations:\n    config.kubernetes.io/function: |\n      exec:\n        path: /bin/sh\n"}, want: []string{"ExecGen", "plugins disabled"}},

		// Objects the API server refuses: a valid object in the same
		// commit is not applied either.
		{name: "unknown kind", files: map[string]string{"case/app.yaml": newValid + "---\napiVersion: corpus.example/v1\nkind: Frobnicator\nmetadata: {name: corpus-frob}\n"}, want: []string{"Frobnicator", "corpus-frob"}},
		{name: "unknown version of a known kind", files: map[string]string{"case/app.yaml": newValid + "---\napiVersion: apps/v9\nkind: Deployment\nmetadata: {name: corpus-v9}\nspec: {}\n"}, want: []string{"corpus-v9", "apps/v9"}},
		{name: "invalid name", files: map[string]string{"case/app.yaml": newValid + "---\n" + cm("Corpus_Bad", "")}, want: []string{"Corpus_Bad", "RFC 1123"}},
		{name: "negative replicas", files: map[string]string{"case/app.yaml": newValid + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: corpus-neg}\nspec:\n  replicas: -1\n  selector: {matchLabels: {app: n}}\n  template:\n    metadata: {labels: {app: n}}\n    spec: {containers: [{name: c, image: c}]}\n"}, want: []string{"corpus-neg", "spec.replicas"}},
		{name: "port out of range", files: map[string]string{"case/app.yaml": newValid + "---\napiVersion: v1\nkind: Service\nmetadata: {name: corpus-port}\nspec: {ports: [{port: 70000}]}\n"}, want: []string{"corpus-port", "70000"}},
		{name: "wrong field type", files: map[string]string{"case/app.yaml": newValid + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: corpus-type}\ndata: [1, 2]\n"}, want: []string{"corpus-type"}},
		{name: "immutable selector", files: map[string]string{"case/app.yaml": strings.NewReplacer("{app: corpus-web}", "{app: corpus-other}").Replace(corpusBaseline(ns)["base/app.yaml"])}, want: []string{"corpus-web", "immutable"}},
		{name: "immutable ConfigMap data", files: map[string]string{"case/app.yaml": strings.Replace(corpusBaseline(ns)["base/app.yaml"], `data: {key: "1"}`, `data: {key: "2"}`, 1)}, want: []string{"corpus-frozen", "immutable"}},
		{name: "immutable clusterIP", files: map[string]string{"case/app.yaml": strings.Replace(corpusBaseline(ns)["base/app.yaml"], "ports: [{port: 80}]", "ports: [{port: 80}]\n  clusterIP: 10.0.0.99", 1)}, want: []string{"corpus-web", "clusterIPs[0]", "may not change once set"}},
		{name: "namespace created with a refused object", part: "H3", files: map[string]string{"case/app.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: corpus-ns-" + ns[len(ns)-5:] + "}\n---\n" + cm("Corpus_Bad", "")}, want: []string{"Corpus_Bad"}},
		{name: "CRD created with a refused object", part: "H3", files: map[string]string{"case/app.yaml": corpusCRD + "---\n" + cm("Corpus_Bad", "")}, want: []string{"Corpus_Bad"}},

		// Objects a commit may not hold.
		{name: "refit's own inventory", files: map[string]string{"case/app.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: refit-inventory-corpus-victim\n  namespace: refit-system\n  labels: {refit.dev/inventory: \"true\"}\ndata: {app: corpus-victim, objects: \"\"}\n"},
			want: []string{"refit-inventory-corpus-victim"}},
		{name: "another app's object", part: "H3", files: map[string]string{"case/app.yaml": cm("corpus-others", "")}, want: []string{"corpus-others", "corpus-other-app"}},
		{name: "an object in kube-system as the deployer", part: "H1", args: []string{"--as", "system:serviceaccount:" + ns + ":corpus-deployer"},
			files: map[string]string{"case/app.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: corpus-evil, namespace: kube-system}\ndata: {a: \"1\"}\n"}, want: []string{"corpus-evil", "forbidden"}},
		{name: "cluster-admin binding as the deployer", part: "H1", args: []string{"--as", "system:serviceaccount:" + ns + ":corpus-deployer"},
			files: map[string]string{"case/app.yaml": "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: corpus-escalate}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\nsubjects: [{kind: ServiceAccount, name: default, namespace: " + ns + "}]\n"},
			want:  []string{"corpus-escalate", "forbidden"}},
		{name: "empty render with prune", part: "H3", files: map[string]string{"case/README.md": "nothing here yet\n"}, want: []string{"empty"}},

		// Repository states only Git can hold.
		{name: "git symlink out of the repository", part: "H4", git: []rawEntry{{name: "case", mode: filemode.Dir, sub: []rawEntry{
			{name: "app.yaml", mode: filemode.Symlink, content: "../../../../../../etc/passwd"}}}}, want: []string{"app.yaml", "outside"}},
		{name: "git symlink and folder of one name", part: "H4", git: []rawEntry{
			{name: "case", mode: filemode.Symlink, content: "/tmp"},
			{name: "case", mode: filemode.Dir, sub: []rawEntry{{name: "corpus-escaped.yaml", mode: filemode.Regular, content: newValid}}}}, want: []string{`"case"`, "two entries of one tree"}},
		{name: "git duplicate file entries", part: "H4", git: []rawEntry{{name: "case", mode: filemode.Dir, sub: []rawEntry{
			{name: "app.yaml", mode: filemode.Regular, content: newValid},
			{name: "app.yaml", mode: filemode.Regular, content: cm("corpus-dup2", "")}}}}, want: []string{`app.yaml": two entries of one tree`}},
		{name: "git LFS pointer", part: "H4", git: []rawEntry{
			{name: ".gitattributes", mode: filemode.Regular, content: "*.yaml filter=lfs diff=lfs merge=lfs -text\n"},
			{name: "case", mode: filemode.Dir, sub: []rawEntry{{name: "app.yaml", mode: filemode.Regular, content: lfs}}}}, want: []string{"app.yaml", "LFS"}},
		{name: "git unsigned commit", part: "H2", args: []string{"--verify-keys", "KEYS"}, git: []rawEntry{
			{name: "case", mode: filemode.Dir, sub: []rawEntry{{name: "app.yaml", mode: filemode.Regular, content: newValid}}}}, want: []string{"not signed"}},
	}
}

const corpusCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: corpusthings.corpus.example}
spec:
  group: corpus.example
  names: {kind: CorpusThing, plural: corpusthings}
  scope: Namespaced
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]
`

func TestBadInputCorpus(t *testing.T) {
	ns := namespace(t)
	start := time.Now()
	app := "corpus-" + ns[len(ns)-5:]
	root := t.TempDir()
	writeTree(t, root, corpusBaseline(ns))
	if out, code := runRefitCLI(t, ns, "apply", "--dir", root, "--path", "base", "--app", app, "--prune", "--wait", "--health-timeout", "1m"); code != 0 {
		t.Fatalf("baseline apply: exit %d\n%s", code, out)
	}
	// Another app's object, for the ownership case.
	other := t.TempDir()
	writeTree(t, other, map[string]string{"app.yaml": cm("corpus-others", "")})
	if out, code := runRefitCLI(t, ns, "apply", "--dir", other, "--app", "corpus-other-app"); code != 0 {
		t.Fatalf("other app apply: exit %d\n%s", code, out)
	}
	t.Cleanup(func() {
		_ = bed.Client.CoreV1().ConfigMaps("refit-system").Delete(context.Background(), "refit-inventory-corpus-other-app", metav1.DeleteOptions{})
		_ = bed.Client.CoreV1().ConfigMaps("refit-system").Delete(context.Background(), "refit-inventory-"+app, metav1.DeleteOptions{})
	})
	corpusDeployer(t, ns)
	hb := startHookBed(t, ns)
	snap := newSnapshotter(t, ns, app)
	before := snap.take(t)
	if _, ok := before["apps/deployments "+ns+"/corpus-web"]; !ok {
		t.Fatalf("the snapshot misses the baseline Deployment: %v", keys(before))
	}
	keysFile := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keysFile, []byte(newSSHPublicKey(t)), 0o600); err != nil {
		t.Fatal(err)
	}

	// restore puts the baseline back after a case that changed the
	// cluster, so that the next cases are judged on their own.
	restore := func(t *testing.T, after map[string]string) {
		snap.undo(t, before, after)
		if out, code := runRefitCLI(t, ns, "apply", "--dir", root, "--path", "base", "--app", app, "--prune"); code != 0 {
			t.Fatalf("baseline apply: exit %d\n%s", code, out)
		}
		before = snap.take(t)
	}
	n := 0
	for _, tc := range corpusCases(ns) {
		n++
		t.Run(tc.name, func(t *testing.T) {
			out, code := runCorpusCase(t, ns, app, root, keysFile, tc)
			t.Logf("exit %d: %s", code, errorLine(out))
			after := snap.take(t)
			changed := snapshotDiff(before, after)
			if tc.part != "" {
				t.Logf("a case of part %s", tc.part)
			}
			if code == 0 {
				t.Errorf("exit 0, want an error\n%s", firstLines(out, 20))
			}
			if !containsAll(out, tc.want) {
				t.Errorf("output does not say %q\n%s", tc.want, firstLines(out, 20))
			}
			if changed != "" {
				t.Errorf("the cluster changed:\n%s", changed)
				restore(t, after)
			}
		})
	}
	n += corpusConfigCases(t, ns, snap, &before)
	n += corpusWebhookCases(t, hb, snap, &before)
	if n < 40 {
		t.Errorf("the corpus holds %d cases, want at least 40", n)
	}
	t.Logf("%d cases in %s", n, time.Since(start).Round(time.Second))
}

// runCorpusCase writes the case's repository and runs refit on it.
func runCorpusCase(t *testing.T, ns, app, root, keysFile string, tc corpusCase) (string, int) {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, corpusBaseline(ns))
	writeTree(t, dir, tc.files)
	cmd := tc.cmd
	if cmd == "" {
		cmd = "apply"
	}
	path := tc.path
	if path == "" {
		path = "case"
	}
	args := []string{cmd, "--path", path}
	if tc.git != nil {
		args = append(args, "--repo", rawRepo(t, tc.git), "--cache-dir", t.TempDir())
	} else {
		args = append(args, "--dir", dir)
	}
	if cmd != "render" {
		args = append(args, "--app", app)
	}
	// --prune makes an apply that went through despite the bad input
	// delete the baseline: loud in the snapshot. A Git case's repository
	// holds only the case, so there it would prune everything.
	if cmd == "apply" && tc.git == nil {
		args = append(args, "--prune")
	}
	for _, a := range tc.args {
		if a == "KEYS" {
			a = keysFile
		}
		args = append(args, a)
	}
	if cmd == "render" {
		return runCmd(t, execRefit(t, args...))
	}
	return runRefitCLI(t, ns, args...)
}

// corpusDeployer is a ServiceAccount bound to edit in ns only, the
// identity the identity cases act as.
func corpusDeployer(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	dyn := dynamicClient(t)
	objs := []string{
		`{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"corpus-deployer"}}`,
		`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"corpus-deployer-edit"},
		  "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"edit"},
		  "subjects":[{"kind":"ServiceAccount","name":"corpus-deployer","namespace":"` + ns + `"}]}`,
	}
	res := []schema.GroupVersionResource{{Version: "v1", Resource: "serviceaccounts"}, {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}}
	for i, o := range objs {
		var u unstructured.Unstructured
		if err := json.Unmarshal([]byte(o), &u.Object); err != nil {
			t.Fatal(err)
		}
		if _, err := dyn.Resource(res[i]).Namespace(ns).Create(ctx, &u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", u.GetName(), err)
		}
	}
}

// corpusConfigCases starts refit run on bad config files: each is refused
// at start, naming the file and the field, before anything is applied.
func corpusConfigCases(t *testing.T, ns string, snap *snapshotter, before *map[string]string) int {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "corpus-config")
	repo.Commit(map[string]string{"deploy/app.yaml": cm("corpus-config-cm", "")}, "one")
	user, pass := writeTemp(t, srv.Username()), writeTemp(t, srv.Password())
	longSecret, shortSecret := writeTemp(t, "corpus-secret-0123456789"), writeTemp(t, "short")
	app := func(extra string) string {
		return fmt.Sprintf("- name: corpus-cfg\n  source: {url: %s, usernameFile: %s, passwordFile: %s}\n  path: deploy\n  namespace: %s\n%s",
			repo.HTTPURL(), user, pass, ns, extra)
	}
	head := "apiVersion: refit.dev/v1alpha1\nkind: Config\napps:\n"
	// Every error names the file, except one only found while wiring the
	// app (the secret's content), which names the app's hook.
	cases := []struct{ name, config, want string }{
		{"empty config", "", "config is empty"},
		{"two documents", head + app("") + "---\n" + head + app(""), "a second document of kind Config"},
		{"unknown field", head + app("  intervall: 1m\n"), "field intervall not found"},
		{"negative interval", head + app("  interval: -1m\n"), "interval -1m0s"},
		{"zero timeout spelled negative", head + app("  timeout: -1s\n"), "timeout -1s: want a positive duration"},
		{"namespace not a DNS label", strings.Replace(head+app(""), "namespace: "+ns, "namespace: Not_A_Label", 1), `namespace "Not_A_Label"`},
		{"service account not a name", head + app("  serviceAccountName: Deployer/1\n"), `serviceAccountName "Deployer/1"`},
		{"verify from two sources", strings.Replace(head+app(""), "passwordFile: "+pass+"}", "passwordFile: "+pass+", verify: {keysFile: /k, secretRef: {name: k}}}", 1),
			"source.verify: set secretRef or keysFile, not both"},
		{"status over plain http", head + app("  status: {provider: gitea, apiURL: http://gitea.corpus.example, tokenFile: "+pass+"}\n"), "plain http sends the token in clear text"},
		{"webhook secret too short", head + app("  webhook: {provider: gitea, secretFile: "+shortSecret+"}\n"), "hook /hook/corpus-cfg: secret is 5 bytes, want at least 16"},
		{"webhook secret from two sources", head + app("  webhook: {provider: gitea, secretFile: "+longSecret+", secretSecretRef: {name: x}}\n"), "webhook: set secretSecretRef or secretFile, not both"},
	}
	for _, tc := range cases {
		t.Run("config/"+tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(file, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := execRefit(t, "run", "--config", file, "--kubeconfig", bed.Kubeconfig, "--listen", "", "--cache-dir", t.TempDir())
			timer := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Signal(syscall.SIGTERM) })
			out, code := runCmd(t, cmd)
			timer.Stop()
			t.Logf("exit %d: %s", code, errorLine(out))
			if code == 0 || !strings.Contains(out, tc.want) || (!strings.Contains(tc.want, "hook /hook/") && !strings.Contains(out, file)) {
				t.Errorf("refit run: exit %d, want an error naming %s and saying %q\n%s", code, file, tc.want, firstLines(out, 20))
			}
			if changed := snapshotDiff(*before, snap.take(t)); changed != "" {
				t.Errorf("the cluster changed:\n%s", changed)
				*before = snap.take(t)
			}
		})
	}
	return len(cases)
}

// hookBed is refit run with one app and a webhook, started before the
// other cases so that its slow client is cut off while they run.
type hookBed struct {
	ns     string
	svc    *service
	repo   *gitserver.TestRepo
	files  func(v string) map[string]string
	secret string
	// slowDone receives how long the slow client's connection stayed open
	// and what it read.
	slowDone chan slowResult
}

type slowResult struct {
	open time.Duration
	got  string
	err  error
}

const corpusHookSecret = "corpus-hook-secret-0123456789"

// startHookBed starts the service, waits for its first commit, pushes a
// second one without telling it (the poll interval is an hour), and opens
// a client that sends headers and part of a body, then nothing.
func startHookBed(t *testing.T, ns string) *hookBed {
	t.Helper()
	srv := gitserver.New(t, gitserver.DefaultOptions())
	hb := &hookBed{ns: ns, repo: srv.NewRepo(t, "corpus-hooked"), secret: corpusHookSecret, slowDone: make(chan slowResult, 1)}
	hb.files = func(v string) map[string]string {
		return map[string]string{"deploy/app.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: corpus-hooked}\ndata: {v: \"" + v + "\"}\n"}
	}
	hb.repo.Commit(hb.files("1"), "one")
	cfg := fmt.Sprintf(`apiVersion: refit.dev/v1alpha1
kind: Config
apps:
- name: corpus-hooked
  source: {url: %s, usernameFile: %s, passwordFile: %s}
  path: deploy
  interval: 1h
  namespace: %s
  webhook: {provider: gitea, secretFile: %s}
`, hb.repo.HTTPURL(), writeTemp(t, srv.Username()), writeTemp(t, srv.Password()), ns, writeTemp(t, hb.secret))
	hb.svc = startService(t, nil, "--config", writeTemp(t, cfg))
	t.Cleanup(func() {
		_ = bed.Client.CoreV1().ConfigMaps("refit-system").Delete(context.Background(), "refit-inventory-corpus-hooked", metav1.DeleteOptions{})
	})
	waitFor(t, time.Minute, "the first commit applied by refit run", func(ctx context.Context) bool { return hb.applied(ctx) == "1" })
	hb.repo.Commit(hb.files("2"), "two")

	slow, err := net.Dial("tcp", hb.svc.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slow.Close() })
	good := hb.payload(hb.repo.HTTPURL())
	start := time.Now()
	fmt.Fprintf(slow, "POST /hook/corpus-hooked HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Gitea-Signature: %s\r\nContent-Length: %d\r\n\r\n%s",
		hb.sign(hb.secret, good), len(good), good[:10])
	go func() {
		_ = slow.SetReadDeadline(time.Now().Add(2 * time.Minute))
		data, err := io.ReadAll(slow)
		hb.slowDone <- slowResult{open: time.Since(start), got: string(data), err: err}
	}()
	return hb
}

func (hb *hookBed) applied(ctx context.Context) string {
	c, err := bed.Client.CoreV1().ConfigMaps(hb.ns).Get(ctx, "corpus-hooked", metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return c.Data["v"]
}

func (hb *hookBed) payload(repoURL string) []byte {
	return []byte(fmt.Sprintf(`{"ref":"refs/heads/main","repository":{"clone_url":%q}}`, repoURL))
}

func (hb *hookBed) sign(key string, body []byte) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// corpusWebhookCases sends requests that must not make the service poll:
// had one done so, the waiting commit would be applied and the snapshot
// would show it. A last, valid hook proves the commit was waiting.
func corpusWebhookCases(t *testing.T, hb *hookBed, snap *snapshotter, before *map[string]string) int {
	*before = snap.take(t)
	url := "http://" + hb.svc.addr + "/hook/corpus-hooked"
	good := hb.payload(hb.repo.HTTPURL())
	other := strings.Replace(hb.repo.HTTPURL(), "corpus-hooked", "corpus-elsewhere", 1)
	cases := []struct {
		name     string
		method   string
		path     string
		body     []byte
		header   map[string]string
		wantCode int
	}{
		{"unsigned", "POST", "", good, map[string]string{"X-Gitea-Signature": ""}, http.StatusUnauthorized},
		{"signed with another secret", "POST", "", good, map[string]string{"X-Gitea-Signature": hb.sign("another-secret-0123456789", good)}, http.StatusForbidden},
		{"signature of another body", "POST", "", good, map[string]string{"X-Gitea-Signature": hb.sign(hb.secret, hb.payload(other))}, http.StatusForbidden},
		{"malformed signature", "POST", "", good, map[string]string{"X-Gitea-Signature": "not-hex"}, http.StatusBadRequest},
		{"oversized", "POST", "", append(good[:len(good)-1:len(good)-1], []byte(`,"pad":"`+strings.Repeat("x", 2<<20)+`"}`)...), nil, http.StatusRequestEntityTooLarge},
		{"misrouted to another repository", "POST", "", hb.payload(other), nil, http.StatusOK},
		{"naming no repository", "POST", "", []byte(`{"ref":"refs/heads/main"}`), nil, http.StatusOK},
		{"repository only in homepage", "POST", "", []byte(fmt.Sprintf(`{"repository":{"clone_url":%q,"homepage":%q}}`, other, hb.repo.HTTPURL())), nil, http.StatusOK},
		{"malformed payload", "POST", "", []byte(`{"repository":`), nil, http.StatusBadRequest},
		{"unknown app path", "POST", "/hook/corpus-nope", good, nil, http.StatusNotFound},
		{"GET", "GET", "", nil, nil, http.StatusMethodNotAllowed},
		{"huge header", "POST", "", good, map[string]string{"X-Padding": strings.Repeat("x", 128<<10)}, http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tc := range cases {
		t.Run("webhook/"+tc.name, func(t *testing.T) {
			path := tc.path
			if path == "" {
				path = "/hook/corpus-hooked"
			}
			req, err := http.NewRequest(tc.method, "http://"+hb.svc.addr+path, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Gitea-Signature", hb.sign(hb.secret, tc.body))
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			if req.Header.Get("X-Gitea-Signature") == "" {
				req.Header.Del("X-Gitea-Signature")
			}
			req.Header.Set("X-Gitea-Delivery", fmt.Sprint(time.Now().UnixNano()))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tc.method, path, err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("%d %s", resp.StatusCode, strings.TrimSpace(string(msg)))
			if resp.StatusCode != tc.wantCode {
				t.Errorf("status %d (%s), want %d", resp.StatusCode, strings.TrimSpace(string(msg)), tc.wantCode)
			}
			// A poll it triggered may show here or in a later case, and
			// surely in "none of them polled" below.
			if changed := snapshotDiff(*before, snap.take(t)); changed != "" {
				t.Errorf("the cluster changed:\n%s", changed)
				*before = snap.take(t)
			}
		})
	}
	t.Run("webhook/slow body", func(t *testing.T) {
		var res slowResult
		select {
		case res = <-hb.slowDone:
		case <-time.After(time.Minute):
			t.Fatal("the slow client's connection is still open")
		}
		var ne net.Error
		if errors.As(res.err, &ne) && ne.Timeout() {
			t.Fatalf("the slow client's connection stayed open for %s", res.open.Round(time.Second))
		}
		t.Logf("cut off after %s: %q", res.open.Round(100*time.Millisecond), firstLines(res.got, 1))
		if strings.Contains(res.got, "202 Accepted") {
			t.Errorf("the slow request was handled: %q", res.got)
		}
	})
	// A poll, had one been triggered, takes well under two seconds here.
	t.Run("webhook/none of them polled", func(t *testing.T) {
		consistentlyUnchanged(t, snap, *before, 2*time.Second)
	})

	// A valid delivery applies the waiting commit; the same delivery
	// replayed after another push is acknowledged and ignored.
	send := func(body []byte) int {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("X-Gitea-Signature", hb.sign(hb.secret, body))
		req.Header.Set("X-Gitea-Delivery", "corpus-delivery-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("webhook: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := send(good); code != http.StatusAccepted {
		t.Fatalf("valid webhook: status %d, want 202", code)
	}
	waitFor(t, 30*time.Second, "the waiting commit applied after a valid webhook", func(ctx context.Context) bool { return hb.applied(ctx) == "2" })
	hb.repo.Commit(hb.files("3"), "three")
	*before = snap.take(t)
	t.Run("webhook/replayed delivery", func(t *testing.T) {
		if code := send(good); code != http.StatusOK {
			t.Errorf("replayed delivery: status %d, want 200", code)
		}
		consistentlyUnchanged(t, snap, *before, 2*time.Second)
	})
	return len(cases) + 2
}

// consistentlyUnchanged checks for d that the snapshot stays as before.
func consistentlyUnchanged(t *testing.T, snap *snapshotter, before map[string]string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if changed := snapshotDiff(before, snap.take(t)); changed != "" {
			t.Fatalf("the cluster changed:\n%s", changed)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// snapshotter lists every object refit could have written for the test:
// all objects of the namespace, the app's inventory, and anything named
// corpus-* anywhere (cluster-scoped objects, other namespaces).
type snapshotter struct {
	dyn       dynamic.Interface
	ns, app   string
	resources []schema.GroupVersionResource
	volatile  map[string]bool
}

func newSnapshotter(t *testing.T, ns, app string) *snapshotter {
	t.Helper()
	lists, err := bed.Client.Discovery().ServerPreferredResources()
	if len(lists) == 0 {
		t.Fatalf("discovery: %v", err)
	}
	s := &snapshotter{dyn: dynamicClient(t), ns: ns, app: app, volatile: map[string]bool{}}
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !contains(r.Verbs, "list") {
				continue
			}
			switch r.Name {
			case "events", "leases", "componentstatuses", "nodes", "endpoints", "endpointslices":
				continue // written by the control plane, never by refit
			}
			s.resources = append(s.resources, gv.WithResource(r.Name))
		}
	}
	// Controllers and kwok write these objects' status and metadata; what
	// refit would change is their spec, which is kept in the hash.
	for _, r := range []string{"pods", "replicasets", "deployments", "serviceaccounts", "namespaces"} {
		s.volatile[r] = true
	}
	return s
}

// take returns "group/resource namespace/name" → a fingerprint of what
// refit could change: the UID and the object without status and the
// fields only the API server and controllers write.
func (s *snapshotter) take(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	ctx := context.Background()
	for _, r := range s.resources {
		list, err := s.dyn.Resource(r).List(ctx, metav1.ListOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) {
				continue
			}
			t.Fatalf("snapshot: list %s: %v", r, err)
		}
		for i := range list.Items {
			o := &list.Items[i]
			ns, name := o.GetNamespace(), o.GetName()
			mine := ns == s.ns || strings.HasPrefix(name, "corpus-") || strings.Contains(name, "refit-inventory-corpus") ||
				(ns == "refit-system" && name == "refit-inventory-"+s.app)
			if !mine {
				continue
			}
			out[resourceKey(r)+" "+ns+"/"+name] = s.fingerprint(r.Resource, o)
		}
	}
	return out
}

func (s *snapshotter) fingerprint(resource string, o *unstructured.Unstructured) string {
	c := o.DeepCopy()
	unstructured.RemoveNestedField(c.Object, "status")
	unstructured.RemoveNestedField(c.Object, "metadata", "managedFields")
	if s.volatile[resource] {
		for _, f := range []string{"resourceVersion", "generation"} {
			unstructured.RemoveNestedField(c.Object, "metadata", f)
		}
		unstructured.RemoveNestedField(c.Object, "metadata", "annotations", "deployment.kubernetes.io/revision")
		unstructured.RemoveNestedField(c.Object, "secrets")
	}
	data, _ := json.Marshal(c.Object)
	sum := sha256.Sum256(data)
	return string(o.GetUID()) + " " + hex.EncodeToString(sum[:8])
}

// undo deletes what a skipped case created, so the next cases start from
// the baseline again.
func (s *snapshotter) undo(t *testing.T, before, after map[string]string) {
	t.Helper()
	for k := range after {
		if _, ok := before[k]; ok {
			continue
		}
		res, nsName, _ := strings.Cut(k, " ")
		ns, name, _ := strings.Cut(nsName, "/")
		for _, r := range s.resources {
			if resourceKey(r) != res {
				continue
			}
			var err error
			if ns == "" {
				err = s.dyn.Resource(r).Delete(context.Background(), name, metav1.DeleteOptions{})
			} else {
				err = s.dyn.Resource(r).Namespace(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
			}
			if err != nil && !apierrors.IsNotFound(err) {
				t.Logf("undo %s: %v", k, err)
			}
		}
	}
}

// snapshotDiff lists what was added, removed or changed; "" when nothing.
func snapshotDiff(before, after map[string]string) string {
	var lines []string
	for k, v := range after {
		switch w, ok := before[k]; {
		case !ok:
			lines = append(lines, "+ "+k)
		case w != v:
			lines = append(lines, "~ "+k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			lines = append(lines, "- "+k)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// resourceKey is "group/resource", or "resource" for the core group.
func resourceKey(r schema.GroupVersionResource) string {
	if r.Group == "" {
		return r.Resource
	}
	return r.Group + "/" + r.Resource
}

// execRefit is the refit binary with args, for commands without a cluster.
func execRefit(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	return exec.Command(refit(t), args...)
}

func dynamicClient(t *testing.T) dynamic.Interface {
	t.Helper()
	dyn, err := dynamic.NewForConfig(bed.Config)
	if err != nil {
		t.Fatal(err)
	}
	return dyn
}

// writeTree writes files under dir; see corpusCase.files for FIFOs and
// symlinks.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case content == "\x00fifo":
			err = syscall.Mkfifo(p, 0o644)
		case strings.HasPrefix(content, "\x00symlink:"):
			err = os.Symlink(strings.TrimPrefix(content, "\x00symlink:"), p)
		default:
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// rawEntry is one entry of a Git tree written object by object, so that
// trees Git itself would never make (two entries of one name) can be
// built.
type rawEntry struct {
	name    string
	mode    filemode.FileMode
	content string     // a blob's content, a symlink's target
	sub     []rawEntry // a tree's entries
}

// rawRepo builds a repository whose main branch holds entries, and
// returns its file:// URL.
func rawRepo(t *testing.T, entries []rawEntry) string {
	t.Helper()
	dir := t.TempDir()
	r, err := git.PlainInit(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	tree := writeRawTree(t, r.Storer, entries)
	sig := object.Signature{Name: "corpus", Email: "corpus@example.com", When: time.Now()}
	commit := &object.Commit{Author: sig, Committer: sig, Message: "corpus", TreeHash: tree}
	obj := r.Storer.NewEncodedObject()
	if err := commit.Encode(obj); err != nil {
		t.Fatal(err)
	}
	h, err := r.Storer.SetEncodedObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Storer.SetReference(plumbing.NewHashReference("refs/heads/main", h)); err != nil {
		t.Fatal(err)
	}
	if err := r.Storer.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, "refs/heads/main")); err != nil {
		t.Fatal(err)
	}
	return "file://" + dir
}

func writeRawTree(t *testing.T, s storer.EncodedObjectStorer, entries []rawEntry) plumbing.Hash {
	t.Helper()
	var tree object.Tree
	for _, e := range entries {
		var h plumbing.Hash
		if e.mode == filemode.Dir {
			h = writeRawTree(t, s, e.sub)
		} else {
			obj := s.NewEncodedObject()
			obj.SetType(plumbing.BlobObject)
			w, _ := obj.Writer()
			_, _ = w.Write([]byte(e.content))
			_ = w.Close()
			var err error
			if h, err = s.SetEncodedObject(obj); err != nil {
				t.Fatal(err)
			}
		}
		tree.Entries = append(tree.Entries, object.TreeEntry{Name: e.name, Mode: e.mode, Hash: h})
	}
	obj := s.NewEncodedObject()
	if err := tree.Encode(obj); err != nil {
		t.Fatal(err)
	}
	h, err := s.SetEncodedObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func newSSHPublicKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(ssh.MarshalAuthorizedKey(k))
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// errorLine is the line of refit's output that says what failed.
func errorLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "refit: ") || strings.Contains(l, "level=ERROR") {
			return l
		}
	}
	return lines[len(lines)-1]
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = append(lines[:n], "…")
	}
	return strings.Join(lines, "\n")
}
