// Package relayhost runs the real relay process for one RelayPool pod in
// an envtest cluster, where no kubelet runs: it plays kubelet and the
// projected volumes (copying the pool's rendered Secrets into a directory,
// rewriting the pod's paths and ports to the test's), starts cmd/relay on
// loopback, and creates the pod object, Ready as kubelet would report it.
// The pool controller then reads the relay's real /status through
// Host.Read (a relaypool.StatusReader).
package relayhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/relaypool"
	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/relayconfig"
)

// Host is one relay process standing for pod <pool>-relay-0.
type Host struct {
	// MXPort, when set before Start, is the port the relay delivers to
	// (a test's sink) instead of 25.
	MXPort int

	t     *testing.T
	c     client.Client
	pool  *v1alpha1.RelayPool
	dir   string
	ports map[string]int

	mu      sync.Mutex
	running bool
}

// New prepares a host for pool's first pod; Start runs it. Until then Read
// reports the relay unreachable.
func New(t *testing.T, c client.Client, pool *v1alpha1.RelayPool) *Host {
	return &Host{t: t, c: c, pool: pool, dir: t.TempDir(), ports: map[string]int{
		"submission": freePort(t), "submissions": freePort(t), "http": freePort(t), "admin": freePort(t)}}
}

// Read implements relaypool.StatusReader for the one pod this host runs.
func (h *Host) Read(ctx context.Context, pod *corev1.Pod) (relaypool.RelayStatus, error) {
	h.mu.Lock()
	running := h.running
	h.mu.Unlock()
	if !running {
		return relaypool.RelayStatus{}, fmt.Errorf("no relay process for %s", pod.Name)
	}
	return relaypool.HTTPStatusReader{Port: h.ports["http"]}.Read(ctx, pod)
}

// Load mirrors the pool's Secrets once and reads them with the relay's own
// loader, as a pod would see them; it retries while the operator has not
// written them all yet.
func (h *Host) Load(ctx context.Context, within time.Duration) (*config.Config, error) {
	deadline := time.Now().Add(within)
	for {
		err := h.sync(ctx)
		if err == nil {
			return config.Load(filepath.Join(h.dir, "config", relayconfig.MainFile))
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// SubmissionAddr is the relay's STARTTLS submission listener.
func (h *Host) SubmissionAddr() string { return fmt.Sprintf("127.0.0.1:%d", h.ports["submission"]) }

// Start waits until the operator has rendered the pool's Secrets, starts
// the relay on them (re-syncing them as the operator changes them), and
// creates the pod, Ready. Everything stops at the end of the test.
func (h *Host) Start(ctx context.Context, within time.Duration) {
	t := h.t
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for err = h.sync(ctx); err != nil; err = h.sync(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("relayhost: the pool's rendered Secrets: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
				_ = h.sync(ctx)
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })

	logFile, err := os.Create(filepath.Join(h.dir, "relay.log"))
	if err != nil {
		t.Fatal(err)
	}
	relay := exec.Command(relayBinary(t), "--config", filepath.Join(h.dir, "config", relayconfig.MainFile), "--log-format", "text")
	relay.Stdout, relay.Stderr = logFile, logFile
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = relay.Process.Kill()
		_ = relay.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("relay log:\n%s", b)
		}
	})
	h.mu.Lock()
	h.running = true
	h.mu.Unlock()

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.pool.Namespace, Name: relayconfig.StatefulSetName(h.pool.Name) + "-0", Labels: relaypool.SelectorLabels(h.pool)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "relay", Image: "localhost/mailroom:test"}}},
	}
	if err := h.c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1",
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if err := h.c.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

func (h *Host) secret(ctx context.Context, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	err := h.c.Get(ctx, client.ObjectKey{Namespace: h.pool.Namespace, Name: name}, &s)
	return &s, err
}

func (h *Host) write(rel string, data []byte) error {
	p := filepath.Join(h.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// sync writes the pool's Secrets as the pod would see them mounted, with
// the pod's paths and ports rewritten to this host's.
func (h *Host) sync(ctx context.Context) error {
	cfgDir := filepath.Join(h.dir, "config")
	for _, m := range []struct{ secret, dir string }{{relaypool.TLSSecretName(h.pool), "tls"}, {relaypool.PeerSecretName(h.pool.Name), "peer"}} {
		s, err := h.secret(ctx, m.secret)
		if err != nil {
			return err
		}
		for key, v := range s.Data {
			if err := h.write(filepath.Join(m.dir, key), v); err != nil {
				return err
			}
		}
	}
	main, err := h.secret(ctx, relayconfig.MainSecretName(h.pool.Name))
	if err != nil {
		return err
	}
	var c config.Config
	if err := yaml.UnmarshalStrict(main.Data[relayconfig.MainFile], &c); err != nil {
		return err
	}
	c.Include = nil
	for i := 0; i < relayconfig.NumShards; i++ {
		s, err := h.secret(ctx, relayconfig.ShardSecretName(h.pool.Name, i))
		if err != nil {
			return err
		}
		for key, v := range s.Data {
			v = []byte(strings.ReplaceAll(string(v), relayconfig.ConfigDir, cfgDir))
			if err := h.write(filepath.Join("config", key), v); err != nil {
				return err
			}
			if key == relayconfig.ShardFile(i) {
				sum := sha256.Sum256(v)
				c.Include = append(c.Include, config.Include{File: filepath.Join(cfgDir, key), SHA256: hex.EncodeToString(sum[:])})
			}
		}
	}
	c.TLS.CertFile, c.TLS.KeyFile = filepath.Join(h.dir, "tls", corev1.TLSCertKey), filepath.Join(h.dir, "tls", corev1.TLSPrivateKeyKey)
	c.Peer = nil // one relay: nobody to hand over to
	c.Listeners = config.Listeners{
		Submission:  fmt.Sprintf("127.0.0.1:%d", h.ports["submission"]),
		Submissions: fmt.Sprintf("127.0.0.1:%d", h.ports["submissions"]),
		HTTP:        fmt.Sprintf("127.0.0.1:%d", h.ports["http"]),
		Admin:       fmt.Sprintf("127.0.0.1:%d", h.ports["admin"]),
	}
	c.Queue.Directory = filepath.Join(h.dir, "spool")
	if h.MXPort != 0 {
		c.Delivery.MXPort = h.MXPort
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return h.write(filepath.Join("config", relayconfig.MainFile), b)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func relayBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "relay")
	out, err := exec.Command("go", "build", "-o", bin, "mailroom.io/mailroom/cmd/relay").CombinedOutput()
	if err != nil {
		t.Fatalf("building the relay: %v\n%s", err, out)
	}
	return bin
}
