package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// App is one Git path kept in sync with the cluster. Its Secrets and its
// ServiceAccount are looked up in the App's own namespace.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,categories=refit
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Revision",type=string,JSONPath=`.status.lastAppliedRevision`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$')",message="metadata.name: lower-case letters, digits and dashes, at most 52"
type App struct {
	// The name's limit is the config file's: it ends up in the names of the
	// inventory and the webhook path.

	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AppSpec   `json:"spec"`
	Status AppStatus `json:"status,omitempty"`
}

// AppList is a list of Apps.
//
// +kubebuilder:object:root=true
type AppList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []App `json:"items"`
}

// AppSpec is what refit keeps in sync: the same fields as an entry of the
// config file (kind Config).
type AppSpec struct {
	Source Source `json:"source"`

	// Path to build, relative to the repository root.
	// +kubebuilder:default="."
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.split('/').exists(s, s == '..')",message="path: want a path inside the repository (relative, no .. segment)"
	// +optional
	Path string `json:"path,omitempty"`

	// Interval between polls of the Git remote (a cheap ref listing).
	// +kubebuilder:default="1m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="interval: at least 1s"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`

	// DriftInterval: how often the cluster is compared with Git when no
	// new commit arrived, to put back what was changed by hand. Default:
	// ten times the interval.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="driftInterval: want a positive duration"
	// +optional
	DriftInterval *metav1.Duration `json:"driftInterval,omitempty"`

	// Timeout bounds one reconciliation's health wait.
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="timeout: want a positive duration"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// TargetNamespace is the namespace of the namespaced objects that name
	// none. Default: the App's own namespace.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	TargetNamespace string `json:"targetNamespace,omitempty"`

	// Prune deletes what leaves Git (only what this App applied), and what
	// the App applied when the App is deleted.
	// +kubebuilder:default=true
	// +optional
	Prune *bool `json:"prune,omitempty"`

	// AllowEmpty lets a commit that renders no object prune everything the
	// App applied; without it such a commit is a bad commit.
	// +optional
	AllowEmpty bool `json:"allowEmpty,omitempty"`

	// Policy is the default refit.dev/update-policy of the App's workloads.
	// +kubebuilder:default=InPlaceIfPossible
	// +optional
	Policy UpdatePolicy `json:"policy,omitempty"`

	// ServiceAccountName is the ServiceAccount, in the App's namespace,
	// that every request of this App is made as (impersonation).
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// Status says where commit statuses go.
	// +optional
	Status *CommitStatus `json:"status,omitempty"`

	// Webhook lets a Git host trigger an immediate poll.
	// +optional
	Webhook *Webhook `json:"webhook,omitempty"`

	// Suspend stops reconciling the App; nothing is pruned.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// UpdatePolicy says how a workload's changes roll out.
// +kubebuilder:validation:Enum=InPlaceIfPossible;InPlaceOnly;Recreate
type UpdatePolicy string

const (
	InPlaceIfPossible UpdatePolicy = "InPlaceIfPossible"
	InPlaceOnly       UpdatePolicy = "InPlaceOnly"
	Recreate          UpdatePolicy = "Recreate"
)

// Source is a Git repository and ref. The *File fields name files on
// refit's own filesystem, for running outside a cluster: refit honours
// them only where it was told to trust the App's author with its files
// (the config file).
type Source struct {
	// URL of the repository: https://, http://, ssh://, user@host:path or
	// file://.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url"`

	// Ref: a branch, branch:NAME, tag:NAME, semver:RANGE, commit:SHA or
	// a full commit SHA. Default: the remote's HEAD.
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^((branch|tag):[^\s:]+|semver:.+|commit:[0-9a-f]{40}|[^\s:]+)$`
	// +optional
	Ref string `json:"ref,omitempty"`

	// SecretRef names a Secret in the App's namespace with the keys
	// username and password, or token, or identity (an SSH private key)
	// and known_hosts.
	// +optional
	SecretRef *SecretRef `json:"secretRef,omitempty"`

	// +optional
	UsernameFile string `json:"usernameFile,omitempty"`
	// +optional
	PasswordFile string `json:"passwordFile,omitempty"`
	// +optional
	TokenFile string `json:"tokenFile,omitempty"`
	// +optional
	SSHKeyFile string `json:"sshKeyFile,omitempty"`
	// +optional
	KnownHostsFile string `json:"knownHostsFile,omitempty"`

	// Verify requires the head commit to be signed by one of these keys.
	// +optional
	Verify *Verify `json:"verify,omitempty"`

	// Limits cap what one checkout may write.
	// +optional
	Limits *Limits `json:"limits,omitempty"`
}

// Limits cap a checkout (defaults: 64Mi per file, 512Mi and 100,000
// entries per tree).
type Limits struct {
	// +kubebuilder:validation:XValidation:rule="isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",message="maxFileSize: want a positive size such as 64Mi"
	// +kubebuilder:validation:MaxLength=32
	// +optional
	MaxFileSize string `json:"maxFileSize,omitempty"`
	// +kubebuilder:validation:XValidation:rule="isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",message="maxTreeSize: want a positive size such as 512Mi"
	// +kubebuilder:validation:MaxLength=32
	// +optional
	MaxTreeSize string `json:"maxTreeSize,omitempty"`
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxEntries int32 `json:"maxEntries,omitempty"`
}

// Verify names the keys a commit must be signed by: armored OpenPGP public
// keys and/or SSH public keys (authorized_keys lines), from every key of a
// Secret or from a file.
// +kubebuilder:validation:XValidation:rule="has(self.secretRef) != has(self.keysFile)",message="verify: set exactly one of secretRef and keysFile"
type Verify struct {
	// +optional
	SecretRef *SecretRef `json:"secretRef,omitempty"`
	// +optional
	KeysFile string `json:"keysFile,omitempty"`
}

// SecretRef names a Secret in the App's namespace, and a key where one is
// meant.
type SecretRef struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	// +optional
	Key string `json:"key,omitempty"`
}

// CommitStatus says where commit statuses go.
// +kubebuilder:validation:XValidation:rule="has(self.tokenSecretRef) != has(self.tokenFile)",message="status: set exactly one of tokenSecretRef and tokenFile"
// +kubebuilder:validation:XValidation:rule="!has(self.apiURL) || !self.apiURL.startsWith('http://') || (has(self.insecure) && self.insecure) || self.apiURL.matches('^http://(localhost|127[.][0-9]+[.][0-9]+[.][0-9]+|[[]::1[]])(:[0-9]+)?([/?#].*)?$')",message="status.apiURL: plain http sends the token in clear text; use https or set insecure"
type CommitStatus struct {
	// +kubebuilder:validation:Enum=github;gitlab;gitea;bitbucket
	Provider string `json:"provider"`
	// APIURL of a self-hosted host (GitHub Enterprise, GitLab, Gitea).
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHost() != ''",message="status.apiURL: want an http(s) URL"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*@')",message="status.apiURL: credentials in the URL; use tokenSecretRef"
	// +optional
	APIURL string `json:"apiURL,omitempty"`
	// Username for Bitbucket app passwords.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Username string `json:"username,omitempty"`
	// +optional
	TokenSecretRef *SecretRef `json:"tokenSecretRef,omitempty"`
	// +optional
	TokenFile string `json:"tokenFile,omitempty"`
	// Insecure allows a plain http:// API address off loopback: the token
	// then crosses the network in clear text.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
}

// Webhook lets a Git host trigger an immediate poll.
// +kubebuilder:validation:XValidation:rule="has(self.secretSecretRef) != has(self.secretFile)",message="webhook: set exactly one of secretSecretRef and secretFile"
type Webhook struct {
	// +kubebuilder:validation:Enum=github;gitlab;gitea;generic
	Provider string `json:"provider"`
	// +optional
	SecretSecretRef *SecretRef `json:"secretSecretRef,omitempty"`
	// +optional
	SecretFile string `json:"secretFile,omitempty"`
}
