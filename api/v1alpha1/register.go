package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of weir's own kinds.
var GroupVersion = schema.GroupVersion{Group: "weir.dev", Version: "v1alpha1"}

// AddToScheme registers weir's kinds with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &TrafficPolicy{}, &TrafficPolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
