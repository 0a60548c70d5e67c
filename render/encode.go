package render

import (
	"bytes"
	"fmt"
	"io"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// Encode writes objects as a YAML stream, "---" between documents. Keys
// come out sorted, as kubectl prints them; values are kustomize's.
func Encode(w io.Writer, objs []Object) error {
	for i, o := range objs {
		data, err := marshal(o.Object)
		if err != nil {
			return fmt.Errorf("%s %s: %w", o.GetKind(), o.GetName(), err)
		}
		if i > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
	}
	return nil
}

// marshal prints obj as kubectl does. sigs.k8s.io/yaml's YAML 1.1 emitter
// refuses control characters ("\x7f" from a configMapGenerator file):
// such an object is printed by go-yaml v3, which escapes them, as
// kubectl kustomize does.
func marshal(obj map[string]any) ([]byte, error) {
	data, err := yaml.Marshal(obj)
	if err == nil {
		return data, nil
	}
	var b bytes.Buffer
	enc := yamlv3.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(obj); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
