package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/refit-gitops/refit/render"
	"github.com/refit-gitops/refit/source"
)

// renderFlags are the flags of refit render; the Git ones will be shared
// with plan and apply.
type renderFlags struct {
	dir, repo, ref, path string
	sshKey, knownHosts   string
	username, password   string
	token, cacheDir      string
	allowRemoteBases     bool
	timeout              time.Duration
}

func newRenderCommand() *cobra.Command {
	var f renderFlags
	cmd := &cobra.Command{
		Use:   "render (--dir DIR | --repo URL [--ref REF]) [--path PATH]",
		Short: "Print the objects one path of a folder or repository renders to",
		Long: `Render builds PATH with kustomize (a folder without a kustomization is
built from its Kubernetes YAML files) and prints the objects as a YAML stream.
Nothing outside the folder or repository is read; remote bases need
--allow-remote-bases. The password and token may also come from
REFIT_GIT_PASSWORD and REFIT_GIT_TOKEN, which keeps them out of ps.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", "", "local folder (repository root) to render from")
	fl.StringVar(&f.repo, "repo", "", "Git repository URL (https://, ssh://, file://)")
	fl.StringVar(&f.ref, "ref", "", "branch, tag:NAME, semver:RANGE, commit SHA (default: the remote's default branch)")
	fl.StringVar(&f.path, "path", ".", "path to build, relative to the folder or repository root")
	fl.StringVar(&f.sshKey, "ssh-key", "", "SSH private key file")
	fl.StringVar(&f.knownHosts, "known-hosts", "", "known_hosts file (required for SSH)")
	fl.StringVar(&f.username, "username", "", "HTTPS username")
	fl.StringVar(&f.password, "password", "", "HTTPS password or access token (or REFIT_GIT_PASSWORD)")
	fl.StringVar(&f.token, "token", "", "HTTPS bearer token (or REFIT_GIT_TOKEN)")
	fl.StringVar(&f.cacheDir, "cache-dir", "", "where checked-out revisions are kept (default: the user cache dir)")
	fl.BoolVar(&f.allowRemoteBases, "allow-remote-bases", false, "let kustomizations fetch remote bases")
	fl.DurationVar(&f.timeout, "timeout", time.Minute, "timeout of each Git network call")
	return cmd
}

func (f *renderFlags) run(ctx context.Context, out io.Writer) error {
	root, err := f.root(ctx)
	if err != nil {
		return err
	}
	objs, err := render.Render(ctx, render.Options{Root: root, Path: f.path, AllowRemoteBases: f.allowRemoteBases})
	if err != nil {
		return err
	}
	return render.Encode(out, objs)
}

// root is the folder to render from: --dir, or --repo's revision checked out.
func (f *renderFlags) root(ctx context.Context) (string, error) {
	switch {
	case (f.dir == "") == (f.repo == ""):
		return "", errors.New("set one of --dir and --repo")
	case f.dir != "":
		return f.dir, nil
	}
	opts, err := f.sourceOptions()
	if err != nil {
		return "", err
	}
	p, err := source.NewPoller(opts)
	if err != nil {
		return "", err
	}
	rev, err := p.Poll(ctx)
	if err != nil {
		return "", err
	}
	return rev.Dir, nil
}

func (f *renderFlags) sourceOptions() (source.Options, error) {
	opts := source.DefaultOptions()
	opts.URL, opts.Timeout = f.repo, f.timeout
	ref, err := source.ParseRef(f.ref)
	if err != nil {
		return opts, err
	}
	opts.Ref = ref
	opts.Auth = source.Auth{Username: f.username, Password: f.password, BearerToken: f.token}
	if opts.Auth.Password == "" {
		opts.Auth.Password = os.Getenv("REFIT_GIT_PASSWORD")
	}
	if opts.Auth.BearerToken == "" {
		opts.Auth.BearerToken = os.Getenv("REFIT_GIT_TOKEN")
	}
	for _, file := range []struct {
		name string
		dst  *[]byte
	}{{f.sshKey, &opts.Auth.SSHPrivateKey}, {f.knownHosts, &opts.Auth.KnownHosts}} {
		if file.name == "" {
			continue
		}
		if *file.dst, err = os.ReadFile(file.name); err != nil {
			return opts, err
		}
	}
	opts.CacheDir = f.cacheDir
	if opts.CacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return opts, fmt.Errorf("cache dir: %w (set --cache-dir)", err)
		}
		opts.CacheDir = filepath.Join(base, "refit", "sources")
	}
	return opts, nil
}
