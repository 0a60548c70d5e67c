package render

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	securefs "github.com/fluxcd/pkg/kustomize/filesys"
	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	syaml "sigs.k8s.io/yaml"
)

// ErrNotRegular: a file the build would read is a FIFO, a device, a
// socket: opening a FIFO blocks until someone writes to it, reading a
// device may never end.
var ErrNotRegular = errors.New("not a regular file")

// guard performs every file read of one render, the package's own and
// kustomize's: inside the root (links resolved), regular files only,
// within the Limits, and not after the render's context has ended.
// It keeps the context because kustomize's filesystem interface has no
// way to pass one, and the first refusal because kustomize wraps errors
// in ways errors.Is does not always see through.
type guard struct {
	ctx         context.Context
	root        string
	lim         Limits
	allowRemote bool
	// exclusive is true when the build holds the process-wide build lock
	// alone and may set kustomize's OpenAPI schema (see build).
	exclusive bool
	// building is true once kustomize runs: the reads before are the
	// package's own (the checker reads kustomizations with openapi).
	building bool
	refused  error
	// reads records what the build consulted (nil: nothing is recorded).
	reads *Reads
}

// read reads the file at p (absolute) for the build.
func (g *guard) read(p string) ([]byte, error) {
	data, err := g.readChecked(p)
	if err != nil && g.refused == nil && isRefusal(err) {
		g.refused = err
	}
	return data, err
}

