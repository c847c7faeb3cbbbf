// Package v1alpha1 contains the mailroom.io/v1alpha1 API: SendingDomain,
// SMTPCredential and RelayPool.
//
// +kubebuilder:object:generate=true
// +groupName=mailroom.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every mailroom kind.
	GroupVersion = schema.GroupVersion{Group: "mailroom.io", Version: "v1alpha1"}

	// SchemeBuilder registers the mailroom kinds with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the mailroom kinds to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
