package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/testutil/bindtest"
	"mailroom.io/mailroom/internal/testutil/dkimpy"
	"mailroom.io/mailroom/internal/testutil/envtest"
	"mailroom.io/mailroom/internal/testutil/kubeapp"
	"mailroom.io/mailroom/test/e2e/cluster/info"
)

// The node demo runs what config/samples describe: the pool
// mail/transactional, the domain example.com, the shop's credential.
const (
	nodeZone         = "example.com"
	nodeRecipient    = "inbox.example.com" // its MX is the sink on the node address
	nodeIP           = "10.245.0.1"        // hack/cluster's default node address; the samples' resolvers name it
	helmVersion      = "v3.22.0"
	k8sVersion       = "v1.37.2"
	corednsVersion   = "v1.15.0"
	imageTag         = "dev"
	managerNS        = "mailroom-system"
	externalDNSNS    = "external-dns"
	poolNS, poolName = "mail", "transactional"
	appNS            = "shop"
)

// nodeDemo is the demo on the real node (make demo).
type nodeDemo struct {
	once    bool
	timeout time.Duration
	root    string
	dir     string // host-side run folder: BIND, the inbox, logs
	cluster string // the node's run folder (hack/cluster)
	tool    string // bin/mailroom-cluster
	up      bool   // this run brought the node up
	start   time.Time

	info *info.Info
	kc   client.Client
	bind *bindtest.Server
	sink *sink
}

func (d *nodeDemo) step(format string, args ...any) {
	fmt.Printf("==> [%3.0fs] "+format+"\n", append([]any{time.Since(d.start).Seconds()}, args...)...)
}

func runNode(ctx context.Context, once bool, timeout time.Duration, dir string) int {
	d := &nodeDemo{once: once, timeout: timeout, start: time.Now()}
	err := d.run(ctx, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo: FAILED:", err)
		d.diagnose()
	}
	if terr := d.teardown(); terr != nil {
		fmt.Fprintln(os.Stderr, "demo: teardown:", terr)
		if err == nil {
			err = terr
		}
	}
	if err != nil {
		return 1
	}
	return 0
}

