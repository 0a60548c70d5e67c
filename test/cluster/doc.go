// Package cluster builds and runs refit's local Kubernetes cluster for tests,
// benchmarks and the demo: a real kube-apiserver, etcd, kube-controller-manager
// and kube-scheduler (k8s.io/kubernetes built from the Go module proxy), kwok
// nodes driven by refit's own Stage set (stages.yaml, which also simulates the
// kubelet's in-place container restart) and by refit-kubeletsim (image pulls
// per node, status.images, pods/resize: package kubeletsim), and optional
// hollow kubelets (the kubelet's real code on a fake runtime). It is test
// infrastructure, not part of refit.
package cluster
