// Package render builds one path of a checked-out revision with kustomize
// and returns the objects in kustomize's order, each with the file it came
// from. A folder without a kustomization is built as if it had one listing
// its Kubernetes YAML files (generate.go says which). It reads nothing outside the
// repository root and only regular files within Limits (guard.go), runs no
// exec or container plugins and no Helm, fetches no remote bases unless
// asked and then only over https, and does not talk to a cluster or log.
package render
