package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"mailroom.io/mailroom/internal/testutil/bindtest"
	"mailroom.io/mailroom/internal/testutil/envtest"
)

// The processes the SendingDomain e2e suite runs around envtest's API
// server: external-dns (rfc2136 against a bindtest BIND) and
// kube-controller-manager's garbage collector, which envtest lacks and
// which is what removes a deleted SendingDomain's DNSEndpoint.

// externalDNSBuild is the external-dns the suite runs: v0.21.0 with the
// patches in hack/tools/external-dns/patches. The release as published
// cannot update or delete TXT records (see docs/external-dns.md), which the
// suite checks it does.
const externalDNSBuild = "v0.21.0-mailroom.1"

// externalDNSTXTPrefix names ownership records "_extdns-txt.<name>": the
// record type must be in the prefix, or the ownership record of an apex
// record ("txt-example.test") falls outside the zone.
const externalDNSTXTPrefix = "_extdns-%{record_type}."

// externalDNSFlags are the flags mailroom needs from external-dns; the same
// list is documented in docs/external-dns.md.
func externalDNSFlags(bind *bindtest.Server, ownerID string) []string {
	host, port, _ := strings.Cut(bind.Addr, ":")
	return []string{
		"--source=crd",
		"--crd-source-apiversion=externaldns.k8s.io/v1alpha1",
		"--crd-source-kind=DNSEndpoint",
		"--managed-record-types=TXT",
		"--registry=txt",
		"--txt-owner-id=" + ownerID,
		"--txt-prefix=" + externalDNSTXTPrefix,
		"--policy=sync",
		"--provider=rfc2136",
		"--rfc2136-host=" + host,
		"--rfc2136-port=" + port,
		"--rfc2136-zone=" + strings.TrimSuffix(bind.Zone, "."),
		"--rfc2136-tsig-keyname=" + strings.TrimSuffix(bind.TSIGKeyName, "."),
		"--rfc2136-tsig-secret=" + bind.TSIGSecret,
		"--rfc2136-tsig-secret-alg=" + bind.TSIGAlgorithm,
		"--rfc2136-tsig-axfr",
		"--domain-filter=" + strings.TrimSuffix(bind.Zone, "."),
	}
}

// process is a child process whose output is kept for failure reports.
type process struct {
	name   string
	path   string
	args   []string
	log    *syncBuffer
	cmd    *exec.Cmd
	exited chan struct{}
	// ended: the test stopped it for good (end), so its absence at cleanup
	// is no failure.
	ended bool
}

// end stops the process for good.
func (p *process) end() {
	p.ended = true
	p.stop()
}

func (p *process) start(t testing.TB) {
	t.Helper()
	p.cmd = exec.Command(p.path, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	p.exited = exited
	cmd := p.cmd
	go func() { _ = cmd.Wait(); close(exited) }()
}

// stop kills the process; it reports whether it was still running.
func (p *process) stop() bool {
	select {
	case <-p.exited:
		return false
	default:
		_ = p.cmd.Process.Kill()
		<-p.exited
		return true
	}
}

func runProcess(t testing.TB, name, path string, args ...string) *process {
	t.Helper()
	p := &process{name: name, path: path, args: args, log: &syncBuffer{}}
	p.start(t)
	t.Cleanup(func() {
		if !p.stop() && !p.ended {
			t.Errorf("%s exited during the test", name)
		}
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", name, tail(p.log.String(), 60))
		}
	})
	return p
}

// externalDNS is a running external-dns.
type externalDNS struct{ *process }

func startExternalDNS(t testing.TB, root string, cfg *rest.Config, bind *bindtest.Server, interval time.Duration) *externalDNS {
	t.Helper()
	bin := filepath.Join(root, "bin", "external-dns", externalDNSBuild, "external-dns")
	if _, err := os.Stat(bin); err != nil {
		if out, err := exec.Command(filepath.Join(root, "hack", "build-external-dns.sh"), "patched").CombinedOutput(); err != nil {
			t.Fatalf("building external-dns: %v\n%s", err, out)
		}
	}
	args := append(externalDNSFlags(bind, "mailroom-e2e"),
		"--kubeconfig="+writeKubeconfig(t, cfg),
		"--interval="+interval.String(),
		// React to DNSEndpoint changes at once, not only every interval.
		"--events",
		"--min-event-sync-interval=1s",
		"--metrics-address=127.0.0.1:0",
		"--log-level=debug",
	)
	return &externalDNS{runProcess(t, "external-dns", bin, args...)}
}

// pause stops external-dns; resume starts it again with the same flags,
// appending to the same log.
func (e *externalDNS) pause() { e.stop() }

func (e *externalDNS) resume(t testing.TB) { e.start(t) }

// changeLines are the log lines in which the rfc2136 provider writes to DNS.
func changeLines(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "Adding RR") || strings.Contains(l, "Removing RR") {
			out = append(out, l)
		}
	}
	return out
}

// upToDateCycles counts completed sync cycles that found nothing to change.
func upToDateCycles(log string) int {
	return strings.Count(log, "All records are already up to date")
}

// startGarbageCollector runs kube-controller-manager with only the garbage
// collector, which removes objects whose owner is gone.
func startGarbageCollector(t testing.TB, root string, cfg *rest.Config) {
	t.Helper()
	bin := filepath.Join(root, "bin", "k8s", envtest.KubernetesVersion, "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		cmd := exec.Command(filepath.Join(root, "hack", "build-k8s.sh"), "kube-controller-manager")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building kube-controller-manager: %v\n%s", err, out)
		}
	}
	runProcess(t, "kube-controller-manager", bin,
		"--kubeconfig="+writeKubeconfig(t, cfg),
		"--controllers=garbagecollector",
		"--leader-elect=false",
		"--secure-port=0",
	)
}

// writeKubeconfig writes cfg as a kubeconfig file for the child processes.
func writeKubeconfig(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := envtest.WriteKubeconfig(cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
