package main

import (
	"context"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"

	"mailroom.io/mailroom/internal/controller/attachment"
	"mailroom.io/mailroom/internal/controller/relaypool"
	"mailroom.io/mailroom/internal/controller/sendingdomain"
	"mailroom.io/mailroom/internal/controller/smtpcredential"
)

// setupReconcilers registers one reconciler per mailroom kind.
func setupReconcilers(mgr ctrl.Manager, relayImage string) error {
	if err := attachment.SetupIndexes(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return fmt.Errorf("indexing pool references: %w", err)
	}
	if err := (&relaypool.Reconciler{
		Client:     mgr.GetClient(),
		APIReader:  mgr.GetAPIReader(),
		Scheme:     mgr.GetScheme(),
		Recorder:   mgr.GetEventRecorder("relaypool-controller"),
		RelayImage: relayImage,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the RelayPool controller: %w", err)
	}
	if err := (&smtpcredential.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder("smtpcredential-controller"),
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the SMTPCredential controller: %w", err)
	}
	if err := (&sendingdomain.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the SendingDomain controller: %w", err)
	}
	if err := registerStatusMetrics(mgr); err != nil {
		return fmt.Errorf("registering the status metrics: %w", err)
	}
	return nil
}
