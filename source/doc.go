// Package source tracks a Git ref (branch, tag, semver range over tags, or
// pinned commit) over HTTPS, SSH or file:// and hands on the commit it
// points at as a checked-out Revision. A Poller lists the remote's refs
// first and fetches (depth 1, one ref) only when the commit is not already
// in its on-disk cache. A Hub shares one Poller among the apps that track
// the same repository and ref, and keeps each commit's tree until no app
// holds it. A Receiver turns signed webhooks from GitHub,
// GitLab, Gitea or a generic sender into a poll request on a Trigger.
// It does not render, diff or apply anything, and does not fetch
// submodules or LFS content. file:// URLs use the local git binaries
// (git-upload-pack), as go-git does.
package source
