package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const (
	Group   = "refit.dev"
	Version = "v1alpha1"
	Kind    = "App"
)

// GroupVersion is the group and version of every type here.
var GroupVersion = schema.GroupVersion{Group: Group, Version: Version}

// AddToScheme registers App and AppList with a scheme (a client's, a
// decoder's).
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &App{}, &AppList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
