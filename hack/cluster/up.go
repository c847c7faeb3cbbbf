package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"mailroom.io/mailroom/test/e2e/cluster/info"
)

// Timeouts are generous: the machine has two cores that builds and other
// tests share, and a slow start must not read as a broken one.
const (
	timeoutEtcd       = 2 * time.Minute
	timeoutAPIServer  = 3 * time.Minute
	timeoutContainerd = time.Minute
	timeoutImport     = 3 * time.Minute
	timeoutNode       = 3 * time.Minute
	timeoutProxy      = 2 * time.Minute
	timeoutDNS        = 3 * time.Minute
	timeoutAccounts   = 2 * time.Minute
)

var components = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// imageEntry is one entry of hack/images' images.json.
type imageEntry struct {
	Ref     string   `json:"ref"`
	File    string   `json:"file"`
	Missing []string `json:"missing"`
}

func (o *options) complete() error {
	ip := net.ParseIP(o.NodeIP).To4()
	if ip == nil || ip.IsLoopback() {
		return fmt.Errorf("-node-ip %q: need an IPv4 address outside 127/8 (kubelet rejects loopback)", o.NodeIP)
	}
	_, svc, err := net.ParseCIDR(o.ServiceCIDR)
	if err != nil {
		return fmt.Errorf("-service-cidr: %w", err)
	}
	if _, _, err := net.ParseCIDR(o.PodCIDR); err != nil {
		return fmt.Errorf("-pod-cidr: %w", err)
	}
	base := svc.IP.To4()
	o.apiServiceIP = net.IPv4(base[0], base[1], base[2], base[3]+1)
	o.dnsIP = net.IPv4(base[0], base[1], base[2], base[3]+10)
	for _, f := range o.DNSForward {
		host := f
		if h, _, err := net.SplitHostPort(f); err == nil {
			host = h
		}
		fip := net.ParseIP(host)
		if fip == nil {
			return fmt.Errorf("-dns-forward %q: not an IP address", f)
		}
		// Only servers on this machine: the node address (reachable from
		// pods) or another address assigned here.
		if !fip.Equal(ip) {
			if local, err := addressInUse(fip); err != nil || !local || fip.IsLoopback() {
				return fmt.Errorf("-dns-forward %q: not an address of this machine pods can reach (use the node address %s)", f, o.NodeIP)
			}
		}
	}
	return nil
}

// upRun is one bring-up: what it started, so a failure can say whose log
// to read and the teardown knows what to stop.
type upRun struct {
	l       layout
	o       options
	st      *state
	procs   []*running
	failing string // component whose log explains the failure
	t0      time.Time
	cs      kubernetes.Interface
	admin   *rest.Config
}

func (u *upRun) say(format string, args ...any) {
	fmt.Printf("cluster: [%6.1fs] %s\n", time.Since(u.t0).Seconds(), fmt.Sprintf(format, args...))
}

func (u *upRun) start(name string, args []string) (*running, error) {
	bin := filepath.Join(u.o.K8sBin, name)
	if name == "containerd" {
		bin = "/usr/bin/containerd"
	}
	u.failing = name
	r, err := start(name, bin, args, u.l.log(name), nil)
	if err != nil {
		return nil, err
	}
	u.procs = append(u.procs, r)
	u.st.Procs = append(u.st.Procs, r.proc)
	if err := u.st.save(u.l); err != nil {
		return nil, err
	}
	return r, nil
}

// waitFor polls cond until it holds. It fails at once when any component
// started so far exits, naming it, rather than waiting out the timeout.
func (u *upRun) waitFor(ctx context.Context, component, what string, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	u.failing = component
	var last error
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		for _, p := range u.procs {
			if err := p.exitedErr(); err != nil {
				u.failing = p.Name
				return false, err
			}
		}
		ok, err := cond(ctx)
		if err != nil {
			last = err
		}
		return ok, nil
	})
	if err == nil {
		return nil
	}
	if cause := context.Cause(ctx); cause != nil {
		return fmt.Errorf("interrupted while waiting for %s to be %s", component, what)
	}
	if wait.Interrupted(err) {
		return fmt.Errorf("%s not %s after %s (last error: %v)", component, what, timeout, last)
	}
	return err
}

