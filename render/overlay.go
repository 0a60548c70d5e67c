package render

import (
	"path/filepath"

	securefs "github.com/fluxcd/pkg/kustomize/filesys"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// overlayFS serves the top-level kustomization from memory over the secure
// on-disk filesystem, so a generated or origin-annotated kustomization is
// never written into the checkout.
type overlayFS struct {
	filesys.FileSystem
	file string // absolute path of the in-memory kustomization
}

func newOverlayFS(disk filesys.FileSystem, file string, content []byte) (filesys.FileSystem, error) {
	mem := securefs.MakeFsInMemory(disk)
	if err := mem.WriteFile(file, content); err != nil {
		return nil, err
	}
	return overlayFS{FileSystem: mem, file: file}, nil
}

// CleanedAbs resolves the in-memory file by its directory: the disk
// layer resolves links with the file itself, which for a generated
// kustomization is not on disk, and kustomize's root-only restrictor
// calls CleanedAbs on every file it loads.
func (o overlayFS) CleanedAbs(path string) (filesys.ConfirmedDir, string, error) {
	if abs, err := filepath.Abs(path); err == nil && abs == o.file {
		d, _, err := o.FileSystem.CleanedAbs(filepath.Dir(abs))
		return d, filepath.Base(abs), err
	}
	return o.FileSystem.CleanedAbs(path)
}
