package cluster_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"mailroom.io/mailroom/internal/testutil/kubeapp"
	"mailroom.io/mailroom/test/e2e/cluster"
)

const (
	podTimeout  = 3 * time.Minute
	httpTimeout = 2 * time.Minute
)

// restrictedContainer meets the restricted Pod Security Standard, as the
// relay pods the operator creates must.
func restrictedContainer() *corev1.SecurityContext { return kubeapp.RestrictedContainer() }

// TestStatefulSetKeepsItsVolume runs a StatefulSet with a PVC from an image
// built from this tree in a namespace enforcing the restricted Pod Security
// Standard; it writes to its volume, its pod is deleted and comes back with
// the same data; kubectl logs and exec work; its ClusterIP Service answers
// from the host and, by DNS name, from another pod.
func TestStatefulSetKeepsItsVolume(t *testing.T) {
	c := cluster.Connect(t)
	ctx := context.Background()
	ns := c.Namespace(t, "e2e-sts", map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	})
	// The first workload is the e2e helper; the relay takes its place with
	// c.Image(t, "mailroom", "relay") and its command once cmd/relay exists.
	image := c.Image(t, "e2e-helper")

	// The label is really enforced: a pod that does not meet the standard is
	// refused (a dry run goes through admission, Pod Security included).
	_, err := c.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "not-restricted"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}},
	}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "PodSecurity") {
		t.Fatalf("a pod without a restricted security context was not refused by Pod Security admission: %v", err)
	}

	labels := map[string]string{"app": "helper"}
	createServices(t, c, ns, "helper", labels, "http", 8080, 80)
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "helper"},
		Spec: appsv1.StatefulSetSpec{
			ServiceName: "helper-pods",
			Replicas:    ptr.To[int32](1),
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](10),
					Containers: []corev1.Container{{
						Name:            "helper",
						Image:           image,
						ImagePullPolicy: corev1.PullNever,
						Args:            []string{"serve", "-listen", ":8080", "-data", "/data"},
						Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
							PeriodSeconds: 1,
						},
						VolumeMounts:    []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
						SecurityContext: restrictedContainer(),
					}},
				},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					StorageClassName: ptr.To(c.StorageClass),
					Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
	if _, err := c.Client.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create StatefulSet: %v", err)
	}
	first := c.WaitPodReady(t, ns, "helper-0", podTimeout)
	volume := boundVolume(t, c, ns, "data-helper-0")

	svc, err := c.Client.CoreV1().Services(ns).Get(ctx, "helper", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + svc.Spec.ClusterIP
	// The ClusterIP answers from the host (kube-proxy's rules), served by a
	// non-root process.
	who := httpFromHost(t, c, http.MethodGet, base+"/whoami", "")
	if !strings.Contains(who, "uid=65532") {
		t.Errorf("helper runs as %q, want the image's non-root uid 65532", who)
	}
	payload := fmt.Sprintf("written by %s at %s", first.UID, time.Now().Format(time.RFC3339Nano))
	httpFromHost(t, c, http.MethodPut, base+"/files/greeting", payload)

	// kubectl logs and exec: the API server reaches the kubelet with the
	// harness's certificates, the kubelet reaches containerd's stream server.
	if out, err := c.Kubectl("logs", "-n", ns, "helper-0"); err != nil || !strings.Contains(out, "serving on :8080") {
		t.Errorf("kubectl logs helper-0: %v\n%s", err, out)
	}
	if out, err := c.Kubectl("exec", "-n", ns, "helper-0", "--", "/e2e-helper", "get", "http://127.0.0.1:8080/files/greeting"); err != nil || out != payload {
		t.Errorf("kubectl exec helper-0 read %q (%v), want %q", out, err, payload)
	}

	// The pod is deleted; the StatefulSet brings back helper-0 on the same
	// claim and volume, and the data is still there.
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "helper-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, "helper-0 replaced", podTimeout, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "helper-0", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return p.UID != first.UID, fmt.Errorf("still the first pod (%s), phase %s", p.UID, p.Status.Phase)
	})
	second := c.WaitPodReady(t, ns, "helper-0", podTimeout)
	if v := boundVolume(t, c, ns, "data-helper-0"); v != volume {
		t.Errorf("claim moved from volume %s to %s", volume, v)
	}
	if got := httpFromHost(t, c, http.MethodGet, base+"/files/greeting", ""); got != payload {
		t.Errorf("after the pod came back (%s) the volume holds %q, want %q", second.UID, got, payload)
	}

	// Another pod reaches the Service by its DNS name (CoreDNS, the pod's
	// resolv.conf from kubelet, kube-proxy's rules from a pod).
	client := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:            "client",
				Image:           image,
				ImagePullPolicy: corev1.PullNever,
				Args:            []string{"serve", "-listen", ":8080"},
				SecurityContext: restrictedContainer(),
			}},
		},
	}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, client, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create client pod: %v", err)
	}
	c.WaitPodReady(t, ns, "client", podTimeout)
	for _, host := range []string{"helper." + ns + ".svc." + c.ClusterDomain, "helper"} {
		var out string
		c.WaitFor(t, "client pod reaching http://"+host, httpTimeout, func(ctx context.Context) (bool, error) {
			o, err := c.Kubectl("exec", "-n", ns, "client", "--", "/e2e-helper", "get", "http://"+host+"/files/greeting")
			out = o
			return err == nil, err
		})
		if out != payload {
			t.Errorf("client pod read %q from http://%s, want %q", out, host, payload)
		}
	}
}

// createServices creates a StatefulSet's headless Service "<name>-pods"
// (stable pod names) on the pods' port, and the ClusterIP Service "<name>"
// clients use, whose servicePort forwards to the container port portName.
func createServices(t *testing.T, c *cluster.Cluster, ns, name string, selector map[string]string, portName string, podPort, servicePort int32) {
	t.Helper()
	for _, s := range []*corev1.Service{
		{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-pods"},
			Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: selector,
				Ports: []corev1.ServicePort{{Name: portName, Port: podPort}}},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Selector: selector,
				Ports: []corev1.ServicePort{{Name: portName, Port: servicePort, TargetPort: intstr.FromString(portName)}}},
		},
	} {
		if _, err := c.Client.CoreV1().Services(ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create Service %s: %v", s.Name, err)
		}
	}
}

// boundVolume waits for the claim to be bound and returns its volume.
func boundVolume(t *testing.T, c *cluster.Cluster, ns, claim string) string {
	t.Helper()
	var volume string
	c.WaitFor(t, "claim "+claim+" Bound", podTimeout, func(ctx context.Context) (bool, error) {
		pvc, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		volume = pvc.Spec.VolumeName
		return pvc.Status.Phase == corev1.ClaimBound, fmt.Errorf("claim is %s", pvc.Status.Phase)
	})
	return volume
}

// httpFromHost sends a request from the test process (on the host) and
// returns the body of a 2xx answer, retrying while the Service's endpoints
// and kube-proxy's rules catch up with a new pod.
func httpFromHost(t *testing.T, c *cluster.Cluster, method, url, body string) string {
	t.Helper()
	// A fresh connection per request: a kept-alive one would stay pinned
	// (by its conntrack entry) to the pod that answered first, while the
	// point is to see where the Service sends a new client now.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var got string
	c.WaitFor(t, method+" "+url+" from the host", httpTimeout, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
		if err != nil {
			return false, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return false, err
		}
		if resp.StatusCode/100 != 2 {
			return false, fmt.Errorf("%s: %s", resp.Status, data)
		}
		got = string(data)
		return true, nil
	})
	return got
}
