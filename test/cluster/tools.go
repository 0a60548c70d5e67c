package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/refit-gitops/refit/test/toolcache"
)

// Versions of the binaries the local cluster runs. Each is built once from the
// Go module proxy and cached under a folder named after it.
const (
	KubernetesVersion = "v1.37.2"
	EtcdVersion       = "v3.6.6"
	KwokVersion       = "v0.8.0"
)

// Tools are the absolute paths of the cached cluster binaries.
type Tools struct {
	KubeAPIServer         string
	KubeControllerManager string
	KubeScheduler         string
	Kubectl               string
	Kubemark              string
	Etcd                  string
	Kwok                  string
	Kwokctl               string
}

// CacheDir is the folder refit owns for built tools and cluster state
// (toolcache.Dir).
func CacheDir() (string, error) { return toolcache.Dir() }

// toolGroup is a set of binaries built together by one go command.
type toolGroup struct {
	name     string // folder name under tools/, keyed by version
	binaries []string
	estimate string // cold build time on 2 cores, for the progress line
	build    func(ctx context.Context, b *builder, outDir string) error
}

func toolGroups() []toolGroup {
	return []toolGroup{
		{
			name:     "kubernetes-" + KubernetesVersion,
			binaries: []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubemark"},
			estimate: "about 10 minutes",
			build:    buildKubernetes,
		},
		{
			name:     "etcd-" + EtcdVersion,
			binaries: []string{"etcd"},
			estimate: "about 1 minute",
			build:    buildEtcd,
		},
		{
			name:     "kwok-" + KwokVersion,
			binaries: []string{"kwok", "kwokctl"},
			estimate: "about 2 minutes",
			build:    buildKwok,
		},
	}
}

// EnsureTools builds whatever cluster binary is missing from the cache and
// returns the paths of all of them. Concurrent callers (parallel test
// binaries, make targets) wait on a file lock instead of building twice.
// Progress goes to log.
func EnsureTools(ctx context.Context, cacheDir string, log io.Writer) (*Tools, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, errors.New("the go toolchain is not on PATH: it is needed to build the cluster binaries from the module proxy")
	}
	toolsDir := filepath.Join(cacheDir, "tools")
	if err := os.MkdirAll(toolsDir, 0o755); err != nil {
		return nil, fmt.Errorf("create tools cache: %w", err)
	}
	b := &builder{goBin: goBin, workDir: filepath.Join(toolsDir, "build")}
	paths := map[string]string{}
	for _, g := range toolGroups() {
		dir := filepath.Join(toolsDir, g.name)
		if err := ensureGroup(ctx, b, g, dir, log); err != nil {
			return nil, err
		}
		for _, bin := range g.binaries {
			paths[bin] = filepath.Join(dir, bin)
		}
	}
	return &Tools{
		KubeAPIServer:         paths["kube-apiserver"],
		KubeControllerManager: paths["kube-controller-manager"],
		KubeScheduler:         paths["kube-scheduler"],
		Kubectl:               paths["kubectl"],
		Kubemark:              paths["kubemark"],
		Etcd:                  paths["etcd"],
		Kwok:                  paths["kwok"],
		Kwokctl:               paths["kwokctl"],
	}, nil
}

