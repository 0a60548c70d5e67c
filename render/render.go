package render

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	securefs "github.com/fluxcd/pkg/kustomize/filesys"
	"golang.org/x/sync/semaphore"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/openapi"
)

var (
	// ErrOutsideRoot: a path, or a symlink, leads outside the repository.
	ErrOutsideRoot = errors.New("outside the repository root")
	// ErrNotAllowed: a remote base or file, or a Helm chart, without the
	// option that allows it.
	ErrNotAllowed = errors.New("not allowed")
)

// originAnnotation is where kustomize records the file an object came from
// when buildMetadata lists originAnnotations.
const originAnnotation = "config.kubernetes.io/origin"

// builds orders kustomize builds in the process. Kustomize keeps the
// OpenAPI schema (set by a kustomization's openapi field) in package
// state of kyaml, so a build that sets one must run alone
// (kubernetes-sigs/kustomize#3659; Flux serialises every build for it).
// Every other build runs in parallel with the rest: it takes one unit,
// a schema-setting build takes them all. It is a package variable,
// against house style, because what it guards is too; a semaphore rather
// than a mutex so that a render waiting for it can be cancelled.
var builds = semaphore.NewWeighted(allBuilds)

const allBuilds = 1 << 30

// Options say what to render.
type Options struct {
	// Root is the repository checkout. Nothing outside it is read.
	Root string
	// Path is the directory to build, relative to Root ("" or "." for Root).
	Path string
	// AllowRemoteBases lets kustomizations name remote bases and files
	// over https. Off by default: a build then touches no network.
	AllowRemoteBases bool
	// Limits bound each file the build reads; zero fields take
	// DefaultLimits.
	Limits Limits
	// Reads, when set, records the paths the render consulted.
	Reads *Reads

	// beforeBuild, when set (tests only), runs once the build holds its
	// share of the build lock, before kustomize starts.
	beforeBuild func()
}

// Object is one rendered object and the file it came from.
type Object struct {
	*unstructured.Unstructured
	// File is the source file, relative to Root and slash-separated; for a
	// generated object (configMapGenerator…) the kustomization that
	// generated it. Empty when kustomize could not tell (remote bases).
	File string
}

// Render builds opts.Path and returns its objects in kustomize's output
// order (kustomize build's default "legacy" order unless the kustomization
// sets sortOptions), field for field what kustomize build prints.
func Render(ctx context.Context, opts Options) ([]Object, error) {
	root, dir, err := locate(opts.Root, opts.Path)
	if err != nil {
		return nil, err
	}
	rel := relTo(root, dir)
	g := &guard{ctx: ctx, root: root, lim: opts.Limits.withDefaults(), allowRemote: opts.AllowRemoteBases, reads: opts.Reads}
	// The build directory stands for all below it: a folder without a
	// kustomization is built from every file in it.
	opts.Reads.add(root, dir)
	if opts.AllowRemoteBases {
		opts.Reads.doubt("remote bases allowed")
	}
	kfile, content, userOrigin, err := topKustomization(g, dir)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", rel, err)
	}
	disk, err := secureFS(root, opts.AllowRemoteBases)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", rel, err)
	}
	fsys := &guardFS{g: g, disk: disk, file: filepath.Join(dir, kfile), content: content}
	m, err := build(ctx, fsys, dir, opts.beforeBuild)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", rel, err)
	}
	objs, err := toObjects(m, root, dir, userOrigin)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", rel, err)
	}
	return objs, nil
}

// locate resolves the root and the build directory, following symlinks,
// and refuses a directory outside the root.
func locate(root, path string) (string, string, error) {
	if root == "" {
		return "", "", errors.New("render: root not set")
	}
	r, err := filepath.Abs(root)
	if err == nil {
		r, err = filepath.EvalSymlinks(r)
	}
	if err != nil {
		return "", "", fmt.Errorf("render: root: %w", err)
	}
	p := filepath.FromSlash(path)
	if p == "" {
		p = "."
	}
	if filepath.IsAbs(p) || !filepath.IsLocal(p) {
		return "", "", fmt.Errorf("render %s: %w", path, ErrOutsideRoot)
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(r, p))
	if err != nil {
		return "", "", fmt.Errorf("render %s: %w", path, err)
	}
	if !within(r, dir) {
		return "", "", fmt.Errorf("render %s: resolves to %s: %w", path, dir, ErrOutsideRoot)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", "", fmt.Errorf("render %s: not a directory", path)
	}
	return r, dir, nil
}

