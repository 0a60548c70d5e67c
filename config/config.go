// Package config reads refit's service configuration: the apps to keep in
// sync, where their manifests come from, and where their commit statuses
// go, from App objects (apiVersion refit.dev/v1alpha1, kind App, the App
// API) or from the older list of kind Config, into one Go value. Parsing
// is strict: an unknown field is an error with its line. It does not read
// secrets or talk to a cluster.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

const (
	APIVersion = "refit.dev/v1alpha1"
	Kind       = "Config"
)

// Config is the whole file: a document of kind Config and/or documents
// of kind App.
type Config struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	// Apps to run, in the file's order.
	Apps []App `yaml:"apps"`
	// Suspended apps, checked like the others but not to be run.
	Suspended []App `yaml:"-"`
}

// App is one Git path kept in sync with the cluster.
type App struct {
	Name   string `yaml:"name"`
	Source Source `yaml:"source"`
	// Path to build, relative to the repository root.
	Path string `yaml:"path"`
	// Interval between polls of the Git remote (a cheap ref listing).
	Interval Duration `yaml:"interval"`
	// DriftInterval: how often the cluster is compared with Git when no
	// new commit arrived, to put back what was changed by hand.
	DriftInterval Duration `yaml:"driftInterval"`
	// Namespace for namespaced objects that name none.
	Namespace string `yaml:"namespace"`
	Prune     *bool  `yaml:"prune"`
	// AllowEmpty lets a commit that renders no object prune everything
	// the app applied; without it such a commit is a bad commit.
	AllowEmpty bool `yaml:"allowEmpty"`
	// Timeout bounds one reconciliation's health wait.
	Timeout Duration `yaml:"timeout"`
	// Policy is the default refit.dev/update-policy.
	Policy  string   `yaml:"policy"`
	Status  *Status  `yaml:"status"`
	Webhook *Webhook `yaml:"webhook"`
	// ServiceAccountName is the ServiceAccount, in Namespace, that every
	// request of this app is made as (impersonation); empty means refit's
	// --default-service-account, and with none of either refit's own.
	ServiceAccountName string `yaml:"serviceAccountName"`
	// Suspend: the app is checked but not run; nothing is pruned.
	Suspend bool `yaml:"suspend"`
	// AppNamespace is the namespace of the App object the app comes from:
	// its Secrets and its ServiceAccount are looked up there. Empty for an
	// entry of kind Config or an App document naming no namespace: Secrets
	// in refit's own namespace, the ServiceAccount in Namespace.
	AppNamespace string `yaml:"-"`
}

// Source is a Git repository and ref.
type Source struct {
	URL string `yaml:"url"`
	// Ref: a branch, tag:NAME, semver:RANGE or a commit SHA.
	Ref string `yaml:"ref"`
	// SecretRef names a Secret in refit's namespace with keys username,
	// password, token, identity (SSH private key), known_hosts.
	SecretRef *SecretRef `yaml:"secretRef"`
	// Files, for running outside a cluster.
	UsernameFile   string `yaml:"usernameFile"`
	PasswordFile   string `yaml:"passwordFile"`
	TokenFile      string `yaml:"tokenFile"`
	SSHKeyFile     string `yaml:"sshKeyFile"`
	KnownHostsFile string `yaml:"knownHostsFile"`
	// Verify requires the head commit to be signed by one of these keys.
	Verify *Verify `yaml:"verify"`
	// Limits cap what one checkout may write (defaults: 64Mi per file,
	// 512Mi and 100,000 entries per tree).
	Limits *Limits `yaml:"limits"`
}

// Limits cap a checkout: sizes as Kubernetes quantities ("64Mi").
type Limits struct {
	MaxFileSize string `yaml:"maxFileSize"`
	MaxTreeSize string `yaml:"maxTreeSize"`
	MaxEntries  int    `yaml:"maxEntries"`
}

// Bytes returns the two sizes in bytes, 0 where unset.
func (l *Limits) Bytes() (file, tree int64, err error) {
	if file, err = QuantityBytes(l.MaxFileSize); err != nil {
		return 0, 0, fmt.Errorf("maxFileSize: %w", err)
	}
	if tree, err = QuantityBytes(l.MaxTreeSize); err != nil {
		return 0, 0, fmt.Errorf("maxTreeSize: %w", err)
	}
	return file, tree, nil
}

