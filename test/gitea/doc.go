// Package gitea runs a real Gitea on loopback for tests and demos: built once
// from the Go module proxy into refit's tool cache, started with SQLite in a
// throw-away folder, with an admin user and a scoped access token, and
// helpers to create repositories, push commits, add webhooks and read commit
// statuses back. It is not a way to run Gitea for anything but tests.
package gitea
