package render

import (
	"fmt"
	"io"

	"sigs.k8s.io/yaml"
)

// Encode writes objects as a YAML stream, "---" between documents. Keys
// come out sorted, as kubectl prints them; values are kustomize's.
func Encode(w io.Writer, objs []Object) error {
	for i, o := range objs {
		data, err := yaml.Marshal(o.Object)
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
