package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"

	"github.com/refit-gitops/refit/api/v1alpha1"
)

// ObjectOptions say how far an App's author is trusted.
type ObjectOptions struct {
	// LocalFiles lets the App name files on refit's own filesystem (the
	// *File fields: credentials, keys, tokens) and local repositories
	// (file://, a path). The config file's author is refit's admin; an App
	// object's is whoever may create Apps in its namespace, who must not
	// have refit read its own ServiceAccount token, keys or another app's
	// checkout for them.
	LocalFiles bool
}

// DefaultObjectOptions are those for App objects from the cluster: no
// local files.
func DefaultObjectOptions() ObjectOptions { return ObjectOptions{} }

// FromObject turns an App object into the App the service runs, with the
// same defaults and checks as an entry of kind Config. It is the one way
// from the App API to an App: the controller uses it for the objects it
// watches, Parse (with LocalFiles) for the App documents of a file.
func FromObject(obj *v1alpha1.App, opts ObjectOptions) (App, error) {
	s := obj.Spec
	a := App{
		Name:               obj.Name,
		AppNamespace:       obj.Namespace,
		Path:               s.Path,
		Interval:           duration(s.Interval),
		DriftInterval:      duration(s.DriftInterval),
		Namespace:          s.TargetNamespace,
		Prune:              s.Prune,
		AllowEmpty:         s.AllowEmpty,
		Timeout:            duration(s.Timeout),
		Policy:             string(s.Policy),
		ServiceAccountName: s.ServiceAccountName,
		Suspend:            s.Suspend,
		Source: Source{
			URL: s.Source.URL, Ref: s.Source.Ref, SecretRef: secretRef(s.Source.SecretRef),
			UsernameFile: s.Source.UsernameFile, PasswordFile: s.Source.PasswordFile, TokenFile: s.Source.TokenFile,
			SSHKeyFile: s.Source.SSHKeyFile, KnownHostsFile: s.Source.KnownHostsFile,
		},
	}
	if a.Prune != nil {
		p := *a.Prune // the object may come from an informer's cache
		a.Prune = &p
	}
	if a.Namespace == "" {
		a.Namespace = obj.Namespace // objects that name no namespace go to the App's
	}
	if v := s.Source.Verify; v != nil {
		a.Source.Verify = &Verify{SecretRef: secretRef(v.SecretRef), KeysFile: v.KeysFile}
	}
	if l := s.Source.Limits; l != nil {
		a.Source.Limits = &Limits{MaxFileSize: l.MaxFileSize, MaxTreeSize: l.MaxTreeSize, MaxEntries: int(l.MaxEntries)}
	}
	if st := s.Status; st != nil {
		a.Status = &Status{Provider: st.Provider, APIURL: st.APIURL, Username: st.Username,
			TokenSecretRef: secretRef(st.TokenSecretRef), TokenFile: st.TokenFile, Insecure: st.Insecure}
	}
	if w := s.Webhook; w != nil {
		a.Webhook = &Webhook{Provider: w.Provider, SecretSecretRef: secretRef(w.SecretSecretRef), SecretFile: w.SecretFile}
	}
	a.Defaults()
	errs := []error{checkObject(s), a.Validate()}
	if !opts.LocalFiles {
		errs = append(errs, checkNoLocalFiles(a))
	}
	return a, errors.Join(errs...)
}

// checkNoLocalFiles refuses what would make refit read its own files.
func checkNoLocalFiles(a App) error {
	var errs []error
	if isLocalURL(a.Source.URL) {
		errs = append(errs, fmt.Errorf("source.url %q: a repository on refit's own filesystem: not allowed for App objects", a.Source.URL))
	}
	files := []struct{ name, v string }{
		{"source.usernameFile", a.Source.UsernameFile}, {"source.passwordFile", a.Source.PasswordFile},
		{"source.tokenFile", a.Source.TokenFile}, {"source.sshKeyFile", a.Source.SSHKeyFile},
		{"source.knownHostsFile", a.Source.KnownHostsFile},
	}
	if v := a.Source.Verify; v != nil {
		files = append(files, struct{ name, v string }{"source.verify.keysFile", v.KeysFile})
	}
	if st := a.Status; st != nil {
		files = append(files, struct{ name, v string }{"status.tokenFile", st.TokenFile})
	}
	if w := a.Webhook; w != nil {
		files = append(files, struct{ name, v string }{"webhook.secretFile", w.SecretFile})
	}
	for _, f := range files {
		if f.v != "" {
			errs = append(errs, fmt.Errorf("%s: a file on refit's own filesystem: not allowed for App objects; use a Secret", f.name))
		}
	}
	return errors.Join(errs...)
}

// isLocalURL reports a repository go-git would open from the local
// filesystem: file://, or no scheme and not scp-like (user@host:path).
func isLocalURL(u string) bool {
	if scheme, _, ok := strings.Cut(u, "://"); ok {
		return strings.EqualFold(scheme, "file")
	}
	colon, slash := strings.IndexByte(u, ':'), strings.IndexByte(u, '/')
	return colon < 0 || (slash >= 0 && slash < colon)
}

