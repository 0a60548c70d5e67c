package reconcile

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/render"
	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/test/gitserver"
)

// listing is a commit's tree as a map (path → object hash).
type listing map[string]string

func (l listing) Lookup(p string) (string, error) {
	if p == "link/x" {
		return "", fmt.Errorf("%s: %w", p, source.ErrUnknownPath)
	}
	return l[p], nil
}

func TestUnchangedIn(t *testing.T) {
	in := inputs{"apps/a": "t1", "base/kustomization.yaml": "b1", "apps/a/kustomization.yml": ""}
	for _, tc := range []struct {
		name    string
		in      inputs
		files   lister
		same    bool
		changed string
	}{
		{name: "same objects", in: in, files: listing{"apps/a": "t1", "base/kustomization.yaml": "b1", "apps/b": "x"}, same: true},
		{name: "the app's folder changed", in: in, files: listing{"apps/a": "t2", "base/kustomization.yaml": "b1"}, changed: "apps/a"},
		{name: "a base file changed", in: in, files: listing{"apps/a": "t1", "base/kustomization.yaml": "b2"}, changed: "base/kustomization.yaml"},
		{name: "a file the build looked for appeared", in: in,
			files: listing{"apps/a": "t1", "base/kustomization.yaml": "b1", "apps/a/kustomization.yml": "k"}, changed: "apps/a/kustomization.yml"},
		{name: "a base file went", in: in, files: listing{"apps/a": "t1"}, changed: "base/kustomization.yaml"},
		{name: "nothing recorded", in: nil, files: listing{}},
		{name: "no listing of the new commit", in: in, files: nil},
		{name: "a path through a symlink", in: inputs{"link/x": "h"}, files: listing{}, changed: "link/x: path not known in the commit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			same, changed := tc.in.unchangedIn(tc.files)
			if same != tc.same || changed != tc.changed {
				t.Errorf("unchangedIn = %v, %q; want %v, %q", same, changed, tc.same, tc.changed)
			}
		})
	}
}

// renderPipe renders for real (recording the reads as the loop asks) and
// plans and applies nothing: what it counts is which commits were synced.
type renderPipe struct{ synced []string }

func (p *renderPipe) Plan(ctx context.Context, root string, opts Options) (*diff.Plan, error) {
	p.synced = append(p.synced, opts.App)
	if _, err := render.Render(ctx, render.Options{Root: root, Path: opts.Path, Reads: opts.Reads}); err != nil {
		return nil, &BadCommitError{Err: err}
	}
	return &diff.Plan{}, nil
}

func (p *renderPipe) Apply(context.Context, *diff.Plan, Options) (*Result, error) {
	return &Result{}, nil
}

// TestUnchangedAppsSkipTheCommit runs the loops of three apps of one
// repository, two of them on a shared base outside their path, through
// commits that touch one app, the base, a file no app reads, and a bad
// change: only the apps whose inputs changed sync.
func TestUnchangedAppsSkipTheCommit(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "mono")
	const cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n  v: %q\n"
	repo.Commit(map[string]string{
		"base/kustomization.yaml":   "resources:\n- cm.yaml\n",
		"base/cm.yaml":              fmt.Sprintf(cm, "base", "1"),
		"apps/a/kustomization.yaml": "namePrefix: a-\nresources:\n- ../../base\n- cm.yaml\n",
		"apps/a/cm.yaml":            fmt.Sprintf(cm, "a", "1"),
		"apps/b/kustomization.yaml": "namePrefix: b-\nresources:\n- ../../base\n",
		"apps/c/cm.yaml":            fmt.Sprintf(cm, "c", "1"),
		"README.md":                 "hello\n",
	}, "first")
	hub := source.NewHub(t.TempDir())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pipe := &renderPipe{}
	var loops []*appLoop
	for _, name := range []string{"a", "b", "c"} {
		opts := source.DefaultOptions()
		opts.URL, opts.Ref, opts.Auth = repo.HTTPURL(), source.Ref{Branch: "main"}, source.Auth{Username: srv.Username(), Password: srv.Password()}
		sub, err := hub.Subscribe(opts, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		o := DefaultOptions()
		o.App, o.Path = name, "apps/"+name
		loops = append(loops, &appLoop{app: App{Name: name, Poller: sub, Trigger: sub.Changed(), Interval: time.Hour, DriftInterval: time.Hour,
			Options: o}, pipe: pipe, now: time.Now})
	}
	hubDone := make(chan struct{})
	go func() { hub.Run(ctx); close(hubDone) }()
	// Run returns once no checkout is being written: before TempDir goes.
	defer func() { cancel(); <-hubDone }()
	// step pushes a commit (none for the first), waits for the hub to see
	// it and runs one pass of every loop.
	step := func(files map[string]string) []string {
		t.Helper()
		if files != nil {
			repo.Commit(files, "change")
			loops[0].app.Poller.(*source.Subscription).Wake().Fire()
		}
		for _, l := range loops {
			select {
			case <-l.app.Trigger.C():
			case <-time.After(10 * time.Second):
				t.Fatalf("app %s was not told of the commit", l.app.Name)
			}
		}
		pipe.synced = nil
		for _, l := range loops {
			l.pass(ctx)
		}
		return pipe.synced
	}
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{name: "first commit", want: []string{"a", "b", "c"}},
		{name: "one app's file", files: map[string]string{"apps/a/cm.yaml": fmt.Sprintf(cm, "a", "2")}, want: []string{"a"}},
		{name: "the shared base", files: map[string]string{"base/cm.yaml": fmt.Sprintf(cm, "base", "2")}, want: []string{"a", "b"}},
		{name: "a file no app reads", files: map[string]string{"README.md": "bye\n"}},
		{name: "a new file in a plain folder", files: map[string]string{"apps/c/more.yaml": fmt.Sprintf(cm, "more", "1")}, want: []string{"c"}},
		{name: "a kustomization file beside another", files: map[string]string{"apps/b/kustomization.yml": "resources: []\n"}, want: []string{"b"}},
		// b's commit was bad (two kustomization files): b is rendered again
		// on the next commit, whatever it changes.
		{name: "after a bad commit", files: map[string]string{"README.md": "again\n"}, want: []string{"b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := step(tc.files)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("apps synced (-want +got):\n%s", diff)
			}
			for _, l := range loops {
				if rev, _ := l.app.Poller.Poll(ctx); l.st.applied != rev.Commit && l.st.failed != rev.Commit {
					t.Errorf("app %s: applied %s, failed %s; want the head %s", l.app.Name, short(l.st.applied), short(l.st.failed), short(rev.Commit))
				}
			}
		})
	}
}
