// Package relayhost runs the real relay process for one RelayPool pod in
// an envtest cluster, where no kubelet runs, for the duration of a test:
// internal/relayhost plays kubelet and the projected volumes (copying the
// pool's rendered Secrets into a directory, rewriting the pod's paths and
// ports to the test's), starts cmd/relay on loopback, and creates the pod
// object, Ready as kubelet would report it. The pool controller then reads
// the relay's real /status through Host.Read (a relaypool.StatusReader).
package relayhost

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/relaypool"
	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/relayhost"
)

// Host is one relay process standing for pod <pool>-relay-0.
type Host struct {
	// MXPort, when set before Start, is the port the relay delivers to
	// (a test's sink) instead of 25.
	MXPort int

	t *testing.T
	h *relayhost.Host
}

// New prepares a host for pool's first pod; Start runs it. Until then Read
// reports the relay unreachable.
func New(t *testing.T, c client.Client, pool *v1alpha1.RelayPool) *Host {
	h, err := relayhost.New(c, pool, t.TempDir(), relayhost.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &Host{t: t, h: h}
}

// Read implements relaypool.StatusReader for the one pod this host runs.
func (h *Host) Read(ctx context.Context, pod *corev1.Pod) (relaypool.RelayStatus, error) {
	return h.h.Read(ctx, pod)
}

// Load mirrors the pool's Secrets once and reads them with the relay's own
// loader, as a pod would see them; it retries while the operator has not
// written them all yet.
func (h *Host) Load(ctx context.Context, within time.Duration) (*config.Config, error) {
	h.h.SetMXPort(h.MXPort)
	return h.h.Load(ctx, within)
}

// SubmissionAddr is the relay's STARTTLS submission listener.
func (h *Host) SubmissionAddr() string { return h.h.SubmissionAddr() }

// APIAddr is the relay's HTTP send API listener (when the pool enables it).
func (h *Host) APIAddr() string { return h.h.APIAddr() }

// Start waits until the operator has rendered the pool's Secrets, starts
// the relay on them (re-syncing them as the operator changes them), and
// creates the pod, Ready. Everything stops at the end of the test.
func (h *Host) Start(ctx context.Context, within time.Duration) {
	t := h.t
	t.Helper()
	h.h.SetMXPort(h.MXPort)
	h.h.SetRelay(relayBinary(t))
	t.Cleanup(func() {
		h.h.Stop()
		if t.Failed() {
			t.Logf("relay log:\n%s", h.h.Log())
		}
	})
	if err := h.h.Start(ctx, within); err != nil {
		t.Fatal(err)
	}
}

// relayBinary builds cmd/relay for the test.
func relayBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "relay")
	out, err := exec.Command("go", "build", "-o", bin, "mailroom.io/mailroom/cmd/relay").CombinedOutput()
	if err != nil {
		t.Fatalf("building the relay: %v\n%s", err, out)
	}
	return bin
}
