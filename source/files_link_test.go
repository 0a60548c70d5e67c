package source

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestFilesThroughASymlink: a path under a symlink is unknown (what it
// reaches depends on the link); the link itself has its target's blob.
func TestFilesThroughASymlink(t *testing.T) {
	url := craftRepo(t, []node{dir("base", file("k.yaml", "k: 1\n")), link("shared", "base")})
	p := testPoller(t, url, Ref{Branch: "main"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rev, err := p.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rev.Files.Lookup("shared/k.yaml"); !errors.Is(err, ErrUnknownPath) {
		t.Errorf("a path through a symlink: %v, want ErrUnknownPath", err)
	}
	if h, err := rev.Files.Lookup("shared"); err != nil || h == "" {
		t.Errorf("the symlink itself: %q, %v; want its blob", h, err)
	}
	if h, err := rev.Files.Lookup("base/k.yaml"); err != nil || h == "" {
		t.Errorf("a file: %q, %v; want its blob", h, err)
	}
}
