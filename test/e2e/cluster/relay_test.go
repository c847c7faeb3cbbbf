package cluster_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/scheduler"
	"mailroom.io/mailroom/test/e2e/cluster"
)

const (
	relayHostname = "relay.e2e.test"
	relayDomain   = "e2e.test"
	relaySelector = "e2e"
	// relayEtc is where the config Secret is mounted; every file the
	// config names lives there, so the relay's directory watch sees the
	// kubelet's "..data" symlink swap when the Secret changes.
	relayEtc = "/etc/mailroom"
	// relaySpool is the PVC: the queue must outlive the pod.
	relaySpool = "/var/spool/mailroom"
	// The kubelet refreshes a mounted Secret on its periodic pod sync
	// (syncFrequency 1m, jittered) plus its cache's delay; three minutes
	// leaves room for a loaded machine.
	secretPropagationTimeout = 3 * time.Minute
	// The reload line the relay logs when the watched files change.
	reloadLogLine = "relay: configuration files changed; reloading"
)

var queuedAs = regexp.MustCompile(`queued as ([0-9a-v]{16})\b`)

// relayLogin is one SMTP credential: the password the client sends and the
// bcrypt hash the relay's config holds.
type relayLogin struct{ username, password, hash string }

// relayFixture is what the suite generated for the relay: its config (kept
// so a later step can change it), the Secret's files and the roots that
// trust its self-signed certificate.
type relayFixture struct {
	cfg   config.Config
	files map[string][]byte // Secret data, without relay.yaml
	roots *x509.CertPool
}

