package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/refit-gitops/refit/api/v1alpha1"
)

// Parse reads a config: App documents and at most one Config document,
// rejecting unknown fields; fills defaults and checks every app. Both kinds
// become the same App.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("config is larger than %d bytes", MaxSize)
	}
	docs, err := documents(data)
	if err != nil {
		return nil, err
	}
	cfg := &Config{APIVersion: APIVersion, Kind: Kind}
	var errs []error
	seen := map[string]bool{}
	add := func(a App, where string) {
		if seen[a.Name] {
			// The service names inventories, webhooks and metrics by the
			// app's name alone, whatever its namespace.
			errs = append(errs, fmt.Errorf("%s: name %q used twice", where, a.Name))
		}
		seen[a.Name] = true
		if a.Suspend {
			cfg.Suspended = append(cfg.Suspended, a)
		} else {
			cfg.Apps = append(cfg.Apps, a)
		}
	}
	configs, apps := 0, 0
	for i, doc := range docs {
		if doc == nil {
			continue // an empty document ("---" at the end)
		}
		switch apiVersion, kind := header(doc); {
		case apiVersion == APIVersion && kind == Kind:
			if configs++; configs > 1 {
				return nil, fmt.Errorf("line %d: a second document of kind %s: want one", doc.Line, Kind)
			}
			c, err := decodeConfig(data, docs, i)
			if err != nil {
				return nil, err
			}
			for j := range c.Apps {
				a := &c.Apps[j]
				a.Defaults()
				if err := a.Validate(); err != nil {
					errs = append(errs, fmt.Errorf("apps[%d] (%s): %w", j, a.Name, err))
				}
				add(*a, fmt.Sprintf("apps[%d]", j))
			}
			apps += len(c.Apps)
		case apiVersion == APIVersion && kind == v1alpha1.Kind:
			obj, err := decodeObject(doc)
			if err != nil {
				return nil, err
			}
			a, err := FromObject(obj, ObjectOptions{LocalFiles: true}) // the admin's file
			if err != nil {
				errs = append(errs, objectErrors(doc, a.Name, err))
			}
			add(a, fmt.Sprintf("line %d: %s %s", doc.Line, v1alpha1.Kind, a.Name))
			apps++
		default:
			return nil, fmt.Errorf("line %d: want apiVersion %s and kind %s or %s, got %q and %q",
				doc.Line, APIVersion, Kind, v1alpha1.Kind, apiVersion, kind)
		}
	}
	if apps == 0 {
		return nil, errors.New("no apps")
	}
	return cfg, errors.Join(errs...)
}

// documents splits data into its YAML documents, nil for an empty one.
func documents(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	empty := true
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if len(docs) > 0 {
				return nil, fmt.Errorf("after document %d: %w", len(docs), err)
			}
			return nil, err
		}
		if isEmpty(&n) {
			docs = append(docs, nil)
			continue
		}
		empty = false
		docs = append(docs, n.Content[0]) // its line is the first key's, not the "---"
	}
	if empty {
		return nil, fmt.Errorf("config is empty: want apiVersion %s and kind %s or %s", APIVersion, v1alpha1.Kind, Kind)
	}
	return docs, nil
}

func isEmpty(n *yaml.Node) bool {
	if n.Kind != yaml.DocumentNode || len(n.Content) != 1 {
		return true
	}
	c := n.Content[0]
	return c.Kind == yaml.ScalarNode && c.Tag == "!!null"
}

// decodeConfig decodes document i of data, of kind Config, rejecting
// unknown fields (yaml.Node.Decode cannot): a second decoder reads the
// stream again up to it.
func decodeConfig(data []byte, docs []*yaml.Node, i int) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	for range docs[:i] {
		if err := dec.Decode(new(yaml.Node)); err != nil {
			return nil, err
		}
	}
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, err
	}
	return &c, nil
}

// objectErrors names the App and, for each error that starts with a field
// of its spec, the field's line.
func objectErrors(doc *yaml.Node, name string, err error) error {
	list := flatten(err)
	out := make([]error, 0, len(list))
	for _, e := range list {
		line := doc.Line
		field, _, _ := strings.Cut(strings.TrimSuffix(strings.Fields(e.Error() + " ")[0], ":"), "[")
		keys := append([]string{"spec"}, strings.Split(field, ".")...)
		switch field {
		case "name":
			keys = []string{"metadata", "name"}
		case "namespace":
			keys = []string{"spec", "targetNamespace"}
		}
		if n := walk(doc, keys); n != nil {
			line = n.Line
		}
		out = append(out, fmt.Errorf("line %d: %s %s: %w", line, v1alpha1.Kind, name, e))
	}
	return errors.Join(out...)
}

// flatten lists the errors inside nested errors.Join.
func flatten(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		if err == nil {
			return nil
		}
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}
