package inplace

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// unstructuredSet sets a field of obj, creating the maps on the way.
func unstructuredSet(obj *unstructured.Unstructured, value any, path ...string) error {
	return unstructured.SetNestedField(obj.Object, value, path...)
}

// fromUnstructured converts obj into a typed object.
func fromUnstructured(obj *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, into)
}
