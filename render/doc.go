// Package render builds one path of a checked-out revision with kustomize and
// returns the objects in a deterministic order, each with the file it came
// from. It reads nothing outside the repository root and does not talk to a
// cluster.
package render
