package render

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"
)

// checker walks the kustomizations a build will load, before kustomize
// runs, and refuses any path that leaves the root (by "..", an absolute
// path or a symlink), any remote base or file unless allowed, and Helm.
// Kustomize would fetch a remote base (running git) before the secure
// filesystem could refuse to read the clone: refusing up front keeps a
// build off the network. The secure filesystem stays as the second line.
type checker struct {
	g           *guard
	root        string
	allowRemote bool
	seen        map[string]bool
	// openAPI: a kustomization sets openapi (a schema for the build).
	openAPI bool
}

func newChecker(g *guard) *checker {
	return &checker{g: g, root: g.root, allowRemote: g.allowRemote, seen: map[string]bool{}}
}

// check checks the kustomization in dir, if any, and those it loads.
func (c *checker) check(dir string) error {
	if c.seen[dir] {
		return nil
	}
	c.seen[dir] = true
	name := findKustomization(dir)
	if name == "" {
		return nil // kustomize reports a base without a kustomization
	}
	data, err := c.g.read(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	return c.checkContent(dir, name, data)
}

// refKind says what a field's entries may be.
type refKind int

const (
	fileRef    refKind = iota // a file
	dirRef                    // a file or a kustomization directory
	inlineRef                 // a file, a directory, or inline YAML
	keyFileRef                // "key=file" or "file"
)

func (c *checker) checkContent(dir, name string, data []byte) error {
	file := relTo(c.root, filepath.Join(dir, name))
	var k types.Kustomization
	if err := yaml.Unmarshal(data, &k); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if len(k.HelmCharts) > 0 || len(k.HelmChartInflationGenerator) > 0 || k.HelmGlobals != nil {
		return fmt.Errorf("%s: helm charts: %w (refit runs no helm)", file, ErrNotAllowed)
	}
	refs := map[refKind][]string{
		dirRef:    append(append(append([]string{}, k.Resources...), k.Bases...), k.Components...),
		fileRef:   append(append([]string{}, k.Crds...), k.Configurations...),
		inlineRef: append(append(append([]string{}, k.Generators...), k.Transformers...), k.Validators...),
	}
	for _, p := range k.PatchesStrategicMerge {
		refs[inlineRef] = append(refs[inlineRef], string(p))
	}
	for _, p := range append(append([]types.Patch{}, k.Patches...), k.PatchesJson6902...) {
		refs[fileRef] = append(refs[fileRef], p.Path)
	}
	for _, r := range k.Replacements {
		refs[fileRef] = append(refs[fileRef], r.Path)
	}
	if p := k.OpenAPI["path"]; p != "" {
		refs[fileRef] = append(refs[fileRef], p)
	}
	if len(k.OpenAPI) > 0 {
		c.openAPI = true
	}
	for _, g := range append(generatorArgs(k.ConfigMapGenerator), secretArgs(k.SecretGenerator)...) {
		refs[keyFileRef] = append(refs[keyFileRef], g.FileSources...)
		refs[fileRef] = append(append(refs[fileRef], g.EnvSources...), g.EnvSource)
	}
	for _, kind := range []refKind{fileRef, keyFileRef, inlineRef, dirRef} {
		for _, ref := range refs[kind] {
			if err := c.checkRef(dir, file, kind, ref); err != nil {
				return err
			}
		}
	}
	return nil
}

func generatorArgs(a []types.ConfigMapArgs) []types.KvPairSources {
	out := make([]types.KvPairSources, 0, len(a))
	for _, g := range a {
		out = append(out, g.KvPairSources)
	}
	return out
}

func secretArgs(a []types.SecretArgs) []types.KvPairSources {
	out := make([]types.KvPairSources, 0, len(a))
	for _, g := range a {
		out = append(out, g.KvPairSources)
	}
	return out
}

func (c *checker) checkRef(dir, file string, kind refKind, ref string) error {
	switch {
	case ref == "":
		return nil
	case kind == inlineRef && (strings.Contains(ref, "\n") || strings.Contains(ref, ": ")):
		return nil // inline YAML, not a path
	case kind == keyFileRef:
		if _, p, ok := strings.Cut(ref, "="); ok {
			ref = p
		}
	}
	if isRemote(ref) {
		l := strings.ToLower(ref)
		switch {
		case strings.Contains(l, "file://"):
			// A "remote" on the local disk would read outside the root.
			return fmt.Errorf("%s: %q: %w (a file:// clone reads outside the repository)", file, ref, ErrNotAllowed)
		case !c.allowRemote:
			return fmt.Errorf("%s: remote %q: %w (set AllowRemoteBases to fetch remote bases)", file, ref, ErrNotAllowed)
		case !strings.HasPrefix(strings.TrimPrefix(l, "git::"), "https://"):
			// http:// and git:// can be read and rewritten on the way;
			// ssh needs keys the build does not have. The github.com/
			// shorthand is refused too, so the scheme is always written.
			return fmt.Errorf("%s: remote %q: %w (only https:// remotes, written in full)", file, ref, ErrNotAllowed)
		}
		return nil
	}
	if filepath.IsAbs(ref) {
		return fmt.Errorf("%s: %q is an absolute path: %w", file, ref, ErrOutsideRoot)
	}
	p := filepath.Join(dir, filepath.FromSlash(ref))
	if !within(c.root, p) {
		return fmt.Errorf("%s: %q: %w", file, ref, ErrOutsideRoot)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return nil // missing: kustomize says so, naming the file
	}
	if !within(c.root, real) {
		return fmt.Errorf("%s: %q is a symlink to %s: %w", file, ref, real, ErrOutsideRoot)
	}
	if kind != fileRef && kind != keyFileRef {
		if fi, err := os.Stat(real); err == nil && fi.IsDir() {
			return c.check(real)
		}
	}
	return nil
}

// isRemote says whether kustomize would fetch ref rather than read it from
// disk: a URL, a go-getter "git::" URL, an SCP-like user@host:path, or the
// github.com shorthand (kustomize's own test is internal to it).
func isRemote(ref string) bool {
	l := strings.TrimPrefix(strings.ToLower(ref), "git::")
	if strings.Contains(l, "://") || strings.HasPrefix(l, "github.com/") || strings.HasPrefix(l, "github.com:") {
		return true
	}
	at := strings.Index(l, "@")
	return at > 0 && !strings.Contains(l[:at], "/") && strings.Contains(l[at:], ":")
}
