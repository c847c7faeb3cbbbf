// Package relayhost runs the real relay process for one RelayPool pod where
// no kubelet runs (an envtest control plane: the tests and `make
// demo-local`): it plays kubelet and the projected volumes, copying the
// pool's operator-rendered Secrets into a directory with the pod's paths
// and ports rewritten to local ones, keeps that copy in step as the
// operator changes the Secrets, starts cmd/relay on it on a loopback
// address, and creates the pod object, Ready as kubelet would report it,
// with that address as its IP. The pool controller then reads the relay's
// real /status: in process through Host.Read (a relaypool.StatusReader),
// or, for a manager process, over HTTP at the pod IP when Options.HTTPPort
// is relayconfig.HTTPPort.
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
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// Options say where the relay runs.
type Options struct {
	// Relay is the relay binary (cmd/relay).
	Relay string
	// IP is the loopback address the relay listens on and the pod object
	// reports; empty: 127.0.0.1.
	IP string
	// HTTPPort is the relay's HTTP (status, metrics) port; 0: a free one.
	// relayconfig.HTTPPort lets a manager's HTTPStatusReader find it.
	HTTPPort int
	// MXPort is the port the relay delivers to instead of 25 (a test's
	// sink); 0: the configured one.
	MXPort int
}

// Host is one relay process standing for pod <pool>-relay-0.
type Host struct {
	o     Options
	c     client.Client
	pool  *v1alpha1.RelayPool
	dir   string
	ports map[string]int

	mu      sync.Mutex
	running bool
	cmd     *exec.Cmd
	exited  chan struct{}
	stop    chan struct{}
	synced  chan struct{}
}

// New prepares a host for pool's first pod in dir; Start runs it. Until
// then Read reports the relay unreachable.
func New(c client.Client, pool *v1alpha1.RelayPool, dir string, o Options) (*Host, error) {
	if o.IP == "" {
		o.IP = "127.0.0.1"
	}
	h := &Host{o: o, c: c, pool: pool, dir: dir, ports: map[string]int{}}
	for _, name := range []string{"submission", "submissions", "http", "admin", "api"} {
		if name == "http" && o.HTTPPort != 0 {
			h.ports[name] = o.HTTPPort
			continue
		}
		p, err := freePort(o.IP)
		if err != nil {
			return nil, fmt.Errorf("relayhost: %w", err)
		}
		h.ports[name] = p
	}
	return h, nil
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
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// SetMXPort changes Options.MXPort for the next sync of the Secrets.
func (h *Host) SetMXPort(port int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.o.MXPort = port
}

// SetRelay changes Options.Relay for a Start still to come.
func (h *Host) SetRelay(bin string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.o.Relay = bin
}

// SubmissionAddr is the relay's STARTTLS submission listener.
func (h *Host) SubmissionAddr() string { return h.addr("submission") }

// HTTPAddr is the relay's HTTP listener (/status, /readyz, /metrics).
func (h *Host) HTTPAddr() string { return h.addr("http") }

// APIAddr is the relay's HTTP send API listener (HTTPS), served when the
// pool's spec.api is enabled.
func (h *Host) APIAddr() string { return h.addr("api") }

// AdminAddr is the relay's admin API (`relay queue -admin`).
func (h *Host) AdminAddr() string { return h.addr("admin") }

// Dir is the host's folder: config (the mirrored Secrets), tls, spool,
// relay.log.
func (h *Host) Dir() string { return h.dir }

func (h *Host) addr(name string) string {
	return net.JoinHostPort(h.o.IP, strconv.Itoa(h.ports[name]))
}

// Start waits until the operator has rendered the pool's Secrets, starts
// the relay on them (re-syncing them as the operator changes them), and
// creates the pod, Ready. Stop ends it.
func (h *Host) Start(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for err := h.sync(ctx); err != nil; err = h.sync(ctx) {
		if time.Now().After(deadline) {
			return fmt.Errorf("relayhost: the pool's rendered Secrets: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	h.stop, h.synced = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(h.synced)
		for {
			select {
			case <-h.stop:
				return
			case <-time.After(300 * time.Millisecond):
				_ = h.sync(ctx)
			}
		}
	}()

	logFile, err := os.Create(filepath.Join(h.dir, "relay.log"))
	if err != nil {
		return err
	}
	h.mu.Lock()
	bin := h.o.Relay
	h.mu.Unlock()
	relay := exec.Command(bin, "--config", filepath.Join(h.dir, "config", relayconfig.MainFile), "--log-format", "text")
	relay.Stdout, relay.Stderr = logFile, logFile
	// Killed with its parent, whatever happens to the parent.
	relay.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := relay.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("relayhost: starting %s: %w", bin, err)
	}
	h.exited = make(chan struct{})
	go func() { _ = relay.Wait(); logFile.Close(); close(h.exited) }()
	h.mu.Lock()
	h.cmd, h.running = relay, true
	h.mu.Unlock()
	// The relay listens once its queue is open; a listener it cannot bind
	// (an address in use) ends it at once: say so rather than let the pool
	// wait for a pod that is not there.
	for {
		c, err := net.DialTimeout("tcp", h.addr("http"), time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-h.exited:
			return fmt.Errorf("relayhost: the relay exited at start-up:\n%s", h.Log())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline.Add(time.Minute)) {
			return fmt.Errorf("relayhost: the relay does not listen on %s:\n%s", h.addr("http"), h.Log())
		}
	}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.pool.Namespace, Name: relayconfig.StatefulSetName(h.pool.Name) + "-0", Labels: relaypool.SelectorLabels(h.pool)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "relay", Image: "localhost/mailroom:test"}}},
	}
	if err := h.c.Create(ctx, pod); err != nil {
		return err
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: h.o.IP,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	return h.c.Status().Update(ctx, pod)
}

// Stop stops the relay (by its PID) and the Secret mirroring.
func (h *Host) Stop() {
	if h.stop != nil {
		close(h.stop)
		<-h.synced
		h.stop = nil
	}
	h.mu.Lock()
	cmd := h.cmd
	h.running = false
	h.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-h.exited
	}
}

// Log is the relay's log so far.
func (h *Host) Log() string {
	b, err := os.ReadFile(filepath.Join(h.dir, "relay.log"))
	if err != nil {
		return err.Error()
	}
	return string(b)
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
	api := ""    // the HTTP send API only where the pool enables it
	if c.Listeners.API != "" {
		api = h.addr("api")
	}
	c.Listeners = config.Listeners{
		API:         api,
		Submission:  h.addr("submission"),
		Submissions: h.addr("submissions"),
		HTTP:        h.addr("http"),
		Admin:       h.addr("admin"),
	}
	c.Queue.Directory = filepath.Join(h.dir, "spool")
	h.mu.Lock()
	mxPort := h.o.MXPort
	h.mu.Unlock()
	if mxPort != 0 {
		c.Delivery.MXPort = mxPort
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return h.write(filepath.Join("config", relayconfig.MainFile), b)
}

func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
