// Package cluster connects end-to-end suites to the real single-node
// Kubernetes that `make e2e` (hack/cluster/e2e.sh) brings up before running
// them and tears down after: a kubeconfig and clients, the images built
// from this tree, namespaces that clean up after themselves, and — when a
// test fails — the events, pod descriptions, pod logs and component log
// tails that say why.
//
// Outside make e2e (plain go test ./...) there is no node and every test
// that calls Connect is skipped.
package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"mailroom.io/mailroom/test/e2e/cluster/info"
)

// EnvDir names the environment variable holding the node's run folder;
// hack/cluster/e2e.sh sets it.
const EnvDir = "MAILROOM_E2E_CLUSTER"

// Cluster is a connection to the running node.
type Cluster struct {
	*info.Info
	Config *rest.Config
	Client kubernetes.Interface
}

// Connect returns the node `make e2e` brought up, or skips the test when
// there is none. A node that is announced but unusable fails the test.
func Connect(t testing.TB) *Cluster {
	t.Helper()
	dir := os.Getenv(EnvDir)
	if dir == "" {
		t.Skipf("no Kubernetes node: %s is unset; run make e2e (hack/cluster/e2e.sh)", EnvDir)
	}
	i, err := info.Load(dir)
	if err != nil {
		t.Fatalf("%s=%s: %v", EnvDir, dir, err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", i.Kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", i.Kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &Cluster{Info: i, Config: cfg, Client: cs}
}

// Image returns the reference of one of the images hack/images built and up
// imported (e.g. "mailroom", "e2e-helper"), failing the test when it is
// missing or lacks a binary the test needs (the project image is built
// without /relay while cmd/relay does not compile).
func (c *Cluster) Image(t testing.TB, name string, needs ...string) string {
	t.Helper()
	for _, im := range c.Images {
		if !strings.HasPrefix(im.Ref, "localhost/"+name+":") {
			continue
		}
		for _, n := range needs {
			for _, m := range im.Missing {
				if m == n {
					t.Fatalf("image %s was built without /%s (it did not compile; see hack/images' output)", im.Ref, n)
				}
			}
		}
		return im.Ref
	}
	t.Fatalf("no image localhost/%s:* on the node (have %v)", name, c.Images)
	return ""
}

// Namespace creates a namespace named prefix-<random> with the given
// labels (e.g. pod-security.kubernetes.io/enforce=restricted). When the test
// ends it is deleted; if the test failed, its diagnostics are printed
// first.
func (c *Cluster) Namespace(t testing.TB, prefix string, labels map[string]string) string {
	t.Helper()
	ctx := context.Background()
	c.recycleReleasedVolumes(t)
	ns, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	// Cleanups run last-registered first: diagnose, then delete.
	t.Cleanup(func() {
		if err := c.Client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete namespace %s: %v", ns.Name, err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			c.Diagnose(t, ns.Name)
		}
	})
	// Pods need the namespace's default service account.
	c.WaitFor(t, "service account default in "+ns.Name, 2*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	})
	return ns.Name
}

// recycleReleasedVolumes makes the node's hostPath volumes whose claims are
// gone (Released, reclaim policy Retain) Available again, emptied, so a
// node serves any number of suites and test repetitions (-count) with its
// fixed set of volumes. A Released volume has no pod left using it: the
// claim could only go once no pod used it.
func (c *Cluster) recycleReleasedVolumes(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	pvs, err := c.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list volumes: %v", err)
	}
	for _, pv := range pvs.Items {
		hp := pv.Spec.HostPath
		if pv.Spec.StorageClassName != c.StorageClass || pv.Status.Phase != corev1.VolumeReleased ||
			hp == nil || !strings.HasPrefix(hp.Path, c.Dir+"/") {
			continue
		}
		entries, err := os.ReadDir(hp.Path)
		if err != nil {
			t.Fatalf("recycle %s: %v", pv.Name, err)
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(hp.Path, e.Name())); err != nil {
				t.Fatalf("recycle %s: %v", pv.Name, err)
			}
		}
		pv.Spec.ClaimRef = nil
		if _, err := c.Client.CoreV1().PersistentVolumes().Update(ctx, &pv, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("recycle %s: %v", pv.Name, err)
		}
	}
}

