// Command demo shows mailroom doing its job on this machine, in one of two
// ways.
//
// On a real node (make demo; root): the single-node Kubernetes of
// hack/cluster (the harness make e2e uses), BIND serving example.com and a
// sink MX for inbox.example.com on the node address, external-dns
// (rfc2136, the flags docs/external-dns.md gives) as a pod, and mailroom
// installed with its Helm chart. It applies config/samples, waits for
// Ready, has a pod send a message through the relay Service with the
// generated credential Secret, and shows the records BIND serves, the
// message as the sink received it, dkimpy's verdict on its DKIM signature,
// and the relay pods' queues and metrics. Ctrl-C (or the end of -once)
// tears the node down and checks that nothing of it remains.
//
// On loopback (make demo-local; no root): kube-apiserver and etcd (as in
// the tests), BIND for example.test, external-dns, the manager and one
// relay as local processes. The relay runs on the configuration the
// operator renders into the pool's Secrets, mirrored into files the way a
// pod mounts them (internal/relayhost).
//
//	make demo                      # stays up; Ctrl-C tears everything down
//	make demo DEMO_ARGS=-once      # up, one verified message, down; exit 0/1
//	make demo-local [DEMO_ARGS=-once]
//	make demo-once                 # make demo-local -once, as make test runs it
//
// Every component's log is in the run folder it prints.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	v1 "mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/relayconfig"
	"mailroom.io/mailroom/internal/relayhost"
	"mailroom.io/mailroom/internal/testutil/bindtest"
	"mailroom.io/mailroom/internal/testutil/dkimpy"
	"mailroom.io/mailroom/internal/testutil/envtest"
)

const (
	zone          = "example.test"
	domain        = "example.test"
	recipientHost = "inbox.example.test"
	// The recipient's MX listens on its own loopback address, found through
	// BIND; on a free port rather than 25, so that no root is needed (the
	// relay is told the port: relayhost's MXPort).
	mxAddr = "127.0.0.25:0"
	// externalDNSBuild is v0.21.0 with the fixes docs/external-dns.md
	// explains (the release cannot update or delete TXT records).
	externalDNSBuild = "v0.21.0-mailroom.1"
)

func main() {
	setControllerRuntimeLogger(os.Stderr)
	once := flag.Bool("once", false, "run the scenario, print the result and tear down (for CI)")
	local := flag.Bool("local", false, "the loopback demo (no root needed): control plane, BIND, external-dns, manager and relay as local processes")
	dir := flag.String("dir", "", "run folder for configs, queues and logs (default: a new temporary folder)")
	timeout := flag.Duration("timeout", 5*time.Minute, "how long each step may take")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if !*local {
		if *timeout == 5*time.Minute {
			*timeout = 8 * time.Minute
		}
		os.Exit(runNode(ctx, *once, *timeout, *dir))
	}
	d := &demo{once: *once, timeout: *timeout, t0: time.Now()}
	err := d.run(ctx, *dir)
	d.teardown()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo: FAILED:", err)
		d.printLogTails()
		os.Exit(1)
	}
}

// setControllerRuntimeLogger gives the controller-runtime client (used
// through envtest and client.New) a logger before anything uses it; without
// one it prints a stack trace ("log.SetLogger(...) was never called") on
// the demo's first screen. Only its warnings and errors are shown.
func setControllerRuntimeLogger(w io.Writer) {
	ctrllog.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

type demo struct {
	once    bool
	timeout time.Duration
	root    string
	dir     string

	env   *envtest.Env
	bind  *bindtest.Server
	procs []*proc
	sink  *sink
	relay *relayhost.Host
	t0    time.Time
}

// proc is a child process with its log in the run folder.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
}

func (d *demo) step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

