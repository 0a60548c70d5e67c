// Package kubeletsim is the part of the local cluster's kubelet simulation
// that needs more than one object at a time: which images each kwok node has
// pulled (status.images, a pull time once per node) and pods/resize (the
// node's allocatable against its other Pods). The per-Pod lifecycle stays in
// the kwok Stages (test/cluster/stages.yaml); this package only gates them
// and writes what they cannot. It runs as the refit-kubeletsim process the
// cluster package starts beside kwok. It is test infrastructure, not refit.
package kubeletsim