func groupComplete(dir string, g toolGroup) bool {
	for _, bin := range g.binaries {
		if fi, err := os.Stat(filepath.Join(dir, bin)); err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

func ensureGroup(ctx context.Context, b *builder, g toolGroup, dir string, log io.Writer) error {
	if groupComplete(dir, g) {
		return nil
	}
	unlock, err := toolcache.Lock(ctx, dir+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	if groupComplete(dir, g) { // built by another process while we waited
		return nil
	}
	fmt.Fprintf(log, "building %s (%s), first time only, %s on 2 cores\n", g.name, strings.Join(g.binaries, ", "), g.estimate)
	start := time.Now()
	// Build into a fresh folder and rename it into place, so an interrupted
	// build never leaves a half-filled cache entry behind.
	tmp := dir + ".partial"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("%s: %w", g.name, err)
	}
	if err := g.build(ctx, b, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("build %s: %w", g.name, err)
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("%s: %w", g.name, err)
	}
	fmt.Fprintf(log, "built %s in %s\n", g.name, time.Since(start).Round(time.Second))
	return nil
}

// builder runs the go command in throw-away wrapper modules.
type builder struct {
	goBin   string
	workDir string
}

// run runs go with args in dir. Its output goes to a log file beside the
// wrapper module; on failure the error carries the last lines of it.
func (b *builder) run(ctx context.Context, dir string, env []string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, b.goBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -mod=mod"))
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	logPath := filepath.Join(dir, "build.log")
	_ = os.WriteFile(logPath, append(stdout.Bytes(), stderr.Bytes()...), 0o644)
	if err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s(full log: %s)", strings.Join(args, " "), err, toolcache.LastLines(stderr.String(), 20), logPath)
	}
	return stdout.Bytes(), nil
}

// wrapperModule writes a module that requires mod and returns its folder.
func (b *builder) wrapperModule(name, goMod string) (string, error) {
	dir := filepath.Join(b.workDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(goMod), 0o644); err != nil {
		return "", err
	}
	return dir, nil
}

// stagingReplace matches the lines of k8s.io/kubernetes' go.mod that point a
// staging module (k8s.io/api, k8s.io/client-go, …) at its in-tree copy.
var stagingReplace = regexp.MustCompile(`(?m)^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/`)

// buildKubernetes builds the control plane, kubectl and kubemark. The
// kubernetes module replaces every staging module with a folder of its own
// tree; a module that requires it must replace them with the published
// v0.X.Y versions instead.
func buildKubernetes(ctx context.Context, b *builder, outDir string) error {
	dl, err := b.download(ctx, "k8s.io/kubernetes@"+KubernetesVersion)
	if err != nil {
		return err
	}
	upstream, err := os.ReadFile(dl.GoMod)
	if err != nil {
		return err
	}
	staging := "v0." + strings.TrimPrefix(KubernetesVersion, "v1.")
	var mod strings.Builder
	fmt.Fprintf(&mod, "module refit.local/kubernetes-tools\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n", KubernetesVersion)
	matches := stagingReplace.FindAllStringSubmatch(string(upstream), -1)
	if len(matches) == 0 {
		return fmt.Errorf("no staging modules found in %s", dl.GoMod)
	}
	for _, m := range matches {
		fmt.Fprintf(&mod, "\t%s => %s %s\n", m[1], m[1], staging)
	}
	mod.WriteString(")\n")
	dir, err := b.wrapperModule("kubernetes-"+KubernetesVersion, mod.String())
	if err != nil {
		return err
	}
	minor := strings.Split(strings.TrimPrefix(KubernetesVersion, "v"), ".")
	pkg := "k8s.io/component-base/version"
	ldflags := fmt.Sprintf("-s -w -X %[1]s.gitVersion=%[2]s -X %[1]s.gitMajor=%[3]s -X %[1]s.gitMinor=%[4]s -X %[1]s.gitTreeState=clean",
		pkg, KubernetesVersion, minor[0], minor[1])
	args := []string{"build", "-ldflags", ldflags, "-o", outDir + string(filepath.Separator)}
	for _, cmd := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubemark"} {
		args = append(args, "k8s.io/kubernetes/cmd/"+cmd)
	}
	_, err = b.run(ctx, dir, nil, args...)
	return err
}

// buildEtcd builds etcd from its server module, whose root is the main package.
func buildEtcd(ctx context.Context, b *builder, outDir string) error {
	mod := fmt.Sprintf("module refit.local/etcd-tools\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n", EtcdVersion)
	dir, err := b.wrapperModule("etcd-"+EtcdVersion, mod)
	if err != nil {
		return err
	}
	_, err = b.run(ctx, dir, nil, "build", "-ldflags", "-s -w", "-o", filepath.Join(outDir, "etcd"), "go.etcd.io/etcd/server/v3")
	return err
}

// buildKwok installs kwok and kwokctl; their module has no replace
// directives, so go install at a version works without a wrapper.
func buildKwok(ctx context.Context, b *builder, outDir string) error {
	if err := os.MkdirAll(b.workDir, 0o755); err != nil {
		return err
	}
	_, err := b.run(ctx, b.workDir, []string{"GOBIN=" + outDir}, "install", "-ldflags", "-s -w",
		"sigs.k8s.io/kwok/cmd/kwok@"+KwokVersion, "sigs.k8s.io/kwok/cmd/kwokctl@"+KwokVersion)
	return err
}

type moduleDownload struct {
	GoMod string
	Dir   string
	Error string
}

func (b *builder) download(ctx context.Context, modVersion string) (*moduleDownload, error) {
	if err := os.MkdirAll(b.workDir, 0o755); err != nil {
		return nil, err
	}
	out, err := b.run(ctx, b.workDir, nil, "mod", "download", "-json", modVersion)
	if err != nil {
		return nil, err
	}
	var dl moduleDownload
	if err := json.Unmarshal(out, &dl); err != nil {
		return nil, fmt.Errorf("go mod download %s: %w", modVersion, err)
	}
	if dl.Error != "" {
		return nil, fmt.Errorf("go mod download %s: %s", modVersion, dl.Error)
	}
	return &dl, nil
}
