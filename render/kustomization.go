package render

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/types"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
)

// findKustomization returns the name of dir's kustomization file, or "".
func findKustomization(dir string) string {
	for _, name := range konfig.RecognizedKustomizationFileNames() {
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil && !fi.IsDir() {
			return name
		}
	}
	return ""
}

// topKustomization returns the kustomization to build dir with: its own
// (checked, see check.go) or a generated one, with origin annotations
// turned on so each object's file is known. userOrigin says the
// kustomization asked for them itself, so they stay in the output.
func topKustomization(g *guard, dir string) (name string, content []byte, userOrigin bool, err error) {
	c := newChecker(g)
	root := g.root
	name = findKustomization(dir)
	if name == "" {
		name = konfig.DefaultKustomizationFileName()
		if content, err = generate(g, dir); err != nil {
			return "", nil, false, err
		}
		if err := c.checkContent(dir, name, content); err != nil {
			return "", nil, false, err
		}
	} else {
		if err := c.check(dir); err != nil {
			return "", nil, false, err
		}
		if content, err = g.read(filepath.Join(dir, name)); err != nil {
			return "", nil, false, err
		}
	}
	// A build whose kustomizations set openapi changes kustomize's
	// process-wide schema: it runs alone (see build).
	g.exclusive = c.openAPI
	content, userOrigin, err = withOrigin(content)
	if err != nil {
		return "", nil, false, fmt.Errorf("%s: %w", relTo(root, filepath.Join(dir, name)), err)
	}
	return name, content, userOrigin, nil
}

// withOrigin adds originAnnotations to buildMetadata, keeping the rest of
// the document as written; kustomize hands buildMetadata down to every
// base and component it loads.
func withOrigin(content []byte) ([]byte, bool, error) {
	node, err := kyaml.Parse(string(content))
	if err != nil {
		return nil, false, err
	}
	seq, err := node.Pipe(kyaml.LookupCreate(kyaml.SequenceNode, "buildMetadata"))
	if err != nil {
		return nil, false, fmt.Errorf("buildMetadata: %w", err)
	}
	for _, n := range seq.YNode().Content {
		if n.Value == types.OriginAnnotations {
			return content, true, nil
		}
	}
	seq.YNode().Content = append(seq.YNode().Content, kyaml.NewScalarRNode(types.OriginAnnotations).YNode())
	out, err := node.String()
	if err != nil {
		return nil, false, err
	}
	return []byte(out), false, nil
}
