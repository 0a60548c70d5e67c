package inplace

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// unstructuredSet sets a field of obj, creating the maps on the way.
func unstructuredSet(obj *unstructured.Unstructured, value any, path ...string) error {
	return unstructured.SetNestedField(obj.Object, value, path...)
}
