package source

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// guardedStorage is go-git's on-disk storage with one change: a received
// pack is checked before go-git indexes it. go-git's pack parser inflates
// every object whole into memory to hash it, so a 1 MB pack of a 1 GB
// blob of zeros costs 1 GB of RAM before any checkout limit could apply
// (measured: 1,026 MiB allocated for such a pack). The check streams: it
// reads each object's inflated size from its header (a delta's from the
// start of its data) and refuses the pack before anything is parsed.
type guardedStorage struct {
	*filesystem.Storage
	dir       string // where the received pack waits for its check
	maxObject int64
}

// PackfileWriter implements storer.PackfileWriter, which go-git's fetch
// prefers to writing objects one by one.
func (s guardedStorage) PackfileWriter() (io.WriteCloser, error) {
	f, err := os.CreateTemp(s.dir, "incoming-*.pack")
	if err != nil {
		return nil, err
	}
	return &packGuard{f: f, st: s.Storage, max: s.maxObject}, nil
}

// packGuard spools the pack to a file, checks it on Close and only then
// hands it to the storage.
type packGuard struct {
	f   *os.File
	st  *filesystem.Storage
	max int64
}

func (g *packGuard) Write(p []byte) (int, error) { return g.f.Write(p) }

func (g *packGuard) Close() error {
	defer os.Remove(g.f.Name())
	defer g.f.Close()
	if _, err := g.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := checkPack(bufio.NewReader(g.f), g.max); err != nil {
		return err
	}
	if _, err := g.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	w, err := g.st.PackfileWriter()
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, g.f); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// checkPack refuses a pack holding an object that inflates to more than
// max bytes. Memory stays bounded: contents are inflated to io.Discard.
func checkPack(r io.Reader, max int64) error {
	sc := packfile.NewScanner(r)
	_, n, err := sc.Header()
	if err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	for i := uint32(0); i < n; i++ {
		h, err := sc.NextObjectHeader()
		if err != nil {
			return fmt.Errorf("pack object %d: %w", i, err)
		}
		size := h.Length
		if h.Type == plumbing.OFSDeltaObject || h.Type == plumbing.REFDeltaObject {
			// A delta's header gives the delta's size; what it builds can
			// be far larger (copy instructions repeat the base).
			var d deltaHead
			if _, _, err := sc.NextObject(&d); err != nil {
				return fmt.Errorf("pack object %d: %w", i, err)
			}
			if size, err = d.targetSize(); err != nil {
				return fmt.Errorf("pack object %d: %w", i, err)
			}
		}
		if size > max {
			return fmt.Errorf("the fetched pack holds a %s of %d bytes, more than the limit of %d bytes per file: %w",
				kindOf(h.Type), size, max, ErrTreeRefused)
		}
	}
	return nil
}

func kindOf(t plumbing.ObjectType) string {
	if t == plumbing.OFSDeltaObject || t == plumbing.REFDeltaObject {
		return "delta object"
	}
	return t.String() + " object"
}

// deltaHead keeps the first bytes of a delta, which hold the base's and
// the result's sizes, and discards the rest.
type deltaHead struct {
	buf [20]byte
	n   int
}

func (d *deltaHead) Write(p []byte) (int, error) {
	d.n += copy(d.buf[d.n:], p)
	return len(p), nil
}

// targetSize decodes the second of the two little-endian base-128 sizes
// a delta starts with (Git's pack format, "deltified representation").
func (d *deltaHead) targetSize() (int64, error) {
	b := d.buf[:d.n]
	var size int64
	for field := 0; field < 2; field++ {
		size = 0
		for shift := uint(0); ; shift += 7 {
			if len(b) == 0 || shift > 56 {
				return 0, fmt.Errorf("malformed delta header")
			}
			c := b[0]
			b = b[1:]
			size |= int64(c&0x7f) << shift
			if c&0x80 == 0 {
				break
			}
		}
	}
	return size, nil
}
