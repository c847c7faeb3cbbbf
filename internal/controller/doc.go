// Package controller holds one reconciler per mailroom kind and the
// condition helpers they share. Reconcilers stay thin: they read, compute
// desired objects with pure functions from the domain packages, apply with
// no-op detection, and set status.
package controller

// Every reconciler records Events on the objects it manages.
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