// QuantityBytes reads a positive size such as 64Mi or 1G; "" is 0.
func QuantityBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("%q: want a size such as 64Mi", s)
	}
	if q.Sign() <= 0 {
		return 0, fmt.Errorf("%q: want a positive size", s)
	}
	return q.Value(), nil
}

// Verify names the keys a commit must be signed by: armored OpenPGP public
// keys and/or SSH public keys (authorized_keys lines), from every key of a
// Secret or from a file.
type Verify struct {
	SecretRef *SecretRef `yaml:"secretRef"`
	KeysFile  string     `yaml:"keysFile"`
}

// SecretRef names a Secret (and a key, where one is meant).
type SecretRef struct {
	Name string `yaml:"name"`
	Key  string `yaml:"key"`
}

// Status says where commit statuses go.
type Status struct {
	// Provider: github, gitlab, gitea or bitbucket.
	Provider string `yaml:"provider"`
	// APIURL for a self-hosted host (GitHub Enterprise, GitLab, Gitea).
	APIURL         string     `yaml:"apiURL"`
	Username       string     `yaml:"username"` // Bitbucket app passwords
	TokenSecretRef *SecretRef `yaml:"tokenSecretRef"`
	TokenFile      string     `yaml:"tokenFile"`
	// Insecure allows a plain http:// API address off loopback: the token
	// then crosses the network in clear text.
	Insecure bool `yaml:"insecure"`
}

// Webhook lets a Git host trigger an immediate poll at /hook/<app name>.
type Webhook struct {
	// Provider: github, gitlab, gitea or generic.
	Provider        string     `yaml:"provider"`
	SecretSecretRef *SecretRef `yaml:"secretSecretRef"`
	SecretFile      string     `yaml:"secretFile"`
}

// Duration is a time.Duration written as "1m30s".
type Duration struct{ time.Duration }

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a duration such as 1m: %w", n.Line, err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	d.Duration = v
	return nil
}

// MaxSize is the largest config file read, in bytes: a config of hundreds
// of apps is well under it.
const MaxSize = 1 << 20

// Load reads and checks the file at path.
func Load(file string) (*Config, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", file)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return cfg, nil
}