func (d *demo) run(ctx context.Context, dir string) error {
	var err error
	if d.root, err = envtest.RepoRoot(); err != nil {
		return err
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "mailroom-demo-"); err != nil {
			return err
		}
	}
	d.dir = dir
	d.step("run folder %s", d.dir)

	d.step("building tools and binaries (cached under bin/)")
	for _, c := range [][]string{
		{"bash", "hack/install-test-deps.sh"},
		{"bash", "hack/build-k8s.sh", "kube-apiserver", "etcd"},
		{"bash", "hack/build-external-dns.sh", "patched"},
		{"make", "--no-print-directory", "build"},
	} {
		if err := d.sh(c...); err != nil {
			return err
		}
	}

	d.step("starting the control plane: kube-apiserver %s and etcd on loopback", envtest.KubernetesVersion)
	if d.env, err = envtest.Start(); err != nil {
		return err
	}
	kubeconfig := filepath.Join(d.dir, "kubeconfig")
	if err := d.env.WriteKubeconfig(kubeconfig); err != nil {
		return err
	}

	d.step("starting BIND for %s (RFC 2136 updates and AXFR with a TSIG key)", zone)
	if err := os.MkdirAll(filepath.Join(d.dir, "bind"), 0o755); err != nil {
		return err
	}
	named, err := exec.LookPath("named")
	if err != nil {
		named = "/usr/sbin/named"
	}
	if d.bind, err = bindtest.Launch(named, filepath.Join(d.dir, "bind"), zone); err != nil {
		return err
	}
	// The recipient's domain and its MX live in the same zone.
	mxIP, _, _ := net.SplitHostPort(mxAddr)
	for _, rr := range []string{
		// The address first: BIND refuses an MX whose target has none.
		fmt.Sprintf("mx.%s. 60 IN A %s", zone, mxIP),
		fmt.Sprintf("%s. 60 IN MX 10 mx.%s.", recipientHost, zone),
	} {
		if err := d.bind.AddRecord(rr); err != nil {
			return err
		}
	}

	if d.sink, err = startSink(mxAddr, filepath.Join(d.dir, "inbox"), "mx."+zone); err != nil {
		return fmt.Errorf("MX on %s: %w", mxAddr, err)
	}
	d.step("started the recipient's MX on %s", d.sink.addr)

	d.step("starting external-dns %s (--source=crd --provider=rfc2136)", externalDNSBuild)
	host, port, _ := net.SplitHostPort(d.bind.Addr)
	if err := d.start("external-dns", filepath.Join(d.root, "bin", "external-dns", externalDNSBuild, "external-dns"),
		"--kubeconfig="+kubeconfig,
		"--source=crd", "--crd-source-apiversion=externaldns.k8s.io/v1alpha1", "--crd-source-kind=DNSEndpoint",
		"--managed-record-types=TXT", "--registry=txt", "--txt-owner-id=mailroom-demo",
		"--txt-prefix=_extdns-%{record_type}.", "--policy=sync",
		"--provider=rfc2136", "--rfc2136-host="+host, "--rfc2136-port="+port, "--rfc2136-zone="+zone,
		"--rfc2136-tsig-keyname="+strings.TrimSuffix(d.bind.TSIGKeyName, "."), "--rfc2136-tsig-secret="+d.bind.TSIGSecret,
		"--rfc2136-tsig-secret-alg="+d.bind.TSIGAlgorithm, "--rfc2136-tsig-axfr", "--domain-filter="+zone,
		"--interval=10s", "--events", "--min-event-sync-interval=1s", "--metrics-address=127.0.0.1:0",
	); err != nil {
		return err
	}

	d.step("starting the mailroom manager (its RelayPool, SMTPCredential and SendingDomain controllers)")
	if err := d.start("manager", filepath.Join(d.root, "bin", "manager"),
		"--kubeconfig="+kubeconfig, "--metrics-bind-address=0", "--health-probe-bind-address="+freeAddr(),
		"--log-format=text", "--relay-image=localhost/mailroom:dev"); err != nil {
		return err
	}

	d.step("applying RelayPool mail/transactional, SendingDomain mail/example-test and SMTPCredential shop/shop")
	pool, err := d.apply(ctx)
	if err != nil {
		return err
	}

	d.step("starting the relay as pod transactional-relay-0 would run: the pool's operator-rendered Secrets mirrored into %s", filepath.Join(d.dir, "relay", "config"))
	if err := os.MkdirAll(filepath.Join(d.dir, "relay"), 0o700); err != nil {
		return err
	}
	// The manager reads each relay pod's /status at its pod IP on the
	// relay's HTTP port, as in a cluster: the relay gets a loopback address
	// of its own, which its pod object reports.
	ip, err := relayIP()
	if err != nil {
		return err
	}
	d.relay, err = relayhost.New(d.env.Client, pool, filepath.Join(d.dir, "relay"), relayhost.Options{
		Relay: filepath.Join(d.root, "bin", "relay"), IP: ip, HTTPPort: relayconfig.HTTPPort,
		MXPort: d.sink.port(),
	})
	if err != nil {
		return err
	}
	if err := d.relay.Start(ctx, d.timeout); err != nil {
		return err
	}
	if err := waitAllReady(ctx, d.env.Client, d.t0, d.timeout, samples("mail", "transactional", "example-test", "shop", "shop")); err != nil {
		return err
	}
	var sd v1.SendingDomain
	if err := d.env.Client.Get(ctx, client.ObjectKey{Namespace: "mail", Name: "example-test"}, &sd); err != nil {
		return err
	}
	fmt.Println("    records served by BIND:")
	for _, r := range sd.Status.Records {
		fmt.Printf("      %-40s TXT %s\n", r.Name, shorten(r.Value, 70))
	}

	login, err := d.login(ctx)
	if err != nil {
		return err
	}
	d.step("sending a message with the Secret shop/shop-smtp: STARTTLS (the pool's CA) + AUTH PLAIN on %s as %s", d.relay.SubmissionAddr(), login.username)
	if err := login.send(d.relay.SubmissionAddr()); err != nil {
		return err
	}
	msg, err := d.sink.wait(ctx, d.timeout)
	if err != nil {
		return fmt.Errorf("%w (relay log: %s)", err, filepath.Join(d.dir, "relay", "relay.log"))
	}
	fmt.Printf("    delivered to %s: %s\n", recipientHost, msg)

	d.step("verifying the DKIM signature with dkimpy, key fetched from BIND")
	data, err := os.ReadFile(msg)
	if err != nil {
		return err
	}
	out, err := dkimpy.Verify(d.bind.Addr, data)
	fmt.Print(indent(verdicts(out)))
	if err != nil {
		return fmt.Errorf("dkimpy did not verify the delivered message: %w", err)
	}
	d.step("the relay's queue (relay queue list) and a few of its metrics")
	q, _ := exec.Command(filepath.Join(d.root, "bin", "relay"), "queue", "-admin", d.relay.AdminAddr(), "list").CombinedOutput()
	fmt.Print(indent(string(q)))
	fmt.Print(indent(metricsAt(d.relay.HTTPAddr())))

	host, port, _ = net.SplitHostPort(d.bind.Addr)
	fmt.Printf(`
mailroom is up. Try:
  kubectl --kubeconfig %[1]s get sdom,smtpcred,rpool -A
  kubectl --kubeconfig %[1]s describe sendingdomain -n mail example-test
  dig @%[2]s -p %[3]s TXT %[4]s._domainkey.%[5]s +short
  swaks --server %[6]s --tls --tls-verify --tls-ca-path %[12]s --tls-sni relay.%[5]s --auth PLAIN --auth-user %[7]s --auth-password '%[8]s' \
        --from app@%[5]s --to someone@%[9]s
Delivered mail lands in %[10]s. Logs: %[11]s
`, kubeconfig, host, port, sd.Status.DKIM.ActiveSelector, domain, d.relay.SubmissionAddr(), login.username, login.password,
		recipientHost, filepath.Join(d.dir, "inbox"), d.dir, login.caFile)
	if d.once {
		fmt.Println("demo: OK")
		return nil
	}
	fmt.Println("Ctrl-C stops everything.")
	<-ctx.Done()
	return nil
}

