// Package apply writes the creates, structural updates and deletions of a Plan
// with server-side apply, and waits for what it wrote to become healthy. It
// does not patch Pods in place: that is package inplace.
package apply