func (d *nodeDemo) run(ctx context.Context, dir string) error {
	var err error
	if d.root, err = envtest.RepoRoot(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf(`make demo runs a real Kubernetes node on this machine, which needs root
  (it adds %s to lo, creates a bridge, programs iptables and cgroups). Run it as root:
      sudo make demo
  or, without root, the loopback demo (control plane, BIND, external-dns, manager and a relay as local processes):
      make demo-local`, nodeIP)
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "mailroom-demo-"); err != nil {
			return err
		}
	}
	d.dir = dir
	d.cluster = filepath.Join(d.root, "tmp", "demo-cluster")
	d.tool = filepath.Join(d.root, "bin", "mailroom-cluster")
	d.step("run folder %s (node: %s)", d.dir, d.cluster)

	d.step("installing missing Debian packages and building what the demo needs (cached under bin/)")
	extdns := filepath.Join("bin", "external-dns", externalDNSBuild, "external-dns")
	for _, c := range [][]string{
		{"bash", "hack/install-test-deps.sh"},
		{"bash", "hack/build-k8s.sh", "all"},
		{"bash", "hack/cluster/build-coredns.sh"},
		{"bash", "hack/build-external-dns.sh", "patched"},
		{"env", "HELM_VERSION=" + helmVersion, "bash", "hack/build-helm.sh"},
		{"go", "build", "-o", d.tool, "./hack/cluster"},
		{"go", "run", "./hack/images", "-out", "bin/images", "-tag", imageTag, "-require", "relay",
			"-coredns", filepath.Join("bin", "coredns", corednsVersion, "coredns"), "-external-dns", extdns},
	} {
		if err := run(d.root, os.Stdout, c...); err != nil {
			return err
		}
	}

	d.step("bringing the node up: Kubernetes %s (hack/cluster, as make e2e), node address %s", k8sVersion, nodeIP)
	if err := run(d.root, os.Stdout, d.tool, "up", "-dir", d.cluster, "-k8s-bin", filepath.Join("bin", "k8s", k8sVersion),
		"-images", "bin/images", "-node-ip", nodeIP, "-holder-pid", fmt.Sprint(os.Getpid()),
		"-dns-forward", nodeIP+":53"); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 3 {
			return fmt.Errorf("another node runs on this machine (make e2e, or a demo not torn down: hack/cluster/down -dir <its folder>): %w", err)
		}
		d.up = true // up failed half-way: it undid its work; check that
		return err
	}
	d.up = true
	if d.info, err = info.Load(d.cluster); err != nil {
		return err
	}
	if d.kc, err = nodeClient(d.info.Kubeconfig); err != nil {
		return err
	}

	d.step("starting BIND on %s:53 for %s (RFC 2136 updates and AXFR with a TSIG key)", nodeIP, nodeZone)
	if err := os.MkdirAll(filepath.Join(d.dir, "bind"), 0o755); err != nil {
		return err
	}
	named, err := exec.LookPath("named")
	if err != nil {
		named = "/usr/sbin/named"
	}
	if d.bind, err = bindtest.LaunchAt(named, filepath.Join(d.dir, "bind"), nodeZone, nodeIP, 53); err != nil {
		return err
	}
	for _, rr := range []string{
		fmt.Sprintf("mx.%s. 60 IN A %s", nodeZone, nodeIP),
		fmt.Sprintf("%s. 60 IN MX 10 mx.%s.", nodeRecipient, nodeZone),
	} {
		if err := d.bind.AddRecord(rr); err != nil {
			return err
		}
	}
	mx := net.JoinHostPort(nodeIP, "25")
	d.step("starting the sink MX for %s on %s", nodeRecipient, mx)
	if d.sink, err = startSink(mx, filepath.Join(d.dir, "inbox"), "mx."+nodeZone); err != nil {
		return fmt.Errorf("MX on %s: %w", mx, err)
	}

	crd, err := kubeapp.DNSEndpointCRD(d.root)
	if err != nil {
		return err
	}
	d.step("installing external-dns %s as a pod (localhost/external-dns:%s, --provider=rfc2136 to %s:53)", externalDNSBuild, externalDNSBuild, nodeIP)
	if _, err := d.kubectl("apply", "--server-side", "-f", crd); err != nil {
		return err
	}
	for _, ns := range []string{externalDNSNS, managerNS, poolNS, appNS} {
		if err := d.namespace(ctx, ns); err != nil {
			return err
		}
	}
	manifest := filepath.Join(d.dir, "external-dns.yaml")
	if err := os.WriteFile(manifest, []byte(externalDNSManifest(d.bind)), 0o600); err != nil {
		return err
	}
	if _, err := d.kubectl("apply", "--server-side", "-f", manifest); err != nil {
		return err
	}

	d.step("installing mailroom with Helm: helm install mailroom charts/mailroom -n %s --set image.tag=%s", managerNS, imageTag)
	helm := filepath.Join(d.root, "bin", "helm", helmVersion, "helm")
	if err := run(d.root, os.Stdout, helm, "--kubeconfig", d.info.Kubeconfig, "install", "mailroom", "charts/mailroom",
		"--namespace", managerNS, "--set", "image.tag="+imageTag, "--set", "image.pullPolicy=Never",
		"--set", "logFormat=text", "--wait", "--timeout", "3m"); err != nil {
		return err
	}
	if _, err := d.kubectl("rollout", "status", "-n", externalDNSNS, "deploy/external-dns", "--timeout=2m"); err != nil {
		return err
	}

	d.step("applying config/samples: kubectl apply --server-side -k config/samples")
	out, err := d.kubectl("apply", "--server-side", "-k", filepath.Join(d.root, "config", "samples"))
	if err != nil {
		return err
	}
	fmt.Print(indent(out))
	if err := waitAllReady(ctx, d.kc, d.start, d.timeout, samples(poolNS, poolName, "example-com", appNS, "shop")); err != nil {
		return err
	}

	if out, err := d.kubectl("get", "sdom,smtpcred,rpool", "-A"); err == nil {
		fmt.Print(indent(out))
	}

	d.step("records BIND serves for %s (AXFR)", nodeZone)
	records, err := d.zoneRecords()
	if err != nil {
		return err
	}
	fmt.Print(indent(records))

	subject := "Your order shipped " + randomHex(4)
	from, to := "orders@"+nodeZone, "someone@"+nodeRecipient
	d.step("a pod in namespace %s sends a message through the relay Service with the Secret shop-smtp (e2e-helper submit)", appNS)
	logs, err := d.submitFromPod(ctx, from, to, subject)
	fmt.Print(indent(logs))
	if err != nil {
		return err
	}
	path, err := d.sink.wait(ctx, d.timeout)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	d.step("the message as the sink MX for %s received it (%s)", nodeRecipient, path)
	fmt.Print(indent(showMessage(data)))

	d.step("dkimpy's verdict (key fetched from BIND on %s)", d.bind.Addr)
	report, verr := dkimpy.Verify(d.bind.Addr, data)
	fmt.Print(indent(verdicts(report)))
	if verr != nil {
		return fmt.Errorf("dkimpy did not verify the delivered message: %w", verr)
	}
	verified := time.Since(d.start)

	d.step("the relays' queues (kubectl exec … /relay queue list) and a few of their metrics")
	fmt.Print(indent(d.relayState(ctx)))

	kubectl := d.info.Kubectl
	caFile := filepath.Join(d.dir, "relay-ca.crt")
	svc, pw, user := d.loginHints(ctx, caFile)
	fmt.Printf(`
mailroom runs on a real Kubernetes node, installed with Helm; the message was verified %.0fs after the start.
  export KUBECONFIG=%[2]s
  %[3]s get sdom,smtpcred,rpool -A
  %[3]s describe sendingdomain -n mail example-com
  %[3]s logs -n %[4]s deploy/external-dns
  dig @%[5]s TXT _dmarc.%[6]s +short
Send another message from this machine through the relay Service (CA in %[7]s):
  swaks --server %[8]s --port 587 --tls --tls-verify --tls-ca-path %[7]s --tls-sni relay.example.com \
        --auth PLAIN --auth-user %[9]s --auth-password '%[10]s' \
        --from orders@%[6]s --to someone@%[11]s
Delivered mail lands in %[12]s. Host-side logs: %[13]s; node logs: %[14]s
`, verified.Seconds(), d.info.Kubeconfig, kubectl, externalDNSNS, nodeIP, nodeZone, caFile, svc, user, pw, nodeRecipient,
		filepath.Join(d.dir, "inbox"), d.dir, filepath.Join(d.cluster, "logs"))
	if d.once {
		fmt.Println("demo: OK")
		return nil
	}
	fmt.Println("Ctrl-C tears everything down.")
	<-ctx.Done()
	fmt.Println()
	return nil
}