// sh runs a build step from the repository root, showing its output.
func (d *demo) sh(args ...string) error {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = d.root
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// start runs a long-lived component with its output in <name>.log.
func (d *demo) start(name, bin string, args ...string) error {
	logPath := filepath.Join(d.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so Ctrl-C reaches the demo first and the demo
	// stops its children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	d.procs = append(d.procs, &proc{name: name, cmd: cmd, log: logPath})
	go func() { _ = cmd.Wait(); f.Close() }()
	return nil
}

// apply creates the three objects a platform team and an application
// team would: the pool (one relay, MX lookups through BIND), the domain
// (verified against BIND) and the shop's credential.
func (d *demo) apply(ctx context.Context) (*v1.RelayPool, error) {
	c := d.env.Client
	for _, ns := range []string{"mail", "shop"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return nil, err
		}
	}
	replicas := int32(1)
	pool := &v1.RelayPool{
		ObjectMeta: metav1.ObjectMeta{Name: "transactional", Namespace: "mail"},
		Spec: v1.RelayPoolSpec{
			Replicas:          &replicas,
			Hostname:          "relay." + domain,
			SendingIPs:        []string{"127.0.0.1"},
			AllowedNamespaces: v1.AllowedNamespaces{From: v1.NamespacesFromAll},
			Delivery:          v1.DeliverySpec{Resolvers: []string{d.bind.Addr}},
		},
	}
	if err := c.Create(ctx, pool); err != nil {
		return nil, err
	}
	interval := metav1.Duration{Duration: 5 * time.Second}
	sd := &v1.SendingDomain{
		ObjectMeta: metav1.ObjectMeta{Name: "example-test", Namespace: "mail"},
		Spec: v1.SendingDomainSpec{
			Domain:  domain,
			PoolRef: v1.PoolReference{Name: "transactional"},
			DMARC:   v1.DMARCSpec{AggregateReportsTo: []string{"mailto:dmarc@" + domain}},
			DNS: v1.DNSSpec{
				TTL:    30,
				Verify: v1.DNSVerifySpec{Resolvers: []string{d.bind.Addr}, Interval: &interval},
			},
		},
	}
	if err := c.Create(ctx, sd); err != nil {
		return nil, err
	}
	cred := &v1.SMTPCredential{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "shop"},
		Spec: v1.SMTPCredentialSpec{
			PoolRef:        v1.PoolReference{Name: "transactional", Namespace: "mail"},
			AllowedSenders: []string{domain},
			SecretName:     "shop-smtp",
		},
	}
	return pool, c.Create(ctx, cred)
}