// WaitFor polls cond (every second) until it holds, failing the test after
// timeout with cond's last error.
func (c *Cluster) WaitFor(t testing.TB, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	var last error
	start := time.Now()
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		ok, err := cond(ctx)
		last = err
		return ok, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: gave up after %s; last error: %v", what, timeout, last)
	}
	t.Logf("%s after %.1fs", what, time.Since(start).Seconds())
}

// WaitPodReady waits for the pod to be Ready and returns it. A pod that
// restarts or fails is reported with its status as the last error.
func (c *Cluster) WaitPodReady(t testing.TB, ns, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	c.WaitFor(t, "pod "+ns+"/"+name+" Ready", timeout, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pod = p
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, fmt.Errorf("pod %s: %s", p.Status.Phase, podWaiting(p))
	})
	return pod
}

// PodWaiting says why a pod is not ready: each container's waiting or
// terminated reason.
func PodWaiting(p *corev1.Pod) string { return podWaiting(p) }

func podWaiting(p *corev1.Pod) string {
	var s []string
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			s = append(s, fmt.Sprintf("%s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message))
		case cs.State.Terminated != nil:
			s = append(s, fmt.Sprintf("%s terminated: %s (exit %d)", cs.Name, cs.State.Terminated.Reason, cs.State.Terminated.ExitCode))
		case !cs.Ready:
			s = append(s, cs.Name+" running, not ready")
		}
	}
	return strings.Join(s, "; ")
}

// Kubectl runs the node's kubectl (v1.37.2, not the one on PATH) with the
// admin kubeconfig and returns its combined output.
func (c *Cluster) Kubectl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Info.Kubectl, append([]string{"--kubeconfig", c.Info.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Diagnose prints what a red CI run needs to say why: the namespace's
// objects and events, descriptions and logs of its pods, and the tail of
// the node components' logs (kubelet and containerd explain most pod
// failures; the control plane the rest).
func (c *Cluster) Diagnose(t testing.TB, ns string) {
	t.Helper()
	var b strings.Builder
	section := func(title, body string) {
		fmt.Fprintf(&b, "\n===== %s =====\n%s\n", title, strings.TrimRight(body, "\n"))
	}
	run := func(args ...string) string {
		out, err := c.Kubectl(args...)
		if err != nil {
			return err.Error()
		}
		return out
	}
	section("kubectl get all,endpointslices,pvc,pv -n "+ns, run("get", "all,endpointslices,pvc,pv", "-n", ns, "-o", "wide"))
	section("kubectl get events -n "+ns, run("get", "events", "-n", ns, "--sort-by=.lastTimestamp"))
	section("kubectl describe pods -n "+ns, run("describe", "pods", "-n", ns))
	pods, err := c.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err == nil {
		for _, p := range pods.Items {
			section("kubectl logs "+p.Name, run("logs", "-n", ns, p.Name, "--all-containers", "--prefix", "--tail=50"))
			for _, cs := range p.Status.ContainerStatuses {
				if cs.RestartCount > 0 {
					section("kubectl logs --previous "+p.Name+" -c "+cs.Name, run("logs", "-n", ns, p.Name, "-c", cs.Name, "--previous", "--tail=50"))
				}
			}
		}
	}
	section("kubectl get events -n kube-system", run("get", "events", "-n", "kube-system", "--sort-by=.lastTimestamp"))
	// What kube-proxy programmed for the namespace's Services (its rules
	// carry "<namespace>/<service>" comments): tells a Service that does
	// not answer because of stale rules from one whose pods do not.
	if out, err := exec.Command("iptables-save", "-t", "nat").Output(); err == nil {
		var rules []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, ns+"/") {
				rules = append(rules, line)
			}
		}
		section("iptables-save -t nat | grep "+ns+"/", strings.Join(rules, "\n"))
	}
	for _, comp := range []string{"kubelet", "containerd", "kube-scheduler", "kube-controller-manager", "kube-apiserver"} {
		if path, ok := c.Logs[comp]; ok {
			section("tail -n 40 "+path, tailFile(path, 40))
		}
	}
	t.Logf("diagnostics for namespace %s:%s", ns, b.String())
}

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