// run runs a command from dir with its output on w.
func run(dir string, w io.Writer, args ...string) error {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	return nil
}

func (d *nodeDemo) kubectl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.info.Kubectl, append([]string{"--kubeconfig", d.info.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func nodeClient(kubeconfig string) (client.Client, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return client.New(cfg, client.Options{Scheme: s})
}

// namespace creates a namespace enforcing the restricted Pod Security
// Standard: every pod of the demo meets it.
func (d *nodeDemo) namespace(ctx context.Context, name string) error {
	return d.kc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	}}})
}

// externalDNSManifest runs external-dns with the flags docs/external-dns.md
// gives, against BIND on the node address; the TSIG secret comes from a
// Secret.
func externalDNSManifest(b *bindtest.Server) string {
	host, port, _ := net.SplitHostPort(b.Addr)
	return fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata: {name: external-dns, namespace: %[1]s}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: external-dns}
rules:
  - apiGroups: [externaldns.k8s.io]
    resources: [dnsendpoints]
    verbs: [get, list, watch]
  - apiGroups: [externaldns.k8s.io]
    resources: [dnsendpoints/status]
    verbs: [update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: external-dns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: external-dns}
subjects: [{kind: ServiceAccount, name: external-dns, namespace: %[1]s}]
---
apiVersion: v1
kind: Secret
metadata: {name: rfc2136-tsig, namespace: %[1]s}
stringData: {secret: %[2]q}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: external-dns, namespace: %[1]s}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector: {matchLabels: {app.kubernetes.io/name: external-dns}}
  template:
    metadata: {labels: {app.kubernetes.io/name: external-dns}}
    spec:
      serviceAccountName: external-dns
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: external-dns
          image: localhost/external-dns:%[3]s
          imagePullPolicy: Never
          env:
            - name: TSIG_SECRET
              valueFrom: {secretKeyRef: {name: rfc2136-tsig, key: secret}}
          args:
            - --source=crd
            - --crd-source-apiversion=externaldns.k8s.io/v1alpha1
            - --crd-source-kind=DNSEndpoint
            - --managed-record-types=TXT
            - --registry=txt
            - --txt-owner-id=mailroom-demo
            - --txt-prefix=_extdns-%%{record_type}.
            - --policy=sync
            - --provider=rfc2136
            - --rfc2136-host=%[4]s
            - --rfc2136-port=%[5]s
            - --rfc2136-zone=%[6]s
            - --rfc2136-tsig-keyname=%[7]s
            - --rfc2136-tsig-secret=$(TSIG_SECRET)
            - --rfc2136-tsig-secret-alg=%[8]s
            - --rfc2136-tsig-axfr
            - --domain-filter=%[6]s
            - --interval=10s
            - --events
            - --min-event-sync-interval=1s
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          resources:
            requests: {cpu: 10m, memory: 32Mi}
            limits: {memory: 128Mi}
