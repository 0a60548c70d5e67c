package source

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// filesSuffix names the file beside a tree that lists its Git objects.
const filesSuffix = ".files"

// ErrUnknownPath: Files cannot tell what a path holds in the commit (it
// goes through a symlink, or the listing is missing).
var ErrUnknownPath = errors.New("path not known in the commit")

// Files is the listing of one commit's tree: every file, directory and
// symlink with its Git object hash. Two commits whose listings give one
// path the same hash hold the same content there (a directory's hash
// covers everything below it), so a caller can tell whether what it read
// changed without reading it again.
type Files struct {
	file string

	once    sync.Once
	entries map[string]fileEntry
	err     error
}

type fileEntry struct {
	hash string
	link bool
}

// Lookup returns the object hash at p (slash-separated, relative to the
// tree's root, "." for the root): a blob's for a file or symlink, a
// tree's for a directory, "" when nothing is there. A path through a
// symlink is ErrUnknownPath: what it reaches depends on the link.
func (f *Files) Lookup(p string) (string, error) {
	if f == nil {
		return "", fmt.Errorf("no listing: %w", ErrUnknownPath)
	}
	f.once.Do(f.load)
	if f.err != nil {
		return "", f.err
	}
	p = path.Clean(p)
	if p == ".." || strings.HasPrefix(p, "../") || path.IsAbs(p) {
		return "", fmt.Errorf("%s: outside the tree: %w", p, ErrUnknownPath)
	}
	for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
		if e, ok := f.entries[dir]; ok && e.link {
			return "", fmt.Errorf("%s: under symlink %s: %w", p, dir, ErrUnknownPath)
		}
	}
	e, ok := f.entries[p]
	if !ok {
		return "", nil
	}
	if e.link {
		return "link " + e.hash, nil
	}
	return e.hash, nil
}

func (f *Files) load() {
	fh, err := os.Open(f.file)
	if err != nil {
		f.err = fmt.Errorf("listing: %v: %w", err, ErrUnknownPath)
		return
	}
	defer fh.Close()
	f.entries = map[string]fileEntry{}
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		kind, rest, ok1 := strings.Cut(sc.Text(), " ")
		hash, p, ok2 := strings.Cut(rest, " ")
		if !ok1 || !ok2 {
			f.err = fmt.Errorf("listing %s: malformed line: %w", f.file, ErrUnknownPath)
			return
		}
		f.entries[p] = fileEntry{hash: hash, link: kind == "l"}
	}
	if err := sc.Err(); err != nil {
		f.err = fmt.Errorf("listing %s: %v: %w", f.file, err, ErrUnknownPath)
	}
}

// writeFiles lists tree into file: "<kind> <hash> <path>" per line, kind
// d (directory), f (file) or l (symlink), the root as ".". The path is
// the rest of the line, so it may hold spaces; checkName refused slashes
// and NULs before the checkout, and a newline is refused here.
func writeFiles(s storer.EncodedObjectStorer, tree *object.Tree, file string) error {
	fh, err := os.Create(file)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(fh)
	fmt.Fprintf(w, "d %s .\n", tree.Hash)
	err = listTree(s, tree, "", w)
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	return err
}

func listTree(s storer.EncodedObjectStorer, tree *object.Tree, dir string, w *bufio.Writer) error {
	for _, te := range tree.Entries {
		if strings.ContainsAny(te.Name, "\n") {
			return fmt.Errorf("%q: newline in a name: %w", te.Name, ErrTreeRefused)
		}
		p := path.Join(dir, te.Name)
		switch te.Mode {
		case filemode.Dir:
			fmt.Fprintf(w, "d %s %s\n", te.Hash, p)
			sub, err := object.GetTree(s, te.Hash)
			if err != nil {
				return fmt.Errorf("%q: %w", p, err)
			}
			if err := listTree(s, sub, p, w); err != nil {
				return err
			}
		case filemode.Symlink:
			fmt.Fprintf(w, "l %s %s\n", te.Hash, p)
		case filemode.Submodule:
			// Not checked out: absent on disk, absent here.
		default:
			fmt.Fprintf(w, "f %s %s\n", te.Hash, p)
		}
	}
	return nil
}
