// Package diff compares rendered objects with the live cluster and classifies
// every change (create, update, delete; image-only or structural) into a Plan.
// It decides; it does not write to the cluster.
package diff
