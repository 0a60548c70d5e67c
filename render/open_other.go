//go:build !unix

package render

import "os"

// openNoBlock opens p for reading; without Unix FIFOs there is nothing to
// wait for.
func openNoBlock(p string) (*os.File, error) { return os.Open(p) }