func (g *guard) readChecked(p string) ([]byte, error) {
	if err := g.ctx.Err(); err != nil {
		return nil, err
	}
	rel := relTo(g.root, p)
	g.reads.add(g.root, p)
	if slices.Contains(konfig.RecognizedKustomizationFileNames(), filepath.Base(p)) {
		// Kustomize looks for each kustomization file name in a directory
		// it builds, not all through this filesystem: the directory
		// stands for them (a second one would make the build fail).
		g.reads.add(g.root, filepath.Dir(p))
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return nil, err
	}
	if real != p && within(g.root, real) {
		g.reads.add(g.root, real)
	}
	if !within(g.root, real) && !g.remoteClone(real) {
		return nil, fmt.Errorf("%s is a symlink to %s: %w", rel, real, ErrOutsideRoot)
	}
	f, err := openNoBlock(real)
	if err != nil {
		if fi, serr := os.Stat(real); serr == nil && !fi.Mode().IsRegular() && !fi.IsDir() {
			return nil, fmt.Errorf("%s: %s: %w", rel, typeName(fi.Mode()), ErrNotRegular) // a socket: ENXIO
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("read %s: is a directory", rel) // as os.ReadFile says
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %s: %w", rel, typeName(fi.Mode()), ErrNotRegular)
	}
	if fi.Size() > g.lim.MaxFileBytes {
		return nil, fmt.Errorf("%s: %d bytes, more than %d: %w", rel, fi.Size(), g.lim.MaxFileBytes, ErrTooLarge)
	}
	data, err := io.ReadAll(io.LimitReader(f, g.lim.MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	if int64(len(data)) > g.lim.MaxFileBytes { // grew since the stat
		return nil, fmt.Errorf("%s: more than %d bytes: %w", rel, g.lim.MaxFileBytes, ErrTooLarge)
	}
	if err := checkYAML(data, g.lim); err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	if g.building && !g.exclusive && slices.Contains(konfig.RecognizedKustomizationFileNames(), filepath.Base(real)) {
		// The checker makes a build whose kustomizations set openapi
		// exclusive; one it could not see (a remote base) must not set
		// the schema under other builds running at the same time.
		var k types.Kustomization
		if syaml.Unmarshal(data, &k) == nil && len(k.OpenAPI) > 0 {
			return nil, fmt.Errorf("%s: openapi is not supported in a remote base: %w", rel, ErrNotAllowed)
		}
	}
	return data, nil
}

// isRefusal tells the guard's refusals from errors kustomize handles
// itself (a missing file, a directory it tries as a file first).
func isRefusal(err error) bool {
	for _, r := range []error{ErrOutsideRoot, ErrNotRegular, ErrTooLarge, ErrNotAllowed, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, r) {
			return true
		}
	}
	return false
}

// remoteClone says whether p is in a directory kustomize cloned a remote
// base into, which the build may read when remote bases are allowed.
func (g *guard) remoteClone(p string) bool {
	if !g.allowRemote {
		return false
	}
	prefix, err := securefs.TmpConfirmedDirPrefix()
	return err == nil && strings.HasPrefix(p, prefix)
}

func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file (" + m.Type().String() + ")"
}

// errReadOnly: a build tried to write; kustomize build never does
// (only its localize and edit commands write).
var errReadOnly = errors.New("render: the build's filesystem is read-only")

// guardFS is the filesystem kustomize builds on: reads go through the
// guard, everything else to the secure on-disk filesystem, writes are
// refused, and the top kustomization (generated, or with origin
// annotations added) is served from memory, so nothing is written into
// the checkout. Holding that one file itself, rather than in kyaml's
// in-memory filesystem, keeps paths data: kyaml refuses to create
// directories whose names are not [a-zA-Z0-9-_.:]+ ("team+ops").
type guardFS struct {
	g       *guard
	disk    filesys.FileSystem
	file    string // absolute path of the in-memory kustomization
	content []byte
}

var _ filesys.FileSystem = (*guardFS)(nil)

func (f *guardFS) isFile(path string) bool {
	abs, err := filepath.Abs(path)
	return err == nil && abs == f.file
}

func (f *guardFS) Create(string) (filesys.File, error) { return nil, errReadOnly }
func (f *guardFS) Mkdir(string) error                  { return errReadOnly }
func (f *guardFS) MkdirAll(string) error               { return errReadOnly }
func (f *guardFS) WriteFile(string, []byte) error      { return errReadOnly }

// RemoveAll removes only a remote base's clone: kustomize cleans those up
// through the filesystem it builds on.
func (f *guardFS) RemoveAll(path string) error {
	if abs, err := filepath.Abs(path); err == nil && f.g.remoteClone(abs) {
		return f.disk.RemoveAll(path)
	}
	return errReadOnly
}

func (f *guardFS) ReadFile(path string) ([]byte, error) {
	if f.isFile(path) {
		return bytes.Clone(f.content), nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return f.g.read(abs)
}

func (f *guardFS) Open(path string) (filesys.File, error) {
	data, err := f.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return &memFile{Reader: bytes.NewReader(data), name: filepath.Base(path), size: int64(len(data))}, nil
}

func (f *guardFS) Exists(path string) bool {
	f.record(path)
	return f.isFile(path) || f.disk.Exists(path)
}

func (f *guardFS) IsDir(path string) bool {
	f.record(path)
	return !f.isFile(path) && f.disk.IsDir(path)
}

// record notes a path the build consulted without reading it through
// the guard (the in-memory kustomization stands for its directory,
// recorded by Render).
func (f *guardFS) record(path string) {
	if f.g.reads == nil || f.isFile(path) {
		return
	}
	if abs, err := filepath.Abs(path); err == nil {
		f.g.reads.add(f.g.root, abs)
	}
}

// CleanedAbs resolves the in-memory file by its directory: the disk
// layer resolves links with the file itself, which for a generated
// kustomization is not on disk, and kustomize's root-only restrictor
// calls CleanedAbs on every file it loads.
func (f *guardFS) CleanedAbs(path string) (filesys.ConfirmedDir, string, error) {
	if f.isFile(path) {
		d, _, err := f.disk.CleanedAbs(filepath.Dir(f.file))
		return d, filepath.Base(f.file), err
	}
	return f.disk.CleanedAbs(path)
}

func (f *guardFS) ReadDir(path string) ([]string, error) {
	f.record(path)
	names, err := f.disk.ReadDir(path)
	if abs, aerr := filepath.Abs(path); aerr == nil && abs == filepath.Dir(f.file) {
		if base := filepath.Base(f.file); !slices.Contains(names, base) {
			names = append(names, base)
		}
		err = nil
	}
	return names, err
}

func (f *guardFS) Glob(pattern string) ([]string, error) {
	if abs, err := filepath.Abs(pattern); err == nil {
		f.g.reads.addPattern(f.g.root, abs)
	}
	paths, err := f.disk.Glob(pattern)
	if err != nil {
		return nil, err
	}
	if ok, _ := filepath.Match(pattern, f.file); ok && !slices.Contains(paths, f.file) {
		paths = append(paths, f.file)
	}
	return paths, nil
}

func (f *guardFS) Walk(path string, walkFn filepath.WalkFunc) error {
	f.record(path)
	return f.disk.Walk(path, walkFn)
}

// memFile is a file read whole through the guard.
type memFile struct {
	*bytes.Reader
	name string
	size int64
}

func (m *memFile) Write([]byte) (int, error) { return 0, errReadOnly }
func (m *memFile) Close() error              { return nil }
func (m *memFile) Stat() (os.FileInfo, error) {
	return fileInfo{name: m.name, size: m.size}, nil
}

type fileInfo struct {
	name string
	size int64
}

func (i fileInfo) Name() string       { return i.name }
func (i fileInfo) Size() int64        { return i.size }
func (i fileInfo) Mode() fs.FileMode  { return 0o444 }
func (i fileInfo) ModTime() time.Time { return time.Time{} }
func (i fileInfo) IsDir() bool        { return false }
func (i fileInfo) Sys() any           { return nil }