`, externalDNSNS, b.TSIGSecret, externalDNSBuild, host, port, strings.TrimSuffix(b.Zone, "."),
		strings.TrimSuffix(b.TSIGKeyName, "."), b.TSIGAlgorithm)
}

// zoneRecords lists the zone's TXT, MX and A records as BIND serves them
// (a TSIG-signed AXFR, as external-dns reads it), without the SOA and NS.
func (d *nodeDemo) zoneRecords() (string, error) {
	m := new(dns.Msg)
	m.SetAxfr(d.bind.Zone)
	alg := dns.Fqdn(d.bind.TSIGAlgorithm)
	m.SetTsig(d.bind.TSIGKeyName, alg, 300, time.Now().Unix())
	tr := &dns.Transfer{TsigSecret: map[string]string{d.bind.TSIGKeyName: d.bind.TSIGSecret}}
	env, err := tr.In(m, d.bind.Addr)
	if err != nil {
		return "", err
	}
	var lines []string
	for e := range env {
		if e.Error != nil {
			return "", e.Error
		}
		for _, rr := range e.RR {
			h := rr.Header()
			var val string
			switch r := rr.(type) {
			case *dns.TXT:
				val = strings.Join(r.Txt, "")
			case *dns.MX:
				val = fmt.Sprintf("%d %s", r.Preference, r.Mx)
			case *dns.A:
				val = r.A.String()
			default:
				continue
			}
			lines = append(lines, fmt.Sprintf("%-36s %-3s %s", strings.TrimSuffix(h.Name, "."), dns.TypeToString[h.Rrtype], shorten(val, 76)))
		}
	}
	sort.Strings(lines)
	return strings.Join(uniq(lines), "\n") + "\n", nil
}

func uniq(s []string) []string {
	var out []string
	for i, l := range s {
		if i == 0 || l != s[i-1] {
			out = append(out, l)
		}
	}
	return out
}

// submitFromPod runs the application pod and returns its log.
func (d *nodeDemo) submitFromPod(ctx context.Context, from, to, subject string) (string, error) {
	pod := kubeapp.SubmitPod(kubeapp.Submission{
		Pod: "send-test-message", Namespace: appNS, Image: "localhost/e2e-helper:" + imageTag, Secret: "shop-smtp",
		From: from, To: to, Subject: subject,
	})
	if err := d.kc.Create(ctx, pod); err != nil {
		return "", err
	}
	deadline := time.Now().Add(d.timeout)
	for {
		var p corev1.Pod
		if err := d.kc.Get(ctx, client.ObjectKeyFromObject(pod), &p); err != nil {
			return "", err
		}
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			logs, _ := d.kubectl("logs", "-n", appNS, pod.Name)
			if p.Status.Phase == corev1.PodFailed {
				return logs, errors.New("the sending pod failed")
			}
			return logs, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the sending pod did not finish within %s (phase %s)", d.timeout, p.Status.Phase)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// showMessage is the received message with long header lines (the DKIM
// signature's b= and bh=) cut, so it fits a screen.
func showMessage(data []byte) string {
	head, body, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	var b strings.Builder
	for _, l := range strings.Split(string(head), "\r\n") {
		b.WriteString(shorten(l, 110) + "\n")
	}
	b.WriteString("\n")
	b.WriteString(strings.ReplaceAll(string(body), "\r\n", "\n"))
	return b.String()
}

// relayState shows each relay pod's queue and a few of its metrics.
func (d *nodeDemo) relayState(ctx context.Context) string {
	var pods corev1.PodList
	if err := d.kc.List(ctx, &pods, client.InNamespace(poolNS), client.MatchingLabels{"app.kubernetes.io/instance": poolName}); err != nil {
		return err.Error() + "\n"
	}
	var b strings.Builder
	for _, p := range pods.Items {
		out, err := d.kubectl("exec", "-n", poolNS, p.Name, "-c", "relay", "--", "/relay", "queue", "-admin", "127.0.0.1:8081", "list")
		if err != nil {
			out = err.Error()
		}
		if strings.TrimSpace(out) == "" {
			out = "(empty)"
		}
		fmt.Fprintf(&b, "%s (%s): relay queue list\n%s", p.Name, p.Status.PodIP, indent(out))
		fmt.Fprintf(&b, "  metrics (http://%s:8080/metrics):\n%s", p.Status.PodIP, indent(indent(metrics(p.Status.PodIP))))
	}
	return b.String()
}

// metrics picks a few lines of a relay pod's /metrics.
func metrics(ip string) string { return metricsAt(net.JoinHostPort(ip, "8080")) }

// loginHints writes the pool's CA to caFile and returns the Service's
// address and the credential's password and username.
func (d *nodeDemo) loginHints(ctx context.Context, caFile string) (svcIP, password, username string) {
	var svc corev1.Service
	if err := d.kc.Get(ctx, types.NamespacedName{Namespace: poolNS, Name: poolName + "-relay"}, &svc); err == nil {
		svcIP = svc.Spec.ClusterIP
	}
	var s corev1.Secret
	if err := d.kc.Get(ctx, types.NamespacedName{Namespace: appNS, Name: "shop-smtp"}, &s); err == nil {
		_ = os.WriteFile(caFile, s.Data["ca.crt"], 0o644)
		password, username = string(s.Data["password"]), string(s.Data["username"])
	}
	return svcIP, password, username
}

// diagnose prints what explains a failed run.
func (d *nodeDemo) diagnose() {
	if d.info == nil {
		return
	}
	for _, args := range [][]string{
		{"get", "rpool,sdom,smtpcred,dnsendpoints", "-A", "-o", "wide"},
		{"get", "pods", "-A", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"logs", "-n", managerNS, "deploy/mailroom-manager", "--tail=30"},
		{"logs", "-n", externalDNSNS, "deploy/external-dns", "--tail=20"},
	} {
		out, err := d.kubectl(args...)
		if err != nil {
			out = err.Error()
		}
		fmt.Fprintf(os.Stderr, "--- kubectl %s ---\n%s\n", strings.Join(args, " "), tail(out, 30))
	}
	if d.bind != nil {
		fmt.Fprintf(os.Stderr, "--- named ---\n%s\n", d.bind.LogTail(15))
	}
}

// teardown stops the host-side servers, then the node (hack/cluster's
// down, as make e2e does), and checks that nothing of it remains.
func (d *nodeDemo) teardown() error {
	if d.sink == nil && d.bind == nil && !d.up {
		return nil // nothing was started
	}
	d.step("tearing down")
	if d.sink != nil {
		d.sink.close()
	}
	if d.bind != nil {
		d.bind.Stop()
	}
	if !d.up {
		return nil
	}
	// The teardown runs to its end even on a second Ctrl-C.
	signalIgnore()
	var errs []error
	if _, err := os.Stat(filepath.Join(d.cluster, "state.json")); err == nil {
		if err := run(d.root, os.Stdout, d.tool, "down", "-dir", d.cluster, "-keep-claim"); err != nil {
			errs = append(errs, err)
		}
	}
	if err := run(d.root, os.Stdout, "bash", "hack/cluster/check-clean", "-dir", d.cluster, "-claimed"); err != nil {
		errs = append(errs, err)
	}
	if err := run(d.root, os.Stdout, d.tool, "release", "-dir", d.cluster); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		_ = os.RemoveAll(d.cluster)
		fmt.Println("demo: torn down; check-clean found nothing left on this machine")
	}
	return errors.Join(errs...)
}

func signalIgnore() { signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP) }