// checkObject holds the App API's rules that a Config entry, older, does
// not follow: the CRD's length limits, durations set to zero, and a path
// with no ".." at all (CEL cannot clean a path to see whether it stays
// inside).
func checkObject(s v1alpha1.AppSpec) error {
	var errs []error
	if slices.Contains(strings.Split(s.Path, "/"), "..") {
		errs = append(errs, fmt.Errorf("path %q: want a path inside the repository (relative, no .. segment)", s.Path))
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"path", s.Path, 4096}, {"source.url", s.Source.URL, 2048}, {"source.ref", s.Source.Ref, 256},
	} {
		if len(f.v) > f.max {
			errs = append(errs, fmt.Errorf("%s: at most %d characters", f.name, f.max))
		}
	}
	// A Config entry's zero duration means "the default"; an App's, a
	// pointer, is either unset or what it says (Validate checks the
	// others once the defaults are in).
	for _, d := range []struct {
		name string
		v    *metav1.Duration
		want string
	}{
		{"interval", s.Interval, "at least 1s"}, {"driftInterval", s.DriftInterval, "want a positive duration"}, {"timeout", s.Timeout, "want a positive duration"},
	} {
		if d.v != nil && d.v.Duration == 0 {
			errs = append(errs, fmt.Errorf("%s 0s: %s", d.name, d.want))
		}
	}
	if st := s.Status; st != nil && (len(st.APIURL) > 2048 || len(st.Username) > 256) {
		errs = append(errs, errors.New("status: apiURL at most 2048 characters, username at most 256"))
	}
	return errors.Join(errs...)
}

func duration(d *metav1.Duration) Duration {
	if d == nil {
		return Duration{}
	}
	return Duration{Duration: d.Duration}
}

func secretRef(r *v1alpha1.SecretRef) *SecretRef {
	if r == nil {
		return nil
	}
	return &SecretRef{Name: r.Name, Key: r.Key}
}

// decodeObject reads an App document as the API server would (JSON field
// names, case-sensitive, unknown and duplicate fields refused) and names
// the line of what it refuses.
func decodeObject(doc *yaml.Node) (*v1alpha1.App, error) {
	var v any
	if err := doc.Decode(&v); err != nil {
		return nil, fmt.Errorf("line %d: %w", doc.Line, err)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("line %d: want string keys: %w", doc.Line, err)
	}
	var obj v1alpha1.App
	strict, err := sigsjson.UnmarshalStrict(data, &obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("line %d: %s", errorLine(doc, err.Error()), strings.TrimPrefix(err.Error(), "json: "))
	}
	if len(strict) > 0 {
		errs := make([]error, len(strict))
		for i, e := range strict {
			errs[i] = fmt.Errorf("line %d: %s", errorLine(doc, e.Error()), strings.TrimPrefix(e.Error(), "json: "))
		}
		return nil, errors.Join(errs...)
	}
	return &obj, nil
}

var (
	// What a JSON decoding error says of where it is.
	fieldInError = regexp.MustCompile(`field "([^"]+)"|Go struct field [A-Za-z0-9_]+\.(\S+) of type`)
	valueInError = regexp.MustCompile(`"([^"]+)"`)
)

// errorLine finds the line an error of the JSON decoder speaks of: the
// field it names, else a value it quotes (a duration's parse error names
// only the value), else the document's first line.
func errorLine(doc *yaml.Node, msg string) int {
	if m := fieldInError.FindStringSubmatch(msg); m != nil {
		path := m[1] + m[2]
		if n := walk(doc, strings.Split(path, ".")); n != nil {
			return n.Line
		}
	}
	if m := valueInError.FindStringSubmatch(msg); m != nil {
		if n := find(doc, m[1]); n != nil {
			return n.Line
		}
	}
	return doc.Line
}

// walk follows keys through mappings; it returns the key node of the last
// one found (an unknown field's key is there in the YAML).
func walk(n *yaml.Node, keys []string) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	var last *yaml.Node
	for _, k := range keys {
		if n.Kind != yaml.MappingNode {
			break
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				last, next = n.Content[i], n.Content[i+1]
			}
		}
		if next == nil {
			break
		}
		n = next
	}
	return last
}

// find returns the first scalar whose value is v.
func find(n *yaml.Node, v string) *yaml.Node {
	if n.Kind == yaml.ScalarNode && n.Value == v {
		return n
	}
	for _, c := range n.Content {
		if f := find(c, v); f != nil {
			return f
		}
	}
	return nil
}

// header reads a document's apiVersion and kind, whatever else it holds.
func header(doc *yaml.Node) (apiVersion, kind string) {
	for i := 0; doc.Kind == yaml.MappingNode && i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		if v.Kind != yaml.ScalarNode {
			continue
		}
		switch k.Value {
		case "apiVersion":
			apiVersion = v.Value
		case "kind":
			kind = v.Value
		}
	}
	return apiVersion, kind
}

// SecretNamespace is where the app's Secrets are looked up: the namespace
// of its App object, else refit's own (home), as for a Config entry.
func (a App) SecretNamespace(home string) string {
	if a.AppNamespace != "" {
		return a.AppNamespace
	}
	return home
}

// ServiceAccountNamespace is the namespace of the ServiceAccount the app
// acts as: its App object's, else the app's target namespace, as for a
// Config entry.
func (a App) ServiceAccountNamespace() string {
	if a.AppNamespace != "" {
		return a.AppNamespace
	}
	return a.Namespace
}
