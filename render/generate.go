package render

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
	"sigs.k8s.io/kustomize/api/types"
	syaml "sigs.k8s.io/yaml"
)

// generate writes the kustomization a folder without one is built with,
// as Flux's generator does: every Kubernetes YAML file below it, and every
// sub-directory that has a kustomization (not descended into). It skips:
//   - files not ending in .yaml or .yml, and hidden files and directories
//     (".github/", ".gitlab-ci.yml");
//   - YAML files with no Kubernetes object, that is no document with both
//     apiVersion and kind (Helm values, CI or tool configuration);
//   - directories whose kustomization is a Component (not a resource).
//
// A file that mixes objects with other documents is an error, as is
// malformed YAML (with its line): skipping either would hide a mistake.
func generate(g *guard, dir string) ([]byte, error) {
	var resources []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		hidden := strings.HasPrefix(d.Name(), ".")
		rel := "./" + filepath.ToSlash(strings.TrimPrefix(p, dir+string(filepath.Separator)))
		if d.Type()&fs.ModeSymlink != 0 && !hidden {
			return generateLink(g, p, rel, &resources)
		}
		switch {
		case d.IsDir() && hidden:
			return filepath.SkipDir
		case d.IsDir():
			if name := findKustomization(p); name != "" {
				if !isComponent(g, filepath.Join(p, name)) {
					resources = append(resources, rel)
				}
				return filepath.SkipDir
			}
			return nil
		case hidden || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")):
			return nil
		}
		return addYAML(g, p, rel, &resources)
	})
	if err != nil {
		return nil, err
	}
	k := types.Kustomization{TypeMeta: types.TypeMeta{APIVersion: types.KustomizationVersion, Kind: types.KustomizationKind}}
	k.Resources = resources
	if len(resources) == 0 {
		// kustomize refuses an empty kustomization; an empty folder renders
		// to nothing.
		k.Namespace = "default"
	}
	return syaml.Marshal(k)
}

// generateLink handles a symlink in a plain folder: one leaving the root
// is an error; one to a directory counts when the directory has a
// kustomization (the walk does not descend into linked directories); one
// to a file counts as that file.
func generateLink(g *guard, p, rel string, resources *[]string) error {
	root := g.root
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return fmt.Errorf("%s: %w", relTo(root, p), err)
	}
	if !within(root, real) {
		return fmt.Errorf("%s is a symlink to %s: %w", relTo(root, p), real, ErrOutsideRoot)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		if name := findKustomization(real); name != "" && !isComponent(g, filepath.Join(real, name)) {
			*resources = append(*resources, rel)
		}
		return nil
	}
	if strings.HasPrefix(filepath.Base(p), ".") || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
		return nil
	}
	return addYAML(g, p, rel, resources)
}

func addYAML(g *guard, p, rel string, resources *[]string) error {
	ok, err := hasObjects(g, p)
	if err != nil {
		return err
	}
	if ok {
		*resources = append(*resources, rel)
	}
	return nil
}

// hasObjects reports whether the YAML file at p holds Kubernetes objects.
func hasObjects(g *guard, p string) (bool, error) {
	data, err := g.read(p)
	if err != nil {
		return false, err // names the file
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	objects, others := 0, 0
	for doc := 1; ; doc++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return false, fmt.Errorf("%s: %w", relTo(g.root, p), err) // "yaml: line N: …"
		}
		if len(n.Content) == 0 || n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null" {
			continue // an empty document
		}
		var tm struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
		}
		if n.Content[0].Kind == yaml.MappingNode {
			_ = n.Decode(&tm)
		}
		if tm.APIVersion != "" && tm.Kind != "" {
			objects++
		} else {
			others++
		}
		if objects > 0 && others > 0 {
			return false, fmt.Errorf("%s: document %d (line %d): mixes Kubernetes objects with documents that have no apiVersion and kind", relTo(g.root, p), doc, n.Content[0].Line)
		}
	}
	return objects > 0, nil
}

func isComponent(g *guard, kfile string) bool {
	data, err := g.read(kfile)
	if err != nil {
		return false
	}
	var tm struct {
		Kind string `json:"kind"`
	}
	return syaml.Unmarshal(data, &tm) == nil && tm.Kind == types.ComponentKind
}