func up(ctx context.Context, l layout, o options) (err error) {
	u := &upRun{l: l, o: o, t0: time.Now()}
	if os.Geteuid() != 0 {
		return errors.New("must run as root: the node adds an address, a bridge, iptables rules and cgroups")
	}
	if err := u.o.complete(); err != nil {
		return err
	}
	o = u.o
	// kubelet puts sockets under its root folder; unix socket paths are
	// limited to 108 bytes.
	if len(l.Dir) > 60 {
		return fmt.Errorf("-dir %s: path too long for the kubelet's sockets below it (max 60 bytes)", l.Dir)
	}
	for _, c := range components {
		if st, err := os.Stat(filepath.Join(o.K8sBin, c)); err != nil || st.Mode()&0o111 == 0 {
			return fmt.Errorf("%s missing in %s: run hack/build-k8s.sh all", c, o.K8sBin)
		}
	}
	images, err := readImages(o.Images)
	if err != nil {
		return err
	}
	corednsImage := ""
	for _, im := range images {
		if strings.HasPrefix(im.Ref, "localhost/coredns:") {
			corednsImage = im.Ref
		}
	}
	if corednsImage == "" || !hasImage(images, pauseImage) {
		return fmt.Errorf("%s/images.json lacks the pause or CoreDNS image: run go run ./hack/images -coredns <binary>", o.Images)
	}
	if err := ensurePackages(o.NoInstall); err != nil {
		return err
	}
	holder := o.HolderPID
	if holder == 0 {
		holder = os.Getpid()
	}
	if err := claimWaiting(ctx, l, holder, o.Wait); err != nil {
		return err
	}
	if _, err := os.Stat(l.stateFile()); err == nil {
		os.RemoveAll(runRoot)
		return refusedError{msg: fmt.Sprintf("refusing to start: %s holds the state of a node that was not torn down; run hack/cluster/down -dir %s", l.Dir, l.Dir)}
	}
	if err := conflicts(o); err != nil {
		os.RemoveAll(runRoot)
		return refusedError{msg: "refusing to start: " + err.Error()}
	}
	// A fresh folder: logs of an earlier run would confuse the diagnosis.
	// Only an earlier run folder is emptied, never whatever -dir names.
	if err := clearRunFolder(l); err != nil {
		os.RemoveAll(runRoot)
		return err
	}
	if err := os.MkdirAll(l.logs(), 0o755); err != nil {
		os.RemoveAll(runRoot)
		return err
	}
	b, err := captureBaseline()
	if err != nil {
		os.RemoveAll(runRoot)
		return err
	}
	u.st = &state{Dir: l.Dir, Started: u.t0, NodeIP: o.NodeIP, NodeName: o.NodeName, Bridge: o.Bridge, PodCIDR: o.PodCIDR, ServiceCIDR: o.ServiceCIDR, Baseline: b}
	if err := u.st.save(l); err != nil {
		os.RemoveAll(runRoot)
		return err
	}
	defer func() {
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", err)
		}
		fmt.Fprintf(os.Stderr, "cluster: up failed after %.1fs: %v\n", time.Since(u.t0).Seconds(), err)
		if u.failing != "" && ctx.Err() == nil {
			fmt.Fprintf(os.Stderr, "cluster: last lines of %s:\n%s\n", u.l.log(u.failing), indent(tail(u.l.log(u.failing), 40)))
		}
		fmt.Fprintln(os.Stderr, "cluster: tearing down what came up")
		// When an e2e run holds the machine it releases it after its
		// leftovers check; up alone releases it now.
		if derr := teardown(l, u.st, true, holder != os.Getpid()); derr != nil {
			err = errors.Join(err, fmt.Errorf("teardown after the failed start: %w", derr))
		}
	}()
	if err := writeBaselineFiles(l, b, u.st); err != nil {
		return err
	}
	u.say("node %s at %s, run folder %s", o.NodeName, o.NodeIP, l.Dir)
	for _, step := range []struct {
		name string
		fn   func(context.Context) error
	}{
		{"certificates", u.certificates},
		{"host network", u.hostNetwork},
		{"control plane", u.controlPlane},
		{"containerd", u.containerd},
		{"images", func(ctx context.Context) error { return u.importImages(ctx, images) }},
		{"kubelet", u.kubelet},
		{"kube-proxy", u.kubeProxy},
		{"addons", func(ctx context.Context) error { return u.addons(ctx, corednsImage) }},
	} {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("interrupted before %s", step.name)
		}
		if err := step.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", step.name, err)
		}
	}

	i := &info.Info{
		Dir: l.Dir, Kubeconfig: l.admin(), Kubectl: filepath.Join(o.K8sBin, "kubectl"),
		NodeName: o.NodeName, NodeIP: o.NodeIP, PodCIDR: o.PodCIDR, ServiceCIDR: o.ServiceCIDR,
		ClusterDNS: o.dnsIP.String(), ClusterDomain: clusterDomain, StorageClass: o.StorageClass,
		Logs: map[string]string{},
	}
	for _, im := range images {
		i.Images = append(i.Images, info.Image{Ref: im.Ref, Missing: im.Missing})
	}
	for _, p := range u.st.Procs {
		i.Logs[p.Name] = p.Log
	}
	if err := i.Write(); err != nil {
		return err
	}
	u.say("node is up; total RSS of the components %d MiB", u.componentRSS()/1024)
	fmt.Printf("\n  export KUBECONFIG=%s\n  kubectl:  %s\n  logs:     %s\n  teardown: hack/cluster/down -dir %s\n\n",
		l.admin(), i.Kubectl, l.logs(), l.Dir)
	return nil
}

