package inplace

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/refit-gitops/refit/diff"
)

// targetOf reads the target images from the desired object.
func targetOf(change diff.Change) (Target, error) {
	spec := podSpecOf(change.Desired)
	if spec == nil {
		return Target{}, fmt.Errorf("%s: no Pod spec", change.Ref)
	}
	t := targetFromImages(imagesOf(spec))
	return withTemplate(t, change, spec)
}

// withTemplate adds the template's resources and metadata to a target of
// images; its revision then covers them too. A target of images alone
// keeps the revision of its images.
func withTemplate(t Target, change diff.Change, spec map[string]any) (Target, error) {
	res, err := resourcesOf(spec)
	if err != nil {
		return t, fmt.Errorf("%s: %w", change.Ref, err)
	}
	t.Resources = res
	t.Labels, t.Annotations, t.RemoveLabels, t.RemoveAnnotations = metadataOf(change)
	extra := append(resourceLines(t.Resources), metadataLines(t)...)
	if len(extra) > 0 {
		sum := sha256.Sum256([]byte(t.Revision + "\n" + strings.Join(extra, "\n")))
		t.Revision = hex.EncodeToString(sum[:])[:12]
	}
	return t, nil
}

// imagesOf lists a Pod spec's images that can change in place: containers
// and restartable init containers (sidecars), keyed "containers/NAME" and
// "initContainers/NAME".
func imagesOf(spec map[string]any) map[string]string {
	out := map[string]string{}
	for _, list := range []string{"containers", "initContainers"} {
		items, _, _ := unstructured.NestedSlice(spec, list)
		for _, item := range items {
			c, _ := item.(map[string]any)
			name, _ := c["name"].(string)
			image, _ := c["image"].(string)
			if policy, _ := c["restartPolicy"].(string); list == "initContainers" && policy != "Always" {
				continue
			}
			out[list+"/"+name] = image
		}
	}
	return out
}

// targetFromImages builds a Target from imagesOf's map; its revision is a
// hash of the images.
func targetFromImages(images map[string]string) Target {
	t := Target{Containers: map[string]string{}, Init: map[string]string{}}
	var keys []string
	for key, image := range images {
		list, name, _ := strings.Cut(key, "/")
		if list == "containers" {
			t.Containers[name] = image
		} else {
			t.Init[name] = image
		}
		keys = append(keys, key+"="+image)
	}
	sort.Strings(keys)
	sum := sha256.Sum256([]byte(strings.Join(keys, "\n")))
	t.Revision = hex.EncodeToString(sum[:])[:12]
	return t
}

// withImages returns a copy of obj whose Pod spec runs images (imagesOf's
// keys); containers it does not name are left alone.
func withImages(obj *unstructured.Unstructured, images map[string]string) (*unstructured.Unstructured, error) {
	out := obj.DeepCopy()
	path := []string{"spec", "template", "spec"}
	if out.GetKind() == "Pod" {
		path = []string{"spec"}
	}
	spec, _, _ := unstructured.NestedMap(out.Object, path...)
	for _, list := range []string{"containers", "initContainers"} {
		items, _, _ := unstructured.NestedSlice(spec, list)
		for _, item := range items {
			c, _ := item.(map[string]any)
			name, _ := c["name"].(string)
			if image, ok := images[list+"/"+name]; ok {
				c["image"] = image
			}
		}
		if len(items) > 0 {
			spec[list] = items
		}
	}
	if err := unstructured.SetNestedMap(out.Object, spec, path...); err != nil {
		return nil, err
	}
	return out, nil
}

func podSpecOf(obj *unstructured.Unstructured) map[string]any {
	path := []string{"spec", "template", "spec"}
	if obj.GetKind() == "Pod" {
		path = []string{"spec"}
	}
	spec, _, _ := unstructured.NestedMap(obj.Object, path...)
	return spec
}
