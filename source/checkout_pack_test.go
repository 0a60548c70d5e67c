package source

import (
	"bufio"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
)

// TestPackGuard fetches a commit with a blob over the per-file limit: the
// pack is refused before go-git parses it (its parser would inflate the
// blob whole into memory), naming the size and the limit.
func TestPackGuard(t *testing.T) {
	url := craftRepo(t, []node{file("small", "x"), file("big.bin", strings.Repeat("\x00", 4096))})
	p := testPoller(t, url, Ref{Branch: "main"})
	refs, err := p.list(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := resolve(p.opts.Ref, refs)
	if err != nil {
		t.Fatal(err)
	}
	gitDir := t.TempDir()
	_, err = p.fetchRepo(t.Context(), tgt, gitDir, CheckoutLimits{MaxFileBytes: 4095})
	want := "the fetched pack holds a blob object of 4096 bytes, more than the limit of 4095 bytes per file"
	if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrTreeRefused) {
		t.Fatalf("fetch error = %v, want one containing %q", err, want)
	}
	if _, err := p.fetchRepo(t.Context(), tgt, t.TempDir(), CheckoutLimits{MaxFileBytes: 4096}); err != nil {
		t.Fatalf("fetch at the limit: %v", err)
	}
}

// TestPackGuardDelta checks a real pack whose larger blob is stored as a
// delta: only the size the delta builds can refuse it.
func TestPackGuardDelta(t *testing.T) {
	dir := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	base := make([]byte, 3000)
	if _, err := rand.Read(base); err != nil {
		t.Fatal(err)
	}
	git("init", "-q")
	for i, content := range [][]byte{base, append(append([]byte{}, base...), base...)} {
		if err := os.WriteFile(filepath.Join(dir, "f"), content, 0o644); err != nil {
			t.Fatal(err)
		}
		git("add", "f")
		git("commit", "-q", "-m", string(rune('a'+i)))
	}
	git("repack", "-adfq", "--window=10", "--depth=10")
	packs, _ := filepath.Glob(filepath.Join(dir, ".git/objects/pack/*.pack"))
	if len(packs) != 1 {
		t.Fatalf("packs = %v", packs)
	}
	scan := func(max int64) (deltas int, err error) {
		f, err := os.Open(packs[0])
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sc := packfile.NewScanner(bufio.NewReader(f))
		_, n, _ := sc.Header()
		for range n {
			h, err := sc.NextObjectHeader()
			if err != nil {
				t.Fatal(err)
			}
			if h.Type == plumbing.OFSDeltaObject || h.Type == plumbing.REFDeltaObject {
				deltas++
			}
		}
		if _, err := f.Seek(0, 0); err != nil {
			t.Fatal(err)
		}
		return deltas, checkPack(bufio.NewReader(f), max)
	}
	deltas, err := scan(6000)
	if deltas == 0 {
		t.Fatal("git stored no delta: the test proves nothing")
	}
	if err != nil {
		t.Fatalf("check at the limit: %v", err)
	}
	if _, err := scan(5999); err == nil || !errors.Is(err, ErrTreeRefused) || !strings.Contains(err.Error(), "of 6000 bytes") {
		t.Fatalf("check under the limit = %v, want a refusal of 6000 bytes", err)
	}
}

func TestDeltaTargetSize(t *testing.T) {
	tests := []struct {
		head []byte
		want int64
		err  bool
	}{
		{[]byte{0x05, 0x07}, 7, false},
		{[]byte{0x80, 0x01, 0xac, 0x02}, 300, false},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x80, 0x80, 0x80, 0x80, 0x04}, 1 << 30, false},
		{[]byte{0x05}, 0, true},
		{[]byte{0x05, 0x80}, 0, true},
	}
	for _, tc := range tests {
		var d deltaHead
		_, _ = d.Write(tc.head)
		got, err := d.targetSize()
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("targetSize(% x) = %d, %v; want %d (error %v)", tc.head, got, err, tc.want, tc.err)
		}
	}
}