// TestRelayStatefulSet runs the relay binary from the project image as a
// one-replica StatefulSet in a namespace enforcing the restricted Pod
// Security Standard: non-root, read-only root filesystem, its config,
// certificate and DKIM key from a read-only Secret and its queue on a PVC.
// From the host, a message submitted over the ClusterIP Service with
// STARTTLS and AUTH PLAIN is acknowledged with a queue ID; `relay queue
// list` inside the pod shows it queued, DKIM-signed and not attempted
// (delivery is paused: no MX exists here); the pod is deleted and its
// replacement, on the same claim, still holds it; and a changed Secret is
// picked up without a restart: a credential added to it logs in.
func TestRelayStatefulSet(t *testing.T) {
	c := cluster.Connect(t)
	ctx := context.Background()
	ns := c.Namespace(t, "e2e-relay", map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	})
	image := c.Image(t, "mailroom", "relay")

	shop := newRelayLogin(t, "shop")
	fx := newRelayFixture(t, shop)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "relay-config"},
		Data:       fx.secretData(t),
	}
	if _, err := c.Client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Secret: %v", err)
	}
	labels := map[string]string{"app": "relay"}
	createServices(t, c, ns, "relay", labels, "submission", 2587, 2587)
	if _, err := c.Client.AppsV1().StatefulSets(ns).Create(ctx, relayStatefulSet(c, image, labels), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create StatefulSet (refused by Pod Security admission?): %v", err)
	}

	// Ready means the kubelet's probe got 200 from /readyz, which the relay
	// answers only after opening its queue on the PVC and passing a
	// write+fsync probe of it — as uid 65532 on a read-only root.
	first := c.WaitPodReady(t, ns, "relay-0", podTimeout)
	volume := boundVolume(t, c, ns, "spool-relay-0")

	svc, err := c.Client.CoreV1().Services(ns).Get(ctx, "relay", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	submission := net.JoinHostPort(svc.Spec.ClusterIP, "2587")

	// An application on the host submits through the Service.
	subject := "e2e " + first.Name + " " + string(first.UID)
	id := submitFromHost(t, c, submission, fx.roots, shop, subject)
	t.Logf("relay acknowledged the message as %s", id)

	msg := queuedMessage(t, c, ns, "relay-0", id)
	if msg.Attempts != 0 || len(msg.Recipients) != 1 || msg.Recipients[0].Attempts != 0 {
		t.Errorf("message %s was attempted although delivery is paused: %+v", id, msg)
	}
	if msg.From != "app@"+relayDomain || msg.Origin != "user:"+shop.username {
		t.Errorf("message %s: from <%s>, origin %q; want <app@%s> from user:%s", id, msg.From, msg.Origin, relayDomain, shop.username)
	}
	// Signed with the Ed25519 key from the Secret, before it was queued.
	for _, tag := range []string{"DKIM-Signature:", "a=ed25519-sha256", "d=" + relayDomain, "s=" + relaySelector} {
		if !strings.Contains(msg.Header, tag) {
			t.Errorf("queued message %s is not signed as expected: header lacks %q:\n%s", id, tag, msg.Header)
		}
	}

	// The pod is deleted; the StatefulSet brings relay-0 back on the same
	// claim, and the acknowledged message is still queued.
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "relay-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, "relay-0 replaced", podTimeout, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "relay-0", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return p.UID != first.UID, fmt.Errorf("still the first pod (%s), phase %s", p.UID, p.Status.Phase)
	})
	second := c.WaitPodReady(t, ns, "relay-0", podTimeout)
	if v := boundVolume(t, c, ns, "spool-relay-0"); v != volume {
		t.Errorf("claim moved from volume %s to %s", volume, v)
	}
	if again := queuedMessage(t, c, ns, "relay-0", id); again.Header != msg.Header || again.Size != msg.Size {
		t.Errorf("message %s changed across the restart: size %d -> %d", id, msg.Size, again.Size)
	}

	// The Secret gains a credential. The kubelet swaps the mounted files
	// (a new timestamped directory, then the "..data" symlink); the relay
	// notices and reloads in place: same pod, no container restart.
	metrics := "http://" + net.JoinHostPort(second.Status.PodIP, "8080") + "/metrics"
	if n := relayMetric(t, c, metrics, `mailroom_relay_config_reloads_total{result="success"}`); n != 0 {
		t.Fatalf("the new pod reports %v config reloads before the Secret changed", n)
	}
	ops := newRelayLogin(t, "ops")
	fx.cfg.Credentials = append(fx.cfg.Credentials, config.Credential{
		Username: ops.username, PasswordHash: ops.hash, AllowedSenders: []string{relayDomain},
	})
	secret, err = c.Client.CoreV1().Secrets(ns).Get(ctx, "relay-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secret.Data = fx.secretData(t)
	if _, err := c.Client.CoreV1().Secrets(ns).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update Secret: %v", err)
	}
	// Polled through the reload counter rather than by trying the new
	// login: failed AUTHs from the host would trip limits.authFailures.
	c.WaitFor(t, "relay reloading the updated Secret", secretPropagationTimeout, func(ctx context.Context) (bool, error) {
		n, err := scrapeMetric(ctx, metrics, `mailroom_relay_config_reloads_total{result="success"}`)
		if err != nil {
			return false, err
		}
		return n >= 1, fmt.Errorf("mailroom_relay_config_reloads_total{result=\"success\"} is %v", n)
	})
	if n := relayMetric(t, c, metrics, `mailroom_relay_config_reloads_total{result="failure"}`); n != 0 {
		t.Errorf("the relay counted %v failed config reloads", n)
	}
	opsID := submitFromHost(t, c, submission, fx.roots, ops, "e2e after reload")
	queuedMessage(t, c, ns, "relay-0", opsID)
	queuedMessage(t, c, ns, "relay-0", id)

	p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "relay-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.UID != second.UID {
		t.Errorf("relay-0 was replaced (%s -> %s) instead of reloading", second.UID, p.UID)
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.RestartCount != 0 {
			t.Errorf("container %s restarted %d times; the Secret change should have been a reload", cs.Name, cs.RestartCount)
		}
	}
	if out, err := c.Kubectl("logs", "-n", ns, "relay-0"); err != nil || !strings.Contains(out, reloadLogLine) || strings.Contains(out, "config reload failed") {
		t.Errorf("kubectl logs relay-0 should show one clean reload (%q): %v\n%s", reloadLogLine, err, out)
	}
}

