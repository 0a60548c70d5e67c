package inplace

import (
	"encoding/json"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// rolloutRecord is the content of RolloutAnnotation.
type rolloutRecord struct {
	// ID names the rollout in its Pods' states; it survives re-targeting.
	ID        string    `json:"id"`
	Revision  string    `json:"revision"`
	StartedAt time.Time `json:"startedAt"`
	// Origin are the template's images before the rollout ("containers/NAME"
	// or "initContainers/NAME"): what a rollback goes back to.
	Origin map[string]string `json:"origin,omitempty"`
	// Failed is the revision that failed and is being rolled back.
	Failed string `json:"failed,omitempty"`
	// RemoveLabels and RemoveAnnotations are template keys the rollout
	// removes from its Pods (metadata.go): once the template is written, a
	// new plan no longer sees them.
	RemoveLabels      []string `json:"removeLabels,omitempty"`
	RemoveAnnotations []string `json:"removeAnnotations,omitempty"`
	// OriginResources are the template's containers' resources and
	// OriginMetadata its labels and annotations before the rollout: a
	// rollback restores them with the images. Nil: unknown (a record
	// written before they were kept, a bare Pod), and a rollback leaves
	// them as the failed rollout left them.
	OriginResources map[string]corev1.ResourceRequirements `json:"originResources,omitempty"`
	OriginMetadata  *templateMetadata                      `json:"originMetadata,omitempty"`
}

// templateMetadata is a Pod template's labels and annotations.
type templateMetadata struct {
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// withOrigin keeps in rec what a workload's live template asks for besides
// its images: the resources of each container and the labels and
// annotations, copied (the template may come from a cache).
func withOrigin(rec rolloutRecord, tmpl *corev1.PodTemplateSpec) rolloutRecord {
	rec.OriginResources = map[string]corev1.ResourceRequirements{}
	for _, c := range tmpl.Spec.Containers {
		rec.OriginResources[c.Name] = *c.Resources.DeepCopy()
	}
	rec.OriginMetadata = &templateMetadata{Labels: maps.Clone(tmpl.Labels), Annotations: maps.Clone(tmpl.Annotations)}
	return rec
}

// newRecordOf starts the record of a rollout from the live Pod spec (the
// template's) that it is about to change.
func (e *Engine) newRecordOf(spec *corev1.PodSpec) (rolloutRecord, error) {
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(spec)
	if err != nil {
		return rolloutRecord{}, err
	}
	return rolloutRecord{ID: randomID(), StartedAt: e.now().UTC().Truncate(time.Second), Origin: imagesOf(raw)}, nil
}

// resumed points a record (new, or read from the live workload) at target.
func resumed(rec rolloutRecord, target Target) rolloutRecord {
	if rec.ID == "" {
		rec.ID = randomID() // a record written before rollouts had IDs
	}
	rec.Revision = target.Revision
	return rec
}

// withRecord returns a copy of desired carrying the rollout record.
func withRecord(desired *unstructured.Unstructured, rec rolloutRecord) (*unstructured.Unstructured, error) {
	obj := desired.DeepCopy()
	raw, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[RolloutAnnotation] = string(raw)
	obj.SetAnnotations(ann)
	return obj, nil
}

// readRecord returns the live workload's rollout record, if it has one.
func readRecord(ann map[string]string) (rolloutRecord, bool) {
	var rec rolloutRecord
	raw, ok := ann[RolloutAnnotation]
	if !ok || json.Unmarshal([]byte(raw), &rec) != nil {
		return rec, false
	}
	return rec, true
}

// rolledBackNote is the content of RolledBackAnnotation.
type rolledBackNote struct {
	Revision string    `json:"revision"`
	At       time.Time `json:"at"`
	Reason   string    `json:"reason,omitempty"`
}

func readRolledBack(live *unstructured.Unstructured) (rolledBackNote, bool) {
	var note rolledBackNote
	if live == nil {
		return note, false
	}
	raw, ok := live.GetAnnotations()[RolledBackAnnotation]
	if !ok || json.Unmarshal([]byte(raw), &note) != nil {
		return note, false
	}
	return note, true
}

// withAnnotation returns a copy of obj with one more annotation.
func withAnnotation(obj *unstructured.Unstructured, key, value string) *unstructured.Unstructured {
	out := obj.DeepCopy()
	ann := out.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[key] = value
	out.SetAnnotations(ann)
	return out
}
