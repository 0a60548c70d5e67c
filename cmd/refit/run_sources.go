package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/source"
)

func (w *appWiring) sourceOptions(ctx context.Context, a config.App) (source.Options, error) {
	var opts source.Options
	var err error
	if w.flags != nil && w.flags.verifyKeys != "" && w.flags.repo != a.Source.URL {
		// Ignoring it would run unverified what the user meant to verify.
		return opts, errors.New("--verify-keys applies to the --repo app only: set source.verify in the config")
	}
	if w.flags != nil && w.flags.repo == a.Source.URL {
		opts, err = w.flags.sourceOptions() // credentials from flags and environment
	} else {
		opts = source.DefaultOptions()
		opts.URL = a.Source.URL
		if opts.Ref, err = source.ParseRef(a.Source.Ref); err == nil {
			opts.Auth, err = w.auth(ctx, a.Source)
		}
	}
	if err != nil {
		return opts, err
	}
	if a.Source.Verify != nil {
		if opts.Verify, err = w.verifyKeys(ctx, a.Source.Verify); err != nil {
			return opts, fmt.Errorf("source.verify: %w", err)
		}
	}
	if l := a.Source.Limits; l != nil {
		file, tree, err := l.Bytes()
		if err != nil {
			return opts, fmt.Errorf("source.limits: %w", err)
		}
		opts.Checkout = source.CheckoutLimits{MaxFileBytes: file, MaxTreeBytes: tree, MaxEntries: l.MaxEntries}
	}
	opts.CacheDir, err = sourcesCacheDir(w.cacheDir)
	return opts, err
}

// verifyKeys reads the keys commits must be signed by: from a file, and
// from a Secret, where every key holds keys (one key when ref.Key names it).
func (w *appWiring) verifyKeys(ctx context.Context, v *config.Verify) (*source.Keys, error) {
	var srcs []source.KeySource
	if v.KeysFile != "" {
		data, err := os.ReadFile(v.KeysFile)
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, source.KeySource{Name: v.KeysFile, Data: data})
	}
	if ref := v.SecretRef; ref != nil {
		sec, err := w.getSecret(ctx, ref.Name)
		if err != nil {
			return nil, err
		}
		names := slices.Sorted(maps.Keys(sec.Data))
		if ref.Key != "" {
			if _, ok := sec.Data[ref.Key]; !ok {
				return nil, fmt.Errorf("secret %s/%s has no key %q", w.secretsNS, ref.Name, ref.Key)
			}
			names = []string{ref.Key}
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("secret %s/%s holds no keys", w.secretsNS, ref.Name)
		}
		for _, k := range names {
			srcs = append(srcs, source.KeySource{Name: fmt.Sprintf("secret %s/%s key %s", w.secretsNS, ref.Name, k), Data: sec.Data[k]})
		}
	}
	if len(srcs) == 0 {
		return nil, errors.New("set secretRef or keysFile")
	}
	return source.ParseKeys(srcs...)
}

// auth reads Git credentials from the app's Secret and files.
func (w *appWiring) auth(ctx context.Context, s config.Source) (source.Auth, error) {
	var auth source.Auth
	if s.SecretRef != nil {
		sec, err := w.getSecret(ctx, s.SecretRef.Name)
		if err != nil {
			return auth, err
		}
		auth.Username, auth.Password, auth.BearerToken = string(sec.Data["username"]), string(sec.Data["password"]), string(sec.Data["token"])
		auth.SSHPrivateKey, auth.KnownHosts = sec.Data["identity"], sec.Data["known_hosts"]
	}
	err := readFiles(
		textFile{s.UsernameFile, &auth.Username}, textFile{s.PasswordFile, &auth.Password}, textFile{s.TokenFile, &auth.BearerToken},
		byteFile{s.SSHKeyFile, &auth.SSHPrivateKey}, byteFile{s.KnownHostsFile, &auth.KnownHosts})
	return auth, err
}

// secret reads one value from a Secret key (default key def) or a file.
func (w *appWiring) secret(ctx context.Context, ref *config.SecretRef, file, def string) (string, error) {
	if file != "" {
		data, err := os.ReadFile(file)
		return strings.TrimSpace(string(data)), err
	}
	key := ref.Key
	if key == "" {
		key = def
	}
	sec, err := w.getSecret(ctx, ref.Name)
	if err != nil {
		return "", err
	}
	v, ok := sec.Data[key]
	if !ok {
		return "", fmt.Errorf("secret %s/%s has no key %q", w.secretsNS, ref.Name, key)
	}
	return strings.TrimSpace(string(v)), nil
}