func (u *upRun) componentRSS() int64 {
	var kb int64
	for _, p := range u.procs {
		kb += rss(p.PID)
	}
	return kb
}

// clearRunFolder empties l.Dir if it is missing, empty, or what an earlier
// run left (logs and baseline); anything else is refused.
func clearRunFolder(l layout) error {
	entries, err := os.ReadDir(l.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() != "logs" && e.Name() != "baseline" {
			return fmt.Errorf("-dir %s holds %s: not a run folder left by an earlier node; choose another folder", l.Dir, e.Name())
		}
	}
	return os.RemoveAll(l.Dir)
}

// claimWaiting claims the machine, waiting up to wait for another node to
// be torn down first (another engineer's make e2e on a shared machine).
func claimWaiting(ctx context.Context, l layout, holder int, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	announced := false
	for {
		err := claim(l, holder)
		var refused refusedError
		if err == nil || !errors.As(err, &refused) || time.Now().After(deadline) || !holderAlive() {
			return err
		}
		if !announced {
			fmt.Printf("cluster: %v\ncluster: waiting up to %s for it to be torn down\n", err, wait)
			announced = true
		}
		select {
		case <-ctx.Done():
			return refused
		case <-time.After(5 * time.Second):
		}
	}
}

// holderAlive reports whether the node holding the machine is in use: its
// holder (the up, or the e2e run around it) still runs, or so does one of
// its components. A dead one's leftovers need a down, not patience.
func holderAlive() bool {
	data, err := os.ReadFile(filepath.Join(runRoot, "owner.json"))
	if err != nil {
		return true // being claimed right now
	}
	var o owner
	if json.Unmarshal(data, &o) != nil {
		return false
	}
	if (proc{PID: o.PID, StartTime: o.PIDStart}).alive() {
		return true
	}
	st, err := loadState(newLayout(o.Dir))
	if err != nil {
		return false
	}
	for _, p := range st.Procs {
		if p.alive() {
			return true
		}
	}
	return false
}

func readImages(dir string) ([]imageEntry, error) {
	data, err := os.ReadFile(filepath.Join(dir, "images.json"))
	if err != nil {
		return nil, fmt.Errorf("images: %w (build them with go run ./hack/images)", err)
	}
	var images []imageEntry
	if err := json.Unmarshal(data, &images); err != nil {
		return nil, fmt.Errorf("%s/images.json: %w", dir, err)
	}
	return images, nil
}

func hasImage(images []imageEntry, ref string) bool {
	for _, im := range images {
		if im.Ref == ref {
			return true
		}
	}
	return false
}

