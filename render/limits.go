package render

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"
)

// ErrTooLarge: a file read by the build is over one of the Limits.
var ErrTooLarge = errors.New("over the render limits")

// Limits bound what one file read by a build may cost. Kustomize parses
// each file whole and expands YAML aliases by copying nodes (kyaml's
// DeAnchor), so a 500-byte "billion laughs" file would take all memory:
// every file is checked against these before kustomize sees it.
type Limits struct {
	// MaxFileBytes caps each file.
	MaxFileBytes int64 `json:"maxFileBytes,omitempty"`
	// MaxDocuments caps the YAML documents of one file.
	MaxDocuments int `json:"maxDocuments,omitempty"`
	// MaxNodes caps the YAML nodes of one file as written.
	MaxNodes int64 `json:"maxNodes,omitempty"`
	// MaxAliasNodes caps the nodes that expanding a file's aliases adds.
	MaxAliasNodes int64 `json:"maxAliasNodes,omitempty"`
}

// DefaultLimits returns 32 MiB, 10,000 documents and 1,000,000 nodes per
// file, and 100,000 nodes added by aliases: far above real files (the
// whole Kubernetes OpenAPI document, 4.7 MB, is 125,000 nodes; Gateway
// API's CRDs, 469 KB, 7,300), far below what exhausts memory.
func DefaultLimits() Limits {
	return Limits{MaxFileBytes: 32 << 20, MaxDocuments: 10_000, MaxNodes: 1_000_000, MaxAliasNodes: 100_000}
}

func (l Limits) withDefaults() Limits {
	def := DefaultLimits()
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = def.MaxFileBytes
	}
	if l.MaxDocuments <= 0 {
		l.MaxDocuments = def.MaxDocuments
	}
	if l.MaxNodes <= 0 {
		l.MaxNodes = def.MaxNodes
	}
	if l.MaxAliasNodes <= 0 {
		l.MaxAliasNodes = def.MaxAliasNodes
	}
	return l
}

// checkYAML refuses data with too many documents, nodes or alias
// expansions. It parses into go-yaml nodes, which keep an alias as a
// pointer to its anchor (nothing is expanded), and counts what an
// expansion would make without making it, so a bomb costs its own size.
// Data that is not YAML passes: kustomize reports it if it parses it, and
// generator files (configMapGenerator files:) need not be YAML at all.
func checkYAML(data []byte, lim Limits) error {
	if !bytes.ContainsAny(data, ":-[{&*!|>") { // no structure: a scalar at most
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	c := counter{lim: lim, expanded: map[*yaml.Node]int64{}}
	for doc := 1; ; doc++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return nil // not YAML (or broken YAML): see above
		}
		if doc > lim.MaxDocuments {
			return fmt.Errorf("more than %d YAML documents: %w", lim.MaxDocuments, ErrTooLarge)
		}
		if err := c.add(&n); err != nil {
			return fmt.Errorf("document %d: %w", doc, err)
		}
	}
}

// counter counts nodes as written and as expanded over a whole file.
type counter struct {
	lim                Limits
	literal, expansion int64
	expanded           map[*yaml.Node]int64 // memo: the expanded size of an anchored subtree
}

func (c *counter) add(doc *yaml.Node) error {
	lit, exp, err := c.walk(doc, 0)
	if err != nil {
		return err
	}
	c.literal += lit
	c.expansion += exp - lit
	switch {
	case c.literal > c.lim.MaxNodes:
		return fmt.Errorf("more than %d YAML nodes: %w", c.lim.MaxNodes, ErrTooLarge)
	case c.expansion > c.lim.MaxAliasNodes:
		return fmt.Errorf("too many aliases: expanding them would add more than %d YAML nodes: %w",
			c.lim.MaxAliasNodes, ErrTooLarge)
	}
	return nil
}

// walk returns a subtree's node count as written and as expanded; it
// stops early once either is over its limit, so it never counts far.
func (c *counter) walk(n *yaml.Node, depth int) (literal, expanded int64, err error) {
	if depth > 10_000 { // go-yaml's own nesting limit; aliases can nest deeper
		return 0, 0, fmt.Errorf("YAML nested more than 10000 levels: %w", ErrTooLarge)
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return 1, 1, nil
		}
		e, err := c.expand(n.Alias, depth+1)
		return 1, e, err
	}
	literal, expanded = 1, 1
	for _, ch := range n.Content {
		l, e, err := c.walk(ch, depth+1)
		if err != nil {
			return 0, 0, err
		}
		literal, expanded = literal+l, expanded+e
		if expanded-literal > c.lim.MaxAliasNodes || literal > c.lim.MaxNodes {
			return literal, expanded, nil // add reports it
		}
	}
	return literal, expanded, nil
}

// expand is the expanded size of an anchored node, memoised: each anchor
// is counted once however often it is referred to.
func (c *counter) expand(n *yaml.Node, depth int) (int64, error) {
	if e, ok := c.expanded[n]; ok {
		if e < 0 {
			return 0, fmt.Errorf("an anchor refers to itself: %w", ErrTooLarge)
		}
		return e, nil
	}
	c.expanded[n] = -1 // in progress
	_, e, err := c.walk(n, depth)
	if err != nil {
		return 0, err
	}
	c.expanded[n] = e
	return e, nil
}
