package source

import (
	"fmt"
	"path"
	"strings"
)

// CheckoutLimits bound what one checkout may write, so a small pack that
// inflates to a huge tree (a compressible 1 GB blob, a million empty files)
// is refused before it fills the disk.
type CheckoutLimits struct {
	// MaxFileBytes caps each file.
	MaxFileBytes int64 `json:"maxFileBytes,omitempty"`
	// MaxTreeBytes caps the sum of all files of the commit.
	MaxTreeBytes int64 `json:"maxTreeBytes,omitempty"`
	// MaxEntries caps the files, directories and links of the commit.
	MaxEntries int `json:"maxEntries,omitempty"`
}

// DefaultCheckoutLimits returns 64 MiB per file, 512 MiB and 100,000
// entries per tree: far above any kustomize tree, far below a full disk.
func DefaultCheckoutLimits() CheckoutLimits {
	return CheckoutLimits{MaxFileBytes: 64 << 20, MaxTreeBytes: 512 << 20, MaxEntries: 100_000}
}

// withDefaults fills the unset limits.
func (l CheckoutLimits) withDefaults() CheckoutLimits {
	def := DefaultCheckoutLimits()
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = def.MaxFileBytes
	}
	if l.MaxTreeBytes <= 0 {
		l.MaxTreeBytes = def.MaxTreeBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = def.MaxEntries
	}
	return l
}

// lfsPointerMax is the size under which a blob may be a Git LFS pointer:
// the spec caps pointer files at 1024 bytes.
const lfsPointerMax = 1024

// lfsPrefixes are the first lines of Git LFS pointer files, current and
// pre-release ("hawser").
var lfsPrefixes = []string{"version https://git-lfs.github.com/spec/v1", "version https://hawser.github.com/spec/v1"}

func isLFSPointer(head []byte) bool {
	for _, p := range lfsPrefixes {
		if strings.HasPrefix(string(head), p) {
			return true
		}
	}
	return false
}

// maxLinkTarget caps a symlink's target, as the kernel caps a path.
const maxLinkTarget = 4096

// checkName refuses a tree entry name that is not one plain path element:
// Git itself never writes such names, but a crafted tree object can hold
// anything, and "a/../../x" or "/etc/x" would leave the checkout.
func checkName(dir, name string) error {
	full := name // as written, not cleaned: the message shows the trick
	if dir != "" {
		full = dir + "/" + name
	}
	switch {
	case name == "":
		return fmt.Errorf("%q: empty name in a tree: %w", dir+"/", ErrTreeRefused)
	case name == "." || name == "..":
		return fmt.Errorf("%q: tree entry named %q: %w", full, name, ErrTreeRefused)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%q: tree entry name holds a slash or NUL: %w", full, ErrTreeRefused)
	case strings.EqualFold(name, ".git"):
		return fmt.Errorf("%q: tree entry inside .git: %w", full, ErrTreeRefused)
	}
	return nil
}

// linkLeaves reports whether the symlink at link (slash-separated,
// relative to the checkout) leads outside the checkout, resolving it the
// way the kernel would against the tree being written: links holds every
// symlink of the tree (path → target). A lexical check is not enough:
// with "a" → "." the link "b" → "a/.." is "." as text and the checkout's
// parent on disk. A component that does not exist resolves as text.
func linkLeaves(link string, links map[string]string) (bool, error) {
	var stack []string // resolved components, from the checkout root
	pending := strings.Split(links[link], "/")
	if strings.HasPrefix(links[link], "/") {
		return true, nil
	}
	if dir := path.Dir(link); dir != "." {
		stack = strings.Split(dir, "/")
	}
	for hops := 0; len(pending) > 0; {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return true, nil
			}
			stack = stack[:len(stack)-1]
			continue
		}
		stack = append(stack, c)
		target, ok := links[strings.Join(stack, "/")]
		if !ok {
			continue
		}
		if hops++; hops > 40 { // the kernel's own limit (ELOOP)
			return false, fmt.Errorf("%q: too many levels of symbolic links: %w", link, ErrTreeRefused)
		}
		if strings.HasPrefix(target, "/") {
			return true, nil
		}
		stack = stack[:len(stack)-1]
		pending = append(strings.Split(target, "/"), pending...)
	}
	return false, nil
}
