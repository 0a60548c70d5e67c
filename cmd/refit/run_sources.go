package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/source"
)

func (w *appWiring) sourceOptions(ctx context.Context, a config.App) (source.Options, error) {
	var opts source.Options
	var err error
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
	opts.CacheDir, err = sourcesCacheDir(w.cacheDir)
	return opts, err
}

// auth reads Git credentials from the app's Secret and files.
func (w *appWiring) auth(ctx context.Context, s config.Source) (source.Auth, error) {
	var auth source.Auth
	if s.SecretRef != nil {
		sec, err := w.client.CoreV1().Secrets(w.secretsNS).Get(ctx, s.SecretRef.Name, metav1.GetOptions{})
		if err != nil {
			return auth, fmt.Errorf("secret %s/%s: %w", w.secretsNS, s.SecretRef.Name, err)
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
	sec, err := w.client.CoreV1().Secrets(w.secretsNS).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("secret %s/%s: %w", w.secretsNS, ref.Name, err)
	}
	v, ok := sec.Data[key]
	if !ok {
		return "", fmt.Errorf("secret %s/%s has no key %q", w.secretsNS, ref.Name, key)
	}
	return strings.TrimSpace(string(v)), nil
}
