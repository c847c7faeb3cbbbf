package main

import (
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"

	"mailroom.io/mailroom/internal/controller"
)

// setupReconcilers registers one reconciler per mailroom kind.
func setupReconcilers(mgr ctrl.Manager) error {
	if err := (&controller.SendingDomainReconciler{
		Client: mgr.GetClient(),
		Scheme: mgr.GetScheme(),
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the SendingDomain controller: %w", err)
	}
	return nil
}
