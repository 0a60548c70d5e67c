// Package status reports a commit status ("refit/<app>: pending, success,
// failure, error") back to the Git host the commit came from: GitHub (and
// GitHub Enterprise), GitLab (gitlab.com or self-hosted, nested groups),
// Gitea and Bitbucket Cloud, over their REST APIs with net/http.
// It does not decide what to report, retry, or emit Kubernetes events and
// metrics: the reconciler does, with the HTTPError this package returns.
package status