func newRelayLogin(t *testing.T, username string) relayLogin {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	password := hex.EncodeToString(b)
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	return relayLogin{username: username, password: password, hash: string(hash)}
}

// newRelayFixture generates the relay's certificate and DKIM key and a
// config allowing login to send as relayDomain.
func newRelayFixture(t *testing.T, login relayLogin) *relayFixture {
	t.Helper()
	certPEM, keyPEM, roots := selfSignedCert(t, relayHostname)
	dkimKey, err := dkim.Generate(dkim.Ed25519, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dkimPEM, err := dkim.MarshalPrivateKey(dkimKey)
	if err != nil {
		t.Fatal(err)
	}
	return &relayFixture{
		roots: roots,
		files: map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "dkim.pem": dkimPEM},
		cfg: config.Config{
			Hostname: relayHostname,
			// Non-privileged ports: the pod runs without capabilities.
			Listeners: config.Listeners{
				Submission:  ":2587",
				Submissions: ":2465",
				HTTP:        ":8080",
				Admin:       "127.0.0.1:8081",
			},
			TLS: config.TLS{CertFile: relayEtc + "/tls.crt", KeyFile: relayEtc + "/tls.key"},
			Domains: []config.Domain{{
				Name: relayDomain,
				Keys: []config.DKIMKey{{Selector: relaySelector, Algorithm: string(dkim.Ed25519), PrivateKeyFile: relayEtc + "/dkim.pem"}},
			}},
			Credentials: []config.Credential{{
				Username: login.username, PasswordHash: login.hash, AllowedSenders: []string{relayDomain},
			}},
			Queue: config.Queue{Directory: relaySpool},
			// No MX exists for anything here: keep what is accepted queued.
			Delivery: config.Delivery{Paused: true},
		},
	}
}

// secretData is the config Secret's content for the fixture's current
// config, which must pass the relay's own validation.
func (fx *relayFixture) secretData(t *testing.T) map[string][]byte {
	t.Helper()
	y, err := yaml.Marshal(fx.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse(y); err != nil {
		t.Fatalf("the suite's relay.yaml is invalid: %v\n%s", err, y)
	}
	data := map[string][]byte{"relay.yaml": y}
	for k, v := range fx.files {
		data[k] = v
	}
	return data
}

// selfSignedCert makes the relay's certificate and a pool trusting it.
func selfSignedCert(t *testing.T, host string) (certPEM, keyPEM []byte, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), roots
}

// relayStatefulSet is the relay as the restricted standard allows it: uid
// and gid 65532, fsGroup so the Secret's files (mode 0440) are readable,
// no capabilities, RuntimeDefault seccomp, read-only root filesystem; the
// only writable place is the spool claim.
func relayStatefulSet(c *cluster.Cluster, image string, labels map[string]string) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "relay"},
		Spec: appsv1.StatefulSetSpec{
			ServiceName: "relay-pods",
			Replicas:    ptr.To[int32](1),
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					// Above limits.shutdownGrace (25s): a deleted pod drains
					// and closes its queue rather than being killed.
					TerminationGracePeriodSeconds: ptr.To[int64](40),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To[int64](65532),
						RunAsGroup:     ptr.To[int64](65532),
						FSGroup:        ptr.To[int64](65532),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:            "relay",
						Image:           image,
						ImagePullPolicy: corev1.PullNever,
						Command:         []string{"/relay", "--config", relayEtc + "/relay.yaml"},
						Ports: []corev1.ContainerPort{
							{Name: "submission", ContainerPort: 2587},
							{Name: "submissions", ContainerPort: 2465},
							{Name: "http", ContainerPort: 8080},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}},
							PeriodSeconds: 1,
						},
						LivenessProbe: &corev1.Probe{
							ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
							PeriodSeconds:    10,
							TimeoutSeconds:   5,
							FailureThreshold: 6,
						},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "config", MountPath: relayEtc, ReadOnly: true},
							{Name: "spool", MountPath: relaySpool},
						},
						SecurityContext: restrictedContainer(),
					}},
					Volumes: []corev1.Volume{{
						Name: "config",
						VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName: "relay-config", DefaultMode: ptr.To[int32](0o440),
						}},
					}},
				},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "spool"},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					StorageClassName: ptr.To(c.StorageClass),
					Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
}

