// Package gitserver runs a real Git server on loopback for tests, e2e runs
// and demos: smart HTTP (basic auth or bearer token) and SSH (a generated
// host key and one authorised client key), over bare repositories that
// helpers fill with real commits pushed from a working clone. It is not a
// production server: repositories and keys live in a temporary directory.
package gitserver
