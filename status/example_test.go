package status_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/refit-gitops/refit/status"
)

func ExampleNew() {
	token, err := status.TokenFromFile("/var/run/secrets/refit/gitea-token")
	if err != nil {
		fmt.Println(err)
		return
	}
	reporter, err := status.New(status.Options{
		Provider: status.Gitea,
		RepoURL:  "ssh://git@gitea.example.com:2222/acme/app.git",
		APIURL:   "https://gitea.example.com",
		Token:    token,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	err = reporter.Report(context.Background(), status.Status{
		Commit:      "0123456789abcdef0123456789abcdef01234567",
		State:       status.Pending,
		Context:     "refit/app",
		Description: "applying 12 objects, 3 in place",
	})
	var refused *status.HTTPError
	if errors.As(err, &refused) && refused.Transient {
		fmt.Println("retry later:", err)
	}
}

func ExampleReporter_String() {
	r, err := status.New(status.Options{Provider: status.GitLab, RepoURL: "git@gitlab.com:group/sub/app.git", Token: "t"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r)
	// Output: gitlab group/sub/app
}
