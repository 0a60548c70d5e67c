package diff

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Action is what applying the plan does to one object.
type Action string

const (
	Create    Action = "Create"
	Update    Action = "Update"
	Delete    Action = "Delete"
	Unchanged Action = "Unchanged"
)

// Class says whether an update of a workload can be done in place.
type Class string

const (
	// ImageOnly: only container images of the Pod template (or Pod spec)
	// differ.
	ImageOnly Class = "ImageOnly"
	// PodMutable: only fields a running Pod takes in place differ: images,
	// CPU and memory requests and limits (pods/resize), and template labels
	// and annotations outside the selector; see Change.InPlace.
	PodMutable Class = "PodMutable"
	// Structural: anything else differs.
	Structural Class = "Structural"
)

// InPlace reports whether a change of this class can reach running Pods
// without replacing them.
func (c Class) InPlace() bool { return c == ImageOnly || c == PodMutable }

// Policy is a workload's update policy, from the refit.dev/update-policy
// annotation in Git.
type Policy string

const (
	InPlaceIfPossible Policy = "InPlaceIfPossible"
	InPlaceOnly       Policy = "InPlaceOnly"
	Recreate          Policy = "Recreate"
)

// PolicyAnnotation selects a workload's Policy.
const PolicyAnnotation = "refit.dev/update-policy"

// Path is how an update reaches the cluster.
type Path string

const (
	// PathInPlace: the live Pods' images are patched.
	PathInPlace Path = "InPlace"
	// PathRecreate: server-side apply; the workload controller replaces Pods.
	PathRecreate Path = "Recreate"
	// PathApply: server-side apply of a workload change that leaves the
	// Pod template alone (replicas, strategy, labels): no Pod is replaced.
	PathApply Path = "Apply"
	// PathRefused: nothing is changed (an InPlaceOnly workload with a
	// structural change).
	PathRefused Path = "Refused"
)

// Ref identifies an object.
type Ref struct {
	Group     string `json:"group,omitempty"`
	Version   string `json:"version"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// RefOf returns the Ref of obj.
func RefOf(obj *unstructured.Unstructured) Ref {
	gvk := obj.GroupVersionKind()
	return Ref{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind, Namespace: obj.GetNamespace(), Name: obj.GetName()}
}

// GroupKind of the object.
func (r Ref) GroupKind() schema.GroupKind { return schema.GroupKind{Group: r.Group, Kind: r.Kind} }

func (r Ref) String() string {
	kind := r.Kind
	if r.Group != "" {
		kind += "." + r.Group
	}
	if r.Namespace == "" {
		return kind + "/" + r.Name
	}
	return kind + "/" + r.Namespace + "/" + r.Name
}

// ImageChange is one container whose image changes.
type ImageChange struct {
	Container string `json:"container"`
	// Init is set for a restartable init container (a sidecar).
	Init bool   `json:"init,omitempty"`
	From string `json:"from"`
	To   string `json:"to"`
}

// Change is the plan for one object.
type Change struct {
	Ref    Ref    `json:"ref"`
	Source string `json:"source,omitempty"` // the file in Git it came from
	Action Action `json:"action"`
	// Class, Policy and Path are set for updates of workloads.
	Class  Class         `json:"class,omitempty"`
	Policy Policy        `json:"policy,omitempty"`
	Path   Path          `json:"path,omitempty"`
	Images []ImageChange `json:"images,omitempty"`
	// InPlace lists what goes in place (image, resources, metadata) for a
	// change of class ImageOnly or PodMutable; Resources and Metadata are
	// the changes of the last two.
	InPlace   []Aspect         `json:"inPlace,omitempty"`
	Resources []ResourceChange `json:"resources,omitempty"`
	Metadata  []MetadataChange `json:"metadata,omitempty"`
	// Fields are the paths that differ, for updates that are not ImageOnly,
	// e.g. spec.template.spec.containers[name=main].env.
	Fields []string `json:"fields,omitempty"`
	// Reason explains Path when it is not the obvious one.
	Reason string `json:"reason,omitempty"`

	// Desired is the object as rendered from Git (nil for a Delete).
	Desired *unstructured.Unstructured `json:"-"`
	// Live is the object in the cluster before the change (nil for a Create).
	Live *unstructured.Unstructured `json:"-"`
	// Merged is what the API server would make of applying Desired to Live
	// (a server-side-apply dry-run); nil when it could not be computed yet
	// (a Create into a namespace or of a kind that the plan creates first).
	Merged *unstructured.Unstructured `json:"-"`
}

// Plan is the classified difference between Git and the cluster.
type Plan struct {
	Changes []Change `json:"changes"`
}

// Summary counts a plan's changes.
type Summary struct {
	Create, Update, Delete, Unchanged int
	InPlace, Recreate, Refused        int
}

// Summary counts the plan's changes by action and by path.
func (p *Plan) Summary() Summary {
	var s Summary
	for _, c := range p.Changes {
		switch c.Action {
		case Create:
			s.Create++
		case Update:
			s.Update++
		case Delete:
			s.Delete++
		case Unchanged:
			s.Unchanged++
		}
		switch c.Path {
		case PathInPlace:
			s.InPlace++
		case PathRecreate:
			s.Recreate++
		case PathRefused:
			s.Refused++
		}
	}
	return s
}

// HasChanges reports whether applying the plan would change anything.
func (p *Plan) HasChanges() bool {
	for _, c := range p.Changes {
		if c.Action != Unchanged {
			return true
		}
	}
	return false
}

func (s Summary) String() string {
	return fmt.Sprintf("%d to create, %d to update (%d in place, %d recreate, %d refused), %d to delete, %d unchanged",
		s.Create, s.Update, s.InPlace, s.Recreate, s.Refused, s.Delete, s.Unchanged)
}
