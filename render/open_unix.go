//go:build unix

package render

import (
	"os"
	"syscall"
)

// openNoBlock opens p for reading without waiting: a plain open of a FIFO
// blocks until a writer comes, O_NONBLOCK returns at once so the caller
// can see the file's type and refuse it.
func openNoBlock(p string) (*os.File, error) {
	return os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