// submitFromHost sends one message to addr with STARTTLS (verifying the
// relay's certificate) and AUTH PLAIN, and returns the queue ID of the 250
// reply. Connection failures are retried while the Service's endpoints and
// kube-proxy's rules catch up with a new pod; any SMTP refusal is final.
func submitFromHost(t *testing.T, c *cluster.Cluster, addr string, roots *x509.CertPool, login relayLogin, subject string) string {
	t.Helper()
	var id string
	var refused error
	c.WaitFor(t, "submission to "+addr+" as "+login.username, podTimeout, func(ctx context.Context) (bool, error) {
		var err error
		id, err = submit(addr, roots, login, subject)
		if smtpErr, ok := err.(*smtp.SMTPError); ok {
			refused = smtpErr
			return true, nil
		}
		return err == nil, err
	})
	if refused != nil {
		t.Fatalf("relay refused the submission as %s: %v", login.username, refused)
	}
	return id
}

func submit(addr string, roots *x509.CertPool, login relayLogin, subject string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	// Bounds the whole session: a Service that accepts but never answers
	// must not hang the suite.
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{ServerName: relayHostname, RootCAs: roots})
	if err != nil {
		conn.Close()
		return "", fmt.Errorf("STARTTLS: %w", err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", login.username, login.password)); err != nil {
		return "", err
	}
	from, to := "app@"+relayDomain, "someone@example.net"
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "", err
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	body := strings.ReplaceAll(fmt.Sprintf("From: <%s>\nTo: <%s>\nSubject: %s\n\nSubmitted from the host through the relay's Service.\n",
		from, to, subject), "\n", "\r\n")
	if _, err := io.WriteString(w, body); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	m := queuedAs.FindStringSubmatch(resp.StatusText)
	if m == nil {
		return "", &smtp.SMTPError{Code: 250, Message: "250 without a queue ID: " + resp.StatusText}
	}
	_ = c.Quit()
	return m[1], nil
}

// queuedMessage runs `relay queue -json list` in the pod (the admin API
// listens on the pod's loopback only) and returns message id, failing the
// test when it is not queued.
func queuedMessage(t *testing.T, c *cluster.Cluster, ns, pod, id string) scheduler.MessageInfo {
	t.Helper()
	out, err := c.Kubectl("exec", "-n", ns, pod, "--", "/relay", "queue", "-admin", "127.0.0.1:8081", "-json", "list")
	if err != nil {
		t.Fatalf("relay queue list in %s: %v", pod, err)
	}
	var list []scheduler.MessageInfo
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("relay queue -json list in %s: %v\n%s", pod, err, out)
	}
	var ids []string
	for _, m := range list {
		if m.ID == id {
			return m
		}
		ids = append(ids, m.ID)
	}
	t.Fatalf("message %s is not in %s's queue (it holds %v)", id, pod, ids)
	return scheduler.MessageInfo{}
}

// relayMetric reads one sample from the relay's /metrics (the pod network
// is reachable from the host), failing the test on error.
func relayMetric(t *testing.T, c *cluster.Cluster, url, series string) float64 {
	t.Helper()
	var v float64
	c.WaitFor(t, "scrape "+series, time.Minute, func(ctx context.Context) (bool, error) {
		var err error
		v, err = scrapeMetric(ctx, url, series)
		return err == nil, err
	})
	return v
}

// scrapeMetric returns the value of series (name{labels} exactly as the
// text exposition prints it); a counter not yet incremented is absent and
// reads 0.
func scrapeMetric(ctx context.Context, url, series string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(strings.Fields(rest)[0], 64)
		}
	}
	return 0, sc.Err()
}