// Defaults fills the fields left empty.
func (a *App) Defaults() {
	if a.Path == "" {
		a.Path = "."
	}
	if a.Interval.Duration == 0 {
		a.Interval.Duration = time.Minute
	}
	if a.DriftInterval.Duration == 0 {
		a.DriftInterval.Duration = 10 * a.Interval.Duration
	}
	if a.Namespace == "" {
		a.Namespace = "default"
	}
	if a.Prune == nil {
		t := true
		a.Prune = &t
	}
	if a.Timeout.Duration == 0 {
		a.Timeout.Duration = 5 * time.Minute
	}
	if a.Policy == "" {
		a.Policy = "InPlaceIfPossible"
	}
}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$`)
	// refRE is the syntax of source.ref, the App API's (api/v1alpha1)
	// pattern: Git forbids ':' and spaces in ref names.
	refRE = regexp.MustCompile(`^((branch|tag):[^\s:]+|semver:.+|commit:[0-9a-f]{40}|[^\s:]+)$`)
)

// Validate checks an app whose defaults are filled.
func (a *App) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !nameRE.MatchString(a.Name) {
		add("name %q: lower-case letters, digits and dashes, at most 52", a.Name)
	}
	if a.Source.URL == "" {
		add("source.url is required")
	}
	if a.Source.Ref != "" && !refRE.MatchString(a.Source.Ref) {
		add("source.ref %q: want a branch, branch:NAME, tag:NAME, semver:RANGE, commit:SHA or a full commit SHA", a.Source.Ref)
	}
	if path.IsAbs(a.Path) || escapes(a.Path) || strings.ContainsRune(a.Path, 0) {
		add("path %q: want a path inside the repository (relative, not climbing out with ..)", a.Path)
	}
	if a.Interval.Duration < time.Second {
		add("interval %s: at least 1s", a.Interval.Duration)
	}
	if a.DriftInterval.Duration <= 0 {
		add("driftInterval %s: want a positive duration", a.DriftInterval.Duration)
	}
	if a.Timeout.Duration <= 0 {
		add("timeout %s: want a positive duration", a.Timeout.Duration)
	}
	if msgs := validation.IsDNS1123Label(a.Namespace); len(msgs) > 0 {
		add("namespace %q: %s", a.Namespace, strings.Join(msgs, "; "))
	}
	if a.ServiceAccountName != "" {
		if msgs := validation.IsDNS1123Subdomain(a.ServiceAccountName); len(msgs) > 0 {
			add("serviceAccountName %q: %s", a.ServiceAccountName, strings.Join(msgs, "; "))
		}
	}
	switch a.Policy {
	case "InPlaceIfPossible", "InPlaceOnly", "Recreate":
	default:
		add("policy %q: want InPlaceIfPossible, InPlaceOnly or Recreate", a.Policy)
	}
	errs = append(errs, checkRef("source.secretRef", a.Source.SecretRef))
	if v := a.Source.Verify; v != nil {
		errs = append(errs, exactlyOne("source.verify", "secretRef", v.SecretRef != nil, "keysFile", v.KeysFile != ""))
		errs = append(errs, checkRef("source.verify.secretRef", v.SecretRef))
	}
	if l := a.Source.Limits; l != nil {
		if _, _, err := l.Bytes(); err != nil {
			add("source.limits.%v", err)
		}
		if l.MaxEntries < 0 {
			add("source.limits.maxEntries %d: want a positive number", l.MaxEntries)
		}
	}
	if s := a.Status; s != nil {
		switch s.Provider {
		case "github", "gitlab", "gitea", "bitbucket":
		default:
			add("status.provider %q: want github, gitlab, gitea or bitbucket", s.Provider)
		}
		errs = append(errs, exactlyOne("status", "tokenSecretRef", s.TokenSecretRef != nil, "tokenFile", s.TokenFile != ""))
		errs = append(errs, checkRef("status.tokenSecretRef", s.TokenSecretRef))
		errs = append(errs, checkAPIURL(s.APIURL, s.Insecure))
	}
	if w := a.Webhook; w != nil {
		switch w.Provider {
		case "github", "gitlab", "gitea", "generic":
		default:
			add("webhook.provider %q: want github, gitlab, gitea or generic", w.Provider)
		}
		errs = append(errs, exactlyOne("webhook", "secretSecretRef", w.SecretSecretRef != nil, "secretFile", w.SecretFile != ""))
		errs = append(errs, checkRef("webhook.secretSecretRef", w.SecretSecretRef))
	}
	return errors.Join(errs...)
}

// escapes reports whether a relative path climbs out of its root.
func escapes(p string) bool {
	c := path.Clean(p)
	return c == ".." || strings.HasPrefix(c, "../")
}

// exactlyOne checks that one of two alternative fields is set.
func exactlyOne(where, a string, hasA bool, b string, hasB bool) error {
	switch {
	case hasA && hasB:
		return fmt.Errorf("%s: set %s or %s, not both", where, a, b)
	case !hasA && !hasB:
		return fmt.Errorf("%s: set %s or %s", where, a, b)
	}
	return nil
}

// checkRef checks a Secret reference's name, and its key when it has one.
func checkRef(where string, ref *SecretRef) error {
	if ref == nil {
		return nil
	}
	var errs []error
	if msgs := validation.IsDNS1123Subdomain(ref.Name); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("%s.name %q: %s", where, ref.Name, strings.Join(msgs, "; ")))
	}
	if ref.Key != "" {
		if msgs := validation.IsConfigMapKey(ref.Key); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("%s.key %q: %s", where, ref.Key, strings.Join(msgs, "; ")))
		}
	}
	return errors.Join(errs...)
}

// checkAPIURL refuses a commit-status API address the token must not be
// sent to: not http(s), carrying credentials, or plain http off loopback
// without insecure (the status package refuses it too; here the config
// says which app).
func checkAPIURL(raw string, insecure bool) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("status.apiURL: want an http(s) URL")
	}
	if u.User != nil {
		return fmt.Errorf("status.apiURL: credentials in the URL; use tokenSecretRef or tokenFile")
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	if u.Scheme == "http" && !insecure && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("status.apiURL %s: plain http sends the token in clear text; use https or set status.insecure", u.Redacted())
	}
	return nil
}
