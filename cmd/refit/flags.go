package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/source"
)

// sourceFlags say where the manifests come from: a local folder or a Git
// repository. render, plan and apply share them.
type sourceFlags struct {
	dir, repo, ref, path string
	sshKey, knownHosts   string
	username, password   string
	token, cacheDir      string
	verifyKeys           string
	maxFileSize          string
	maxTreeSize          string
	allowRemoteBases     bool
	timeout              time.Duration
}

func (f *sourceFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.dir, "dir", "", "local folder (repository root) to read from")
	fl.StringVar(&f.repo, "repo", "", "Git repository URL (https://, ssh://, file://)")
	fl.StringVar(&f.ref, "ref", "", "branch, tag:NAME, semver:RANGE, commit SHA (default: the remote's default branch)")
	fl.StringVar(&f.path, "path", ".", "path to build, relative to the folder or repository root")
	fl.StringVar(&f.sshKey, "ssh-key", "", "SSH private key file")
	fl.StringVar(&f.knownHosts, "known-hosts", "", "known_hosts file (required for SSH)")
	fl.StringVar(&f.username, "username", "", "HTTPS username")
	fl.StringVar(&f.password, "password", "", "HTTPS password or access token (or REFIT_GIT_PASSWORD)")
	fl.StringVar(&f.token, "token", "", "HTTPS bearer token (or REFIT_GIT_TOKEN)")
	fl.StringVar(&f.cacheDir, "cache-dir", "", "where checked-out revisions are kept (default: the user cache dir)")
	fl.StringVar(&f.verifyKeys, "verify-keys", "", "require the commit to be signed by a key of this file (armored OpenPGP public keys, SSH public keys one per line)")
	fl.StringVar(&f.maxFileSize, "max-file-size", "64Mi", "refuse a commit holding a larger file")
	fl.StringVar(&f.maxTreeSize, "max-tree-size", "512Mi", "refuse a commit whose files add up to more")
	fl.BoolVar(&f.allowRemoteBases, "allow-remote-bases", false, "let kustomizations fetch remote bases")
	fl.DurationVar(&f.timeout, "timeout", time.Minute, "timeout of each Git network call")
}

// checkout is the folder to read from: --dir, or --repo's revision checked
// out (rev is nil for --dir).
func (f *sourceFlags) checkout(ctx context.Context) (string, *source.Revision, error) {
	switch {
	case (f.dir == "") == (f.repo == ""):
		return "", nil, errors.New("set one of --dir and --repo")
	case f.dir != "" && f.verifyKeys != "":
		return "", nil, errors.New("--verify-keys needs --repo: a folder has no commit to verify")
	case f.dir != "":
		return f.dir, nil, nil
	}
	opts, err := f.sourceOptions()
	if err != nil {
		return "", nil, err
	}
	p, err := source.NewPoller(opts)
	if err != nil {
		return "", nil, err
	}
	rev, err := p.Poll(ctx)
	if err != nil {
		return "", nil, err
	}
	return rev.Dir, &rev, nil
}

func (f *sourceFlags) sourceOptions() (source.Options, error) {
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
	if err := readFiles(byteFile{f.sshKey, &opts.Auth.SSHPrivateKey}, byteFile{f.knownHosts, &opts.Auth.KnownHosts}); err != nil {
		return opts, err
	}
	if f.verifyKeys != "" {
		data, err := os.ReadFile(f.verifyKeys)
		if err != nil {
			return opts, fmt.Errorf("--verify-keys: %w", err)
		}
		if opts.Verify, err = source.ParseKeys(source.KeySource{Name: f.verifyKeys, Data: data}); err != nil {
			return opts, fmt.Errorf("--verify-keys: %w", err)
		}
	}
	if opts.Checkout.MaxFileBytes, err = config.QuantityBytes(f.maxFileSize); err != nil {
		return opts, fmt.Errorf("--max-file-size: %w", err)
	}
	if opts.Checkout.MaxTreeBytes, err = config.QuantityBytes(f.maxTreeSize); err != nil {
		return opts, fmt.Errorf("--max-tree-size: %w", err)
	}
	opts.CacheDir, err = sourcesCacheDir(f.cacheDir)
	return opts, err
}

// sourcesCacheDir is --cache-dir, or refit/sources in the user's cache.
// Pollers key their trees by URL and ref, so apps can share it.
func sourcesCacheDir(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("cache dir: %w (set --cache-dir)", err)
	}
	return filepath.Join(base, "refit", "sources"), nil
}

// A fileRef is a file to read into a value; an empty path reads nothing.
type fileRef interface{ read() error }

type textFile struct {
	path string
	dst  *string // the content, trimmed (a password, a token)
}

type byteFile struct {
	path string
	dst  *[]byte // the content as it is (a key, known_hosts)
}

func (f textFile) read() error {
	if f.path == "" {
		return nil
	}
	data, err := os.ReadFile(f.path)
	*f.dst = strings.TrimSpace(string(data))
	return err
}

func (f byteFile) read() error {
	if f.path == "" {
		return nil
	}
	data, err := os.ReadFile(f.path)
	*f.dst = data
	return err
}

func readFiles(files ...fileRef) error {
	for _, f := range files {
		if err := f.read(); err != nil {
			return err
		}
	}
	return nil
}