// conflicts refuses to start next to anything the node would fight with or
// whose leftovers down could not tell from its own: after this check,
// every KUBE-* chain, kubepods cgroup and bridge of that name is ours.
func conflicts(o options) error {
	var problems []string
	if used, err := addressInUse(net.ParseIP(o.NodeIP)); err != nil {
		return err
	} else if used {
		problems = append(problems, fmt.Sprintf("address %s is already assigned here", o.NodeIP))
	}
	_, pods, _ := net.ParseCIDR(o.PodCIDR)
	_, svcs, _ := net.ParseCIDR(o.ServiceCIDR)
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && (pods.Contains(n.IP) || svcs.Contains(n.IP)) {
				problems = append(problems, fmt.Sprintf("address %s is inside the pod or service range", n.IP))
			}
		}
	}
	if linkExists(o.Bridge) {
		problems = append(problems, fmt.Sprintf("interface %s exists", o.Bridge))
	}
	for _, m := range cgroupMounts() {
		if _, err := os.Stat(filepath.Join(m, "kubepods")); err == nil {
			problems = append(problems, fmt.Sprintf("cgroup %s/kubepods exists (another kubelet, or leftovers)", m))
		}
	}
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		rules := iptablesSave(tool)
		if strings.Contains(rules, ":KUBE-") || strings.Contains(rules, ":"+guardChain) {
			problems = append(problems, fmt.Sprintf("%s shows KUBE-* or %s chains (another kube-proxy, or leftovers)", tool, guardChain))
		}
	}
	for _, p := range pidsWhere(func(exe string, args []string) bool {
		b := filepath.Base(exe)
		return b == "kubelet" || b == "kube-proxy"
	}) {
		problems = append(problems, fmt.Sprintf("%s runs (pid %d)", p.Name, p.PID))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func (u *upRun) certificates(context.Context) error {
	l, o := u.l, u.o
	ca, err := newAuthority(l)
	if err != nil {
		return err
	}
	if err := serviceAccountKeys(l); err != nil {
		return err
	}
	nodeIP := net.ParseIP(o.NodeIP)
	serving := []certSpec{
		{file: "apiserver", cn: "kube-apiserver", server: true,
			dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + clusterDomain, "localhost"},
			ips: []net.IP{nodeIP, o.apiServiceIP, net.IPv4(127, 0, 0, 1)}},
		{file: "kubelet", cn: o.NodeName, server: true, dns: []string{o.NodeName}, ips: []net.IP{nodeIP}},
		{file: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}},
	}
	for _, s := range serving {
		if _, err := ca.issue(l, s); err != nil {
			return err
		}
	}
	server := fmt.Sprintf("https://%s:%d", o.NodeIP, apiserverPort)
	// Client identities the built-in RBAC roles (and the Node authorizer)
	// already know.
	for _, c := range []struct{ kubeconfig, cn, org string }{
		{"admin", "mailroom-e2e-admin", "system:masters"},
		{"controller-manager", "system:kube-controller-manager", ""},
		{"scheduler", "system:kube-scheduler", ""},
		{"kubelet", "system:node:" + o.NodeName, "system:nodes"},
		{"kube-proxy", "system:kube-proxy", ""},
	} {
		s := certSpec{file: "client-" + c.kubeconfig, cn: c.cn}
		if c.org != "" {
			s.orgs = []string{c.org}
		}
		kp, err := ca.issue(l, s)
		if err != nil {
			return err
		}
		if err := writeKubeconfig(l.kubeconfig(c.kubeconfig), server, ca, kp, c.cn); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(l.kubeconfig("admin"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(l.admin(), data, 0o600); err != nil {
		return err
	}
	u.admin, err = clientcmd.BuildConfigFromFlags("", l.admin())
	if err != nil {
		return err
	}
	u.admin.QPS, u.admin.Burst = 50, 100
	u.cs, err = kubernetes.NewForConfig(u.admin)
	if err != nil {
		return err
	}
	u.say("throwaway CA and certificates in %s", l.path("pki"))
	return nil
}

func (u *upRun) hostNetwork(context.Context) error {
	u.failing = ""
	if err := u.st.record(u.l, "node-ip"); err != nil {
		return err
	}
	if err := run("ip", "addr", "add", u.o.NodeIP+"/32", "dev", "lo"); err != nil {
		return err
	}
	forwardingWasOff := u.st.Baseline.Sysctls["net.ipv4.ip_forward"] == "0"
	for _, g := range []struct{ step, restore string }{{"guard-ipv4", "iptables-restore"}, {"guard-ipv6", "ip6tables-restore"}} {
		if err := u.st.record(u.l, g.step); err != nil {
			return err
		}
		if err := addGuard(g.restore, u.o.Bridge, forwardingWasOff); err != nil {
			return err
		}
	}
	u.say("node address %s on lo; forwarding limited to bridge %s", u.o.NodeIP, u.o.Bridge)
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (u *upRun) controlPlane(ctx context.Context) error {
	clientPort, err := freePort()
	if err != nil {
		return err
	}
	peerPort, err := freePort()
	if err != nil {
		return err
	}
	if _, err := u.start("etcd", etcdArgs(u.l, clientPort, peerPort)); err != nil {
		return err
	}
	health := fmt.Sprintf("http://127.0.0.1:%d/health", clientPort)
	hc := &http.Client{Timeout: 2 * time.Second}
	if err := u.waitFor(ctx, "etcd", "healthy", timeoutEtcd, func(ctx context.Context) (bool, error) {
		resp, err := hc.Get(health)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		var h struct{ Health string }
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			return false, err
		}
		return h.Health == "true", nil
	}); err != nil {
		return err
	}
	u.say("etcd healthy on 127.0.0.1:%d", clientPort)

	if _, err := u.start("kube-apiserver", apiserverArgs(u.l, u.o, clientPort)); err != nil {
		return err
	}
	if err := u.waitFor(ctx, "kube-apiserver", "ready", timeoutAPIServer, func(ctx context.Context) (bool, error) {
		_, err := u.cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil, err
	}); err != nil {
		return err
	}
	u.say("kube-apiserver ready on https://%s:%d", u.o.NodeIP, apiserverPort)
	if _, err := u.start("kube-controller-manager", controllerManagerArgs(u.l)); err != nil {
		return err
	}
	if _, err := u.start("kube-scheduler", schedulerArgs(u.l)); err != nil {
		return err
	}
	u.say("kube-controller-manager and kube-scheduler started")
	return nil
}

func (u *upRun) ctr(ctx context.Context, args ...string) ([]byte, error) {
	full := append([]string{"--address", u.l.containerdSocket(), "--namespace", "k8s.io"}, args...)
	out, err := exec.CommandContext(ctx, "/usr/bin/ctr", full...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

func (u *upRun) containerd(ctx context.Context) error {
	if err := writeContainerdConfig(u.l); err != nil {
		return err
	}
	if err := writeCNIConfig(u.l, u.o); err != nil {
		return err
	}
	if _, err := u.start("containerd", []string{"--config", u.l.path("containerd", "config.toml")}); err != nil {
		return err
	}
	if err := u.waitFor(ctx, "containerd", "serving", timeoutContainerd, func(ctx context.Context) (bool, error) {
		_, err := u.ctr(ctx, "version")
		return err == nil, err
	}); err != nil {
		return err
	}
	u.say("containerd serving on %s", u.l.containerdSocket())
	return nil
}

func (u *upRun) importImages(ctx context.Context, images []imageEntry) error {
	u.failing = "containerd"
	ctx, cancel := context.WithTimeout(ctx, timeoutImport)
	defer cancel()
	for _, im := range images {
		if _, err := u.ctr(ctx, "images", "import", filepath.Join(u.o.Images, im.File)); err != nil {
			return err
		}
	}
	out, err := u.ctr(ctx, "images", "list", "--quiet")
	if err != nil {
		return err
	}
	var refs []string
	for _, im := range images {
		if !strings.Contains(string(out), im.Ref+"\n") {
			return fmt.Errorf("%s not listed by containerd after import:\n%s", im.Ref, out)
		}
		refs = append(refs, im.Ref)
	}
	u.say("imported %s", strings.Join(refs, ", "))
	return nil
}

func (u *upRun) kubelet(ctx context.Context) error {
	if err := writeKubeletConfig(u.l, u.o); err != nil {
		return err
	}
	if _, err := u.start("kubelet", kubeletArgs(u.l, u.o)); err != nil {
		return err
	}
	if err := u.waitFor(ctx, "kubelet", "Ready", timeoutNode, func(ctx context.Context) (bool, error) {
		n, err := u.cs.CoreV1().Nodes().Get(ctx, u.o.NodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				if c.Status != corev1.ConditionTrue {
					return false, fmt.Errorf("node %s: %s: %s", c.Status, c.Reason, c.Message)
				}
				return true, nil
			}
		}
		return false, errors.New("node has no Ready condition yet")
	}); err != nil {
		return err
	}
	u.say("node %s Ready", u.o.NodeName)
	return nil
}

func (u *upRun) kubeProxy(ctx context.Context) error {
	if err := writeKubeProxyConfig(u.l, u.o); err != nil {
		return err
	}
	// -v=2 logs every rules sync with the endpoints it saw: the first
	// thing to read when a Service does not answer.
	if _, err := u.start("kube-proxy", []string{"--config=" + u.l.path("kube-proxy.yaml"), "--v=2"}); err != nil {
		return err
	}
	// The kubernetes Service answering from the host proves kube-proxy has
	// programmed its rules.
	viaService := rest.CopyConfig(u.admin)
	viaService.Host = fmt.Sprintf("https://%s:443", u.o.apiServiceIP)
	viaService.Timeout = 3 * time.Second
	cs, err := kubernetes.NewForConfig(viaService)
	if err != nil {
		return err
	}
	if err := u.waitFor(ctx, "kube-proxy", "routing Services", timeoutProxy, func(ctx context.Context) (bool, error) {
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil, err
	}); err != nil {
		return err
	}
	u.say("kube-proxy routes %s to the API server", viaService.Host)
	return nil
}

func (u *upRun) addons(ctx context.Context, corednsImage string) error {
	u.failing = "kubelet"
	if err := installStorage(ctx, u.cs, u.l, u.o); err != nil {
		return err
	}
	u.say("StorageClass %s (default) with %d hostPath PersistentVolumes", u.o.StorageClass, u.o.PVs)
	if err := installCoreDNS(ctx, u.cs, u.o, corednsImage); err != nil {
		return err
	}
	want := u.o.apiServiceIP.String()
	name := "kubernetes.default.svc." + clusterDomain
	if err := u.waitFor(ctx, "kubelet", "serving CoreDNS answers for "+name, timeoutDNS, func(ctx context.Context) (bool, error) {
		addrs, err := lookupViaClusterDNS(ctx, u.o.dnsIP, name)
		if err != nil {
			return false, fmt.Errorf("%w; %s", err, u.corednsPodStatus(ctx))
		}
		return len(addrs) == 1 && addrs[0] == want, fmt.Errorf("%s resolved to %v, want %s", name, addrs, want)
	}); err != nil {
		return err
	}
	u.say("CoreDNS (%s) answers on %s: %s -> %s", corednsImage, u.o.dnsIP, name, want)
	// Pods cannot be created in a namespace before its default service
	// account exists; tests start right after up.
	if err := u.waitFor(ctx, "kube-controller-manager", "creating service accounts", timeoutAccounts, func(ctx context.Context) (bool, error) {
		_, err := u.cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	}); err != nil {
		return err
	}
	return nil
}

// corednsPodStatus summarizes why CoreDNS is not answering yet, for the
// timeout message.
func (u *upRun) corednsPodStatus(ctx context.Context) string {
	pods, err := u.cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-dns"})
	if err != nil || len(pods.Items) == 0 {
		return "no CoreDNS pod yet"
	}
	p := pods.Items[0]
	s := fmt.Sprintf("pod %s %s", p.Name, p.Status.Phase)
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Waiting != nil {
			s += fmt.Sprintf(" (%s: %s)", c.State.Waiting.Reason, c.State.Waiting.Message)
		}
	}
	return s
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
