// Package pooltest runs the RelayPool and SMTPCredential controllers in one
// manager against an envtest API server, wired as cmd/manager wires them
// (the label-selected cache, the attachment indexes, the uncached API
// reader), for the controller tests of both packages.
package pooltest

import (
	"context"
	"testing"
	"time"

	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"mailroom.io/mailroom/internal/controller"
	"mailroom.io/mailroom/internal/controller/attachment"
	"mailroom.io/mailroom/internal/controller/relaypool"
	"mailroom.io/mailroom/internal/controller/smtpcredential"
	"mailroom.io/mailroom/internal/testutil/envtest"
	"mailroom.io/mailroom/internal/testutil/writecount"
)

// Manager is a running manager with both controllers.
type Manager struct {
	Ctx context.Context
	// Client is the manager's (cached) client; Writes counts what the
	// controllers write through it.
	Client client.Client
	Writes *writecount.Counter
	Pool   *relaypool.Reconciler
	Creds  *smtpcredential.Reconciler
}

// Start runs the controllers until the test ends. relays answers for the
// relay pods (nil: nobody does); configure, when set, adjusts the
// reconcilers (clocks, resync periods) before they start.
func Start(t *testing.T, env *envtest.Env, relays relaypool.StatusReader, configure func(*Manager)) *Manager {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Cache: controller.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		// Each test runs its own manager in this process.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := attachment.SetupIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		t.Fatal(err)
	}
	c, writes := writecount.WrapClient(mgr.GetClient(), env.Scheme)
	m := &Manager{Ctx: ctx, Client: c, Writes: writes,
		Pool: &relaypool.Reconciler{Client: c, APIReader: mgr.GetAPIReader(), Scheme: env.Scheme, RelayImage: "localhost/mailroom:test", Relays: relays,
			Recorder: mgr.GetEventRecorder("relaypool-controller")},
		Creds: &smtpcredential.Reconciler{Client: c, APIReader: mgr.GetAPIReader(), Scheme: env.Scheme,
			Recorder: mgr.GetEventRecorder("smtpcredential-controller")},
	}
	if configure != nil {
		configure(m)
	}
	if err := m.Pool.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	if err := m.Creds.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	return m
}

// Eventually polls f until it returns nil, failing the test with f's last
// error when within has passed.
func Eventually(t *testing.T, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}
