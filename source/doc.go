// Package source tracks a Git ref and hands on the commit it points at as a
// checked-out Revision. It asks the remote first and fetches only when the ref
// moved. It does not render, diff or apply anything.
package source