func (d *demo) teardown() {
	if d.relay != nil {
		d.relay.Stop()
	}
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		if p.cmd.Process != nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, p := range d.procs {
		for p.cmd.ProcessState == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if p.cmd.ProcessState == nil && p.cmd.Process != nil {
			_ = p.cmd.Process.Kill()
		}
	}
	if d.sink != nil {
		d.sink.close()
	}
	if d.bind != nil {
		d.bind.Stop()
	}
	if d.env != nil {
		_ = d.env.Stop()
	}
	fmt.Println("demo: stopped every process it started")
}

func (d *demo) printLogTails() {
	for _, p := range d.procs {
		b, err := os.ReadFile(p.log)
		if err != nil {
			continue
		}
		fmt.Fprintf(os.Stderr, "--- %s (last lines of %s) ---\n%s\n", p.name, p.log, tail(string(b), 25))
	}
	if d.bind != nil {
		fmt.Fprintf(os.Stderr, "--- named ---\n%s\n", d.bind.LogTail(15))
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// verdicts puts dkimpy's report ("<index> <pass|fail> d=… s=… a=…" per
// signature) into words; anything else it printed is shown as it is.
func verdicts(report string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(report), "\n") {
		f := strings.Fields(l)
		if len(f) != 5 || (f[1] != "pass" && f[1] != "fail") || !strings.HasPrefix(f[2], "d=") {
			b.WriteString("dkimpy: " + l + "\n")
			continue
		}
		verdict := "valid: dkimpy verified it against the key published in BIND"
		if f[1] == "fail" {
			verdict = "INVALID: dkimpy could not verify it against the key published in BIND"
		}
		n, _ := strconv.Atoi(f[0])
		fmt.Fprintf(&b, "DKIM signature %d (%s, %s, %s): %s\n", n+1, f[2], f[3], strings.TrimPrefix(f[4], "a="), verdict)
	}
	return b.String()
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.Trim(s, "\n"), "\n") {
		if l == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

var errNoMail = errors.New("no message reached the recipient's MX")
