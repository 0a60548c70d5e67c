// Package inplace rolls out image-only changes of Deployments, StatefulSets,
// DaemonSets and bare Pods by patching the images of the live Pods, in batches
// bounded by the workload's maxUnavailable, without the workload controller
// recreating any Pod.
package inplace
