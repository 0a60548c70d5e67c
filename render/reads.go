package render

import (
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Reads records the paths one render consulted: files it read, files
// and directories whose existence it checked, directories it listed (a
// listed directory stands for everything below it). Paths are relative
// to the root, slash-separated, "." for the root. A caller comparing what
// these paths hold in two commits can tell whether the render could
// differ, unless Uncertain says the paths do not capture its inputs.
type Reads struct {
	mu        sync.Mutex
	paths     map[string]bool
	uncertain string
}

// NewReads returns an empty record.
func NewReads() *Reads { return &Reads{paths: map[string]bool{}} }

// Paths returns the recorded paths, sorted.
func (r *Reads) Paths() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.paths))
	for p := range r.paths {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Uncertain says why the paths may not be all the render depended on
// (remote bases), or "".
func (r *Reads) Uncertain() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.uncertain
}

// add records the absolute path p under root.
func (r *Reads) add(root, p string) {
	if r == nil {
		return
	}
	rel := relTo(root, p)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.paths[rel] = true
}

// addPattern records the directory a glob pattern lists: its longest
// prefix without wildcards.
func (r *Reads) addPattern(root, pattern string) {
	if r == nil {
		return
	}
	dir := pattern
	for strings.ContainsAny(dir, `*?[\`) {
		dir = filepath.Dir(dir)
	}
	r.add(root, dir)
}

func (r *Reads) doubt(why string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.uncertain == "" {
		r.uncertain = why
	}
}