func secureFS(root string, allowRemote bool) (filesys.FileSystem, error) {
	if allowRemote {
		// Remote bases are cloned under the temporary directory: allow it.
		return securefs.MakeFsOnDiskSecureBuild(root)
	}
	return securefs.MakeFsOnDiskSecure(root)
}

// build runs krusty aside and returns when it is done or when ctx ends.
// Kustomize takes no context: an abandoned build stops at its next file
// read (the guard checks the context), and its share of the build lock
// is released only then, so a schema-setting build never overlaps it.
func build(ctx context.Context, fsys *guardFS, dir string, before func()) (resmap.ResMap, error) {
	weight := int64(1)
	if fsys.g.exclusive {
		weight = allBuilds
	}
	if err := builds.Acquire(ctx, weight); err != nil {
		return nil, err
	}
	type result struct {
		m   resmap.ResMap
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer builds.Release(weight)
		if before != nil {
			before()
		}
		m, err := run(fsys, dir)
		done <- result{m, err}
	}()
	select {
	case r := <-done:
		return r.m, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run runs krusty and turns its panics into errors: kustomize panics on
// some malformed input. A refusal of the guard is the error, whatever
// kustomize made of it.
func run(fsys *guardFS, dir string) (m resmap.ResMap, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("kustomize panicked: %v", r)
		}
		if fsys.g.refused != nil {
			m, err = nil, fsys.g.refused
		}
	}()
	if fsys.g.exclusive {
		// Each such build starts from the built-in schema and leaves no
		// schema behind, so its openapi field cannot leak into the next.
		openapi.ResetOpenAPI()
		defer openapi.ResetOpenAPI()
	}
	k := krusty.MakeKustomizer(&krusty.Options{
		// "unspecified" means the legacy order unless the kustomization
		// sets sortOptions: what kustomize build does by default.
		Reorder:          krusty.ReorderOptionUnspecified,
		LoadRestrictions: types.LoadRestrictionsRootOnly,
		PluginConfig:     types.DisabledPluginConfig(),
	})
	fsys.g.building = true
	m, err = k.Run(fsys, dir)
	if err != nil {
		return nil, explain(err)
	}
	return m, nil
}

// explain marks the secure filesystem's refusals as ErrOutsideRoot.
func explain(err error) error {
	var ce *securefs.ConstraintError
	if errors.As(err, &ce) || strings.Contains(err.Error(), "fs-security-constraint") {
		return fmt.Errorf("%w: %w", err, ErrOutsideRoot)
	}
	return err
}

func toObjects(m resmap.ResMap, root, dir string, keepOrigin bool) ([]Object, error) {
	objs := make([]Object, 0, m.Size())
	for _, res := range m.Resources() {
		origin, err := res.GetOrigin()
		if err != nil {
			return nil, fmt.Errorf("%s: origin: %w", res.CurId(), err)
		}
		data, err := res.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", res.CurId(), err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			return nil, fmt.Errorf("%s: %w", res.CurId(), err)
		}
		if !keepOrigin {
			stripOrigin(u)
		}
		var file string
		if origin != nil && origin.Repo == "" {
			src := origin.Path
			if src == "" {
				src = origin.ConfiguredIn
			}
			if src != "" {
				file = relTo(root, filepath.Join(dir, filepath.FromSlash(src)))
			}
		}
		objs = append(objs, Object{Unstructured: u, File: file})
	}
	return objs, nil
}

func stripOrigin(u *unstructured.Unstructured) {
	ann := u.GetAnnotations()
	if _, ok := ann[originAnnotation]; !ok {
		return
	}
	delete(ann, originAnnotation)
	if len(ann) == 0 {
		unstructured.RemoveNestedField(u.Object, "metadata", "annotations")
		return
	}
	u.SetAnnotations(ann)
}

func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && filepath.IsLocal(rel)
}

func relTo(root, p string) string {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return p
	}
	return filepath.ToSlash(rel)
}
