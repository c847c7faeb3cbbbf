package cluster_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	externaldnsv1alpha1 "sigs.k8s.io/external-dns/apis/v1alpha1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/scheduler"
	"mailroom.io/mailroom/internal/testutil/dkimpy"
	"mailroom.io/mailroom/internal/testutil/kubeapp"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
	"mailroom.io/mailroom/test/e2e/cluster"
)

const (
	// opDomain is the SendingDomain the apps send as; sinkDomain the
	// recipients' domain, whose MX is the sink on the node address.
	opDomain   = "shop.e2e.test"
	sinkDomain = "sink.e2e.test"
	opHostname = "relay.e2e.test"
	opPool     = "mail"
	// admittedLabel marks the namespaces the pool admits.
	admittedLabel = "e2e.mailroom.io/relay-clients"
	// Deliveries, DNS propagation of Secrets to pods and operator polls all
	// take a few seconds on a loaded machine; these leave room for more.
	poolTimeout     = 5 * time.Minute
	deliveryTimeout = 3 * time.Minute
	// rolloutTimeout: each relay stops within the grace period the
	// operator derives from its shutdown sequence.
	rolloutTimeout = 8 * time.Minute
)

// TestOperator installs the operator from config/default into a namespace
// enforcing the restricted Pod Security Standard, and checks what issue 9
// asks of it on a real node: a two-replica RelayPool becomes Ready with a
// bound claim per pod; an application pod in another admitted namespace
// submits by the Service's DNS name with the generated Secret and the
// published CA, and the message reaches a sink MX (found through a DNS
// server on the node address, the pool's resolver) DKIM-signed so that
// dkimpy passes; a credential created later works without a pod restart
// and is never Ready before the relays accept it; no acknowledged message
// is lost when a relay pod is deleted or the StatefulSet is restarted
// under a continuous stream of submissions; and on scale-down a message
// queued on the departing pod is handed over and delivered exactly once.
func TestOperator(t *testing.T) {
	c := cluster.Connect(t)
	ctx := context.Background()
	image := c.Image(t, "mailroom", "relay")
	helper := c.Image(t, "e2e-helper")
	kc := kubeClient(t, c)

	dnsSrv, sink := startOutside(t, c, smtpsink.Script{})
	t.Logf("DNS on %s, sink MX on %s", dnsSrv.Addr, sink.Addr)

	mgr := installManager(t, c, image)
	t.Logf("manager pod %s/%s Ready (image %s)", mgr.Namespace, mgr.Name, mgr.Spec.Containers[0].Image)
	if ns, err := c.Client.CoreV1().Namespaces().Get(ctx, managerNamespace, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace %s does not enforce the restricted Pod Security Standard: labels %v", managerNamespace, ns.Labels)
	}

	mailNS, appNS := shopNamespaces(t, c)
	applyYAML(t, c, shopManifests(c, mailNS, appNS, dnsSrv.Addr, "", ""))

	// external-dns' part, done by hand: what the DNSEndpoint asks for goes
	// into the node's DNS server, and its status says it was read.
	publishDNSEndpoint(t, c, kc, dnsSrv, mailNS, "shop")

	start := time.Now()
	pool := waitPool(t, c, kc, mailNS, 2)
	t.Logf("RelayPool Ready with 2 relays %.1fs after it was created; endpoint %s, configuration revision %d applied",
		time.Since(start).Seconds(), pool.Status.Endpoint, pool.Status.AppliedRevision)
	sts, err := c.Client.AppsV1().StatefulSets(mailNS).Get(ctx, opPool+"-relay", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := sts.Spec.Template.Spec.Containers[0].Image; got != image {
		t.Errorf("the relays run %s; want the manager's own image %s", got, image)
	}
	for i := range 2 {
		claim := fmt.Sprintf("spool-%s-relay-%d", opPool, i)
		pvc, err := c.Client.CoreV1().PersistentVolumeClaims(mailNS).Get(ctx, claim, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("claim %s: %v", claim, err)
		}
		if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != c.StorageClass {
			t.Errorf("claim %s is %s (class %v); want Bound in %s", claim, pvc.Status.Phase, pvc.Spec.StorageClassName, c.StorageClass)
		}
		t.Logf("claim %s Bound to %s", claim, pvc.Spec.VolumeName)
	}
	shopLogin := waitCredentialReady(t, c, kc, appNS, "shop")
	roots := poolCA(t, c, mailNS)

	t.Run("KubectlGetShowsColumns", func(t *testing.T) {
		waitDomainReady(t, c, kc, mailNS, "shop")
		out, err := c.Kubectl("get", "rpool,sdom,smtpcred", "-A")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kubectl get rpool,sdom,smtpcred -A\n%s", out)
		rows := tableCells(out)
		want := map[string]map[string]string{
			"relaypool.mailroom.io/" + opPool: {"REPLICAS": "2", "AVAILABLE": "2", "ENDPOINT": pool.Status.Endpoint, "READY": "True"},
			"sendingdomain.mailroom.io/shop":  {"DOMAIN": opDomain, "POOL": opPool, "VERIFIED": "True", "READY": "True"},
			"smtpcredential.mailroom.io/shop": {"USERNAME": "shop." + appNS, "POOL": opPool, "SECRET": "shop-smtp", "SUSPENDED": "false", "READY": "True"},
		}
		seen := map[string]bool{}
		for _, row := range rows {
			w, ok := want[row["NAME"]]
			if !ok {
				continue
			}
			seen[row["NAME"]] = true
			for col, cell := range row {
				if cell == "" {
					t.Errorf("%s: column %s is empty", row["NAME"], col)
				}
			}
			for col, v := range w {
				if row[col] != v {
					t.Errorf("%s: column %s is %q, want %q", row["NAME"], col, row[col], v)
				}
			}
		}
		for name := range want {
			if !seen[name] {
				t.Errorf("kubectl get does not list %s", name)
			}
		}
	})

	t.Run("AppPodSubmitsByServiceName", func(t *testing.T) {
		subject := "app-pod-" + appNS
		runAppPod(t, c, appNS, helper, "shop-smtp", subject)
		msg := waitSinkMessage(t, c, sink, subject)
		if !strings.Contains(string(msg.Data), "DKIM-Signature:") || !strings.Contains(string(msg.Data), "d="+opDomain) {
			t.Fatalf("the message reached the sink without a DKIM signature for %s:\n%s", opDomain, msg.Data)
		}
		report, err := dkimpy.Verify(dnsSrv.Addr, msg.Data)
		if err != nil {
			t.Fatalf("dkimpy does not verify the delivered message: %v\n%s\n%s", err, report, msg.Data)
		}
		t.Logf("delivered to the sink from %s (EHLO %s) and dkimpy says: %s", sink.Conns()[msg.ConnID-1].Remote, msg.Helo, strings.TrimSpace(report))
	})

	t.Run("LateCredentialWithoutRestart", func(t *testing.T) {
		before, err := relayPods(ctx, c, mailNS, opPool)
		if err != nil {
			t.Fatal(err)
		}
		applyYAML(t, c, fmt.Sprintf(`apiVersion: mailroom.io/v1alpha1
kind: SMTPCredential
metadata: {name: late, namespace: %s}
spec:
  poolRef: {name: %s, namespace: %s}
  allowedSenders: [%s]
  secretName: late-smtp
`, appNS, opPool, mailNS, opDomain))
		created := time.Now()
		// Every time Ready=True is seen, every ready relay pod must take
		// the login; until then it is not tried (failed logins would be
		// throttled). Three such observations end the poll.
		var reasons []string
		checks := 0
		var firstReady time.Duration
		c.WaitFor(t, "credential late Ready and accepted by every relay, three times over", poolTimeout, func(ctx context.Context) (bool, error) {
			var cred v1alpha1.SMTPCredential
			if err := kc.Get(ctx, types.NamespacedName{Namespace: appNS, Name: "late"}, &cred); err != nil {
				return false, err
			}
			status, reason, message := conditionStatus(cred.Status.Conditions, "Ready")
			if reason != "" && (len(reasons) == 0 || reasons[len(reasons)-1] != reason) {
				reasons = append(reasons, reason)
				t.Logf("credential late: Ready=%s %s: %s (%.1fs)", status, reason, message, time.Since(created).Seconds())
			}
			if status != "True" {
				return false, fmt.Errorf("Ready=%s %s: %s", status, reason, message)
			}
			if firstReady == 0 {
				firstReady = time.Since(created)
			}
			l := credentialLogin(t, c, appNS, "late-smtp")
			pods, err := relayPods(ctx, c, mailNS, opPool)
			if err != nil {
				return false, err
			}
			for _, p := range pods {
				if !isPodReady(&p) {
					continue
				}
				if err := tryAuth(net.JoinHostPort(p.Status.PodIP, "587"), opHostname, roots, l); err != nil {
					t.Errorf("credential late is Ready (%s) but relay %s refuses it: %v", message, p.Name, err)
					return true, nil
				}
			}
			checks++
			return checks >= 3, fmt.Errorf("%d checks so far", checks)
		})
		t.Logf("credential late: Ready %.1fs after creation (reasons on the way: %v); AUTH accepted by every ready relay at each of %d observations",
			firstReady.Seconds(), reasons, checks)
		after, err := relayPods(ctx, c, mailNS, opPool)
		if err != nil {
			t.Fatal(err)
		}
		for name, p := range before {
			q, ok := after[name]
			if !ok || q.UID != p.UID {
				t.Errorf("relay pod %s was replaced while the credential was added", name)
				continue
			}
			for _, cs := range q.Status.ContainerStatuses {
				if cs.RestartCount != 0 {
					t.Errorf("relay pod %s container %s restarted %d times; a new credential must be a reload", name, cs.Name, cs.RestartCount)
				}
			}
		}
		// And it really sends.
		res := submitMessage(serviceAddr(t, c, mailNS), opHostname, roots, credentialLogin(t, c, appNS, "late-smtp"), "app@"+opDomain, "late@"+sinkDomain, "late-credential")
		if res.stage != "done" {
			t.Fatalf("submission with the late credential: %s", res)
		}
		waitSinkMessage(t, c, sink, "late-credential")
	})

	t.Run("DeleteRelayPodWhileStreaming", func(t *testing.T) {
		victim := opPool + "-relay-0"
		old, err := c.Client.CoreV1().Pods(mailNS).Get(ctx, victim, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st := startStreamer(serviceAddr(t, c, mailNS), roots, shopLogin, "delete-pod", "stream@"+sinkDomain)
		waitAcked(t, c, st, 20)
		t.Logf("deleting %s after %d acknowledged messages", victim, st.ackedCount())
		if err := c.Client.CoreV1().Pods(mailNS).Delete(ctx, victim, metav1.DeleteOptions{}); err != nil {
			st.halt()
			t.Fatal(err)
		}
		c.WaitFor(t, victim+" replaced and Ready", podTimeout, func(ctx context.Context) (bool, error) {
			p, err := c.Client.CoreV1().Pods(mailNS).Get(ctx, victim, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return p.UID != old.UID && isPodReady(p), fmt.Errorf("uid %s, phase %s %s", p.UID, p.Status.Phase, cluster.PodWaiting(p))
		})
		waitAcked(t, c, st, st.ackedCount()+20)
		st.halt()
		checkStream(t, c, sink, st)
	})

	t.Run("RolloutRestartUnderLoad", func(t *testing.T) {
		st := startStreamer(serviceAddr(t, c, mailNS), roots, shopLogin, "rollout", "rollout@"+sinkDomain)
		waitAcked(t, c, st, 20)
		before, err := c.Client.AppsV1().StatefulSets(mailNS).Get(ctx, opPool+"-relay", metav1.GetOptions{})
		if err != nil {
			st.halt()
			t.Fatal(err)
		}
		podsBefore, err := relayPods(ctx, c, mailNS, opPool)
		if err != nil {
			st.halt()
			t.Fatal(err)
		}
		if out, err := c.Kubectl("rollout", "restart", "-n", mailNS, "statefulset/"+opPool+"-relay"); err != nil {
			st.halt()
			t.Fatalf("%v\n%s", err, out)
		}
		start := time.Now()
		c.WaitFor(t, "rollout restart of both relays", rolloutTimeout, func(ctx context.Context) (bool, error) {
			s, err := c.Client.AppsV1().StatefulSets(mailNS).Get(ctx, opPool+"-relay", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if s.Status.UpdateRevision == before.Status.CurrentRevision {
				return false, fmt.Errorf("no new revision yet")
			}
			err = stsRolledOut(s)
			return err == nil, err
		})
		t.Logf("rollout took %.1fs; %d messages acknowledged so far", time.Since(start).Seconds(), st.ackedCount())
		podsAfter, err := relayPods(ctx, c, mailNS, opPool)
		if err != nil {
			st.halt()
			t.Fatal(err)
		}
		for name, p := range podsBefore {
			if q, ok := podsAfter[name]; ok && q.UID == p.UID {
				t.Errorf("%s was not replaced by the rollout", name)
			}
		}
		waitAcked(t, c, st, st.ackedCount()+20)
		st.halt()
		checkStream(t, c, sink, st)
		st.mu.Lock()
		defer st.mu.Unlock()
		if len(st.broken) > 0 {
			t.Errorf("%d submissions broke mid-session during the rollout: %v", len(st.broken), st.broken)
		}
	})

	t.Run("ScaleDownHandsOverTheQueue", func(t *testing.T) {
		departing := opPool + "-relay-1"
		pods, err := relayPods(ctx, c, mailNS, opPool)
		if err != nil {
			t.Fatal(err)
		}
		p, ok := pods[departing]
		if !ok || !isPodReady(&p) {
			t.Fatalf("%s is not there and ready", departing)
		}
		// A recipient of its own: the message is found in the queues by it.
		held := "held-" + string(p.UID)[:8] + "@" + sinkDomain
		// The sink defers the recipient, so the message stays queued on the
		// pod that acknowledged it.
		sink.SetScript(smtpsink.Script{Rcpt: map[string]smtpsink.Action{held: {Reply: smtpsink.Reply(451, "4.3.0", "try again later")}}})
		subject := "scale-down-" + string(p.UID)
		res := submitMessage(net.JoinHostPort(p.Status.PodIP, "587"), opHostname, roots, shopLogin, "app@"+opDomain, held, subject)
		if res.stage != "done" || res.id == "" {
			t.Fatalf("submission to %s: %s", departing, res)
		}
		t.Logf("%s acknowledged the message as %s", departing, res.id)
		var queued *scheduler.MessageInfo
		c.WaitFor(t, "a deferred attempt of "+res.id+" on "+departing, deliveryTimeout, func(ctx context.Context) (bool, error) {
			m, err := queuedFor(c, mailNS, departing, held)
			if err != nil || m == nil {
				return false, fmt.Errorf("not queued: %v", err)
			}
			queued = m
			return m.Attempts > 0, fmt.Errorf("queued as %s, %d attempts, state %s", m.ID, m.Attempts, m.State)
		})

		if out, err := c.Kubectl("scale", "-n", mailNS, "rpool/"+opPool, "--replicas=1"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		start := time.Now()
		var reasons []string
		// Two rounds of the kubelet's Secret refresh (the drain list, then
		// the shorter peer list) and the handover.
		c.WaitFor(t, departing+" drained and removed, the pool Ready with one relay", rolloutTimeout, func(ctx context.Context) (bool, error) {
			var pool v1alpha1.RelayPool
			if err := kc.Get(ctx, types.NamespacedName{Namespace: mailNS, Name: opPool}, &pool); err != nil {
				return false, err
			}
			status, reason, message := conditionStatus(pool.Status.Conditions, "Ready")
			if len(reasons) == 0 || reasons[len(reasons)-1] != reason+": "+message {
				reasons = append(reasons, reason+": "+message)
				t.Logf("pool: Ready=%s %s: %s (%.1fs)", status, reason, message, time.Since(start).Seconds())
			}
			pods, err := relayPods(ctx, c, mailNS, opPool)
			if err != nil {
				return false, err
			}
			_, still := pods[departing]
			return !still && status == "True" && pool.Status.ReadyReplicas == 1,
				fmt.Errorf("%s still there: %v; Ready=%s %s: %s", departing, still, status, reason, message)
		})
		t.Logf("scale-down took %.1fs", time.Since(start).Seconds())
		claim := "spool-" + departing
		if pvc, err := c.Client.CoreV1().PersistentVolumeClaims(mailNS).Get(ctx, claim, metav1.GetOptions{}); err == nil {
			t.Logf("the departed pod's claim %s is kept (%s, volume %s)", claim, pvc.Status.Phase, pvc.Spec.VolumeName)
		} else {
			t.Logf("the departed pod's claim %s: %v", claim, err)
		}
		if got := sinkSubjects(sink, subject)[subject]; got != 0 {
			t.Errorf("the held message was delivered %d times while the sink deferred it", got)
		}
		remaining := opPool + "-relay-0"
		m, err := queuedFor(c, mailNS, remaining, held)
		if err != nil {
			t.Fatal(err)
		}
		if m == nil {
			t.Fatalf("the message %s acknowledged by %s is not in %s's queue after the handover", res.id, departing, remaining)
		}
		t.Logf("handed over to %s as %s (%d attempts so far, state %s, from <%s>)", remaining, m.ID, m.Attempts, m.State, m.From)
		if m.From != "app@"+opDomain || len(m.Recipients) != 1 || m.Recipients[0].Address != held {
			t.Errorf("the envelope changed in the handover: from <%s>, recipients %+v", m.From, m.Recipients)
		}
		// The retry deadline (received time + maxAge) and the attempts made
		// travel with the message.
		if !m.ReceivedAt.Equal(queued.ReceivedAt) || m.Attempts < queued.Attempts || m.Size != queued.Size {
			t.Errorf("the handover changed the message: received %v -> %v, attempts %d -> %d, size %d -> %d",
				queued.ReceivedAt, m.ReceivedAt, queued.Attempts, m.Attempts, queued.Size, m.Size)
		}

		sink.SetScript(smtpsink.Script{})
		waitSinkMessage(t, c, sink, subject)
		c.WaitFor(t, "the queue of "+remaining+" done with the message", deliveryTimeout, func(ctx context.Context) (bool, error) {
			m, err := queuedFor(c, mailNS, remaining, held)
			return err == nil && m == nil, fmt.Errorf("still queued: %v %v", m != nil, err)
		})
		if got := sinkSubjects(sink, subject)[subject]; got != 1 {
			t.Errorf("the message acknowledged by %s was delivered %d times; want exactly once", departing, got)
		} else {
			t.Logf("scale-down: 1 message acknowledged by %s, delivered 1 time by %s, lost 0, duplicated 0", departing, remaining)
		}
	})
}

// applyYAML applies manifests server-side with kubectl, as a user would.
func applyYAML(t *testing.T, c *cluster.Cluster, manifests string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(f, []byte(manifests), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Kubectl("apply", "--server-side", "--field-manager=e2e", "-f", f); err != nil {
		t.Fatalf("%v\n%s", err, manifests)
	} else {
		t.Logf("kubectl apply --server-side:\n%s", strings.TrimSpace(out))
	}
}

// publishDNSEndpoint does external-dns' job once: it waits for the
// SendingDomain's DNSEndpoint, serves its records from the node's DNS
// server and marks it read (status.observedGeneration), as external-dns
// does after a sync.
func publishDNSEndpoint(t *testing.T, c *cluster.Cluster, kc client.Client, dnsSrv *nodeDNS, ns, name string) {
	t.Helper()
	var ep externaldnsv1alpha1.DNSEndpoint
	c.WaitFor(t, "DNSEndpoint "+name+" with a DKIM record", poolTimeout, func(ctx context.Context) (bool, error) {
		if err := kc.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &ep); err != nil {
			return false, err
		}
		for _, e := range ep.Spec.Endpoints {
			if strings.Contains(e.DNSName, "._domainkey.") {
				return true, nil
			}
		}
		return false, fmt.Errorf("endpoints %v", ep.Spec.Endpoints)
	})
	for _, e := range ep.Spec.Endpoints {
		for _, target := range e.Targets {
			dnsSrv.add(t, fmt.Sprintf("%s. 60 IN %s %s", e.DNSName, e.RecordType, target))
		}
		t.Logf("DNS: %s %s (%d values)", e.DNSName, e.RecordType, len(e.Targets))
	}
	ep.Status.ObservedGeneration = ep.Generation
	if err := kc.Status().Update(context.Background(), &ep); err != nil {
		t.Fatalf("DNSEndpoint status: %v", err)
	}
}

// waitPool waits for the pool to be Ready with replicas ready relays.
func waitPool(t *testing.T, c *cluster.Cluster, kc client.Client, ns string, replicas int32) *v1alpha1.RelayPool {
	t.Helper()
	var pool v1alpha1.RelayPool
	c.WaitFor(t, fmt.Sprintf("RelayPool %s Ready with %d relays", opPool, replicas), poolTimeout, func(ctx context.Context) (bool, error) {
		if err := kc.Get(ctx, types.NamespacedName{Namespace: ns, Name: opPool}, &pool); err != nil {
			return false, err
		}
		status, reason, message := conditionStatus(pool.Status.Conditions, "Ready")
		return status == "True" && pool.Status.ReadyReplicas == replicas && pool.Status.ObservedGeneration == pool.Generation,
			fmt.Errorf("Ready=%s %s: %s; readyReplicas %d", status, reason, message, pool.Status.ReadyReplicas)
	})
	return &pool
}

func waitDomainReady(t *testing.T, c *cluster.Cluster, kc client.Client, ns, name string) {
	t.Helper()
	c.WaitFor(t, "SendingDomain "+name+" Ready", poolTimeout, func(ctx context.Context) (bool, error) {
		var sd v1alpha1.SendingDomain
		if err := kc.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &sd); err != nil {
			return false, err
		}
		status, reason, message := conditionStatus(sd.Status.Conditions, "Ready")
		return status == "True", fmt.Errorf("Ready=%s %s: %s", status, reason, message)
	})
}

// waitCredentialReady waits for the credential's Ready and returns the
// login its Secret holds.
func waitCredentialReady(t *testing.T, c *cluster.Cluster, kc client.Client, ns, name string) login {
	t.Helper()
	var cred v1alpha1.SMTPCredential
	c.WaitFor(t, "SMTPCredential "+name+" Ready", poolTimeout, func(ctx context.Context) (bool, error) {
		if err := kc.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &cred); err != nil {
			return false, err
		}
		status, reason, message := conditionStatus(cred.Status.Conditions, "Ready")
		return status == "True", fmt.Errorf("Ready=%s %s: %s", status, reason, message)
	})
	return credentialLogin(t, c, ns, cred.Status.SecretName)
}

func credentialLogin(t *testing.T, c *cluster.Cluster, ns, secret string) login {
	t.Helper()
	s, err := c.Client.CoreV1().Secrets(ns).Get(context.Background(), secret, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("credential Secret %s: %v", secret, err)
	}
	for _, k := range []string{"host", "port", "username", "password", "url", "ca.crt"} {
		if len(s.Data[k]) == 0 {
			t.Errorf("credential Secret %s/%s has no %s", ns, secret, k)
		}
	}
	return login{username: string(s.Data["username"]), password: string(s.Data["password"])}
}

// poolCA is the CA the pool publishes in its ConfigMap.
func poolCA(t *testing.T, c *cluster.Cluster, ns string) *x509.CertPool {
	t.Helper()
	cm, err := c.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), opPool+"-relay-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("CA ConfigMap: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(cm.Data["ca.crt"])) {
		t.Fatalf("ConfigMap %s-relay-ca holds no certificate in ca.crt", opPool)
	}
	return roots
}

// serviceAddr is the pool's ClusterIP Service on 587, which the host
// reaches through kube-proxy's rules.
func serviceAddr(t *testing.T, c *cluster.Cluster, ns string) string {
	t.Helper()
	svc, err := c.Client.CoreV1().Services(ns).Get(context.Background(), opPool+"-relay", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(svc.Spec.ClusterIP, "587")
}

// runAppPod runs the e2e helper as an application would: the credential
// Secret's keys as environment variables, the relay reached by the host
// name the Secret gives (the Service's DNS name).
func runAppPod(t *testing.T, c *cluster.Cluster, ns, image, secret, subject string) {
	t.Helper()
	ctx := context.Background()
	pod := kubeapp.SubmitPod(kubeapp.Submission{
		Pod: "app", Image: image, Secret: secret,
		From: "app@" + opDomain, To: "app@" + sinkDomain, Subject: subject,
	})
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create app pod: %v", err)
	}
	c.WaitFor(t, "app pod finished", podTimeout, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "app", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, fmt.Errorf("phase %s %s", p.Status.Phase, cluster.PodWaiting(p))
	})
	p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := c.Kubectl("logs", "-n", ns, "app")
	if p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("the app pod failed:\n%s", logs)
	}
	host, _ := c.Client.CoreV1().Secrets(ns).Get(ctx, secret, metav1.GetOptions{})
	t.Logf("app pod (SMTP_HOST=%s): %s", host.Data["host"], strings.TrimSpace(logs))
}

// waitSinkMessage waits for the sink to accept a message with subject.
func waitSinkMessage(t *testing.T, c *cluster.Cluster, sink *smtpsink.Sink, subject string) smtpsink.Message {
	t.Helper()
	var msg smtpsink.Message
	c.WaitFor(t, "message "+subject+" at the sink", deliveryTimeout, func(ctx context.Context) (bool, error) {
		for _, m := range sink.Accepted() {
			if subjectOf(m.Data) == subject {
				msg = m
				return true, nil
			}
		}
		return false, fmt.Errorf("%d messages at the sink, none with that subject", len(sink.Accepted()))
	})
	return msg
}

// waitAcked waits until the stream has n acknowledged messages.
func waitAcked(t *testing.T, c *cluster.Cluster, st *streamer, n int) {
	t.Helper()
	c.WaitFor(t, fmt.Sprintf("%d messages acknowledged", n), deliveryTimeout, func(ctx context.Context) (bool, error) {
		return st.ackedCount() >= n, fmt.Errorf("%s", st.report())
	})
}

// checkStream waits until every message the stream got acknowledged is at
// the sink and reports the counts.
func checkStream(t *testing.T, c *cluster.Cluster, sink *smtpsink.Sink, st *streamer) {
	t.Helper()
	st.mu.Lock()
	acked := slices.Clone(st.acked)
	st.mu.Unlock()
	var d deliveryTally
	c.WaitFor(t, "every acknowledged "+st.tag+" message at the sink", deliveryTimeout, func(ctx context.Context) (bool, error) {
		d = tally(acked, sinkSubjects(sink, st.tag+"-"))
		return d.lost == 0, fmt.Errorf("%s; first missing: %v", d, d.lostSubjects[:min(5, len(d.lostSubjects))])
	})
	t.Logf("%s: client: %s", st.tag, st.report())
	t.Logf("%s: %s", st.tag, d)
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.refused) > 0 {
		t.Errorf("%s: %d submissions refused with 5xx: %v", st.tag, len(st.refused), st.refused)
	}
}

// queuedFor finds the message to rcpt in a relay's queue (`relay queue
// -json list` inside the pod: the admin API listens on its loopback); nil
// when none is queued.
func queuedFor(c *cluster.Cluster, ns, pod, rcpt string) (*scheduler.MessageInfo, error) {
	out, err := c.Kubectl("exec", "-n", ns, pod, "-c", "relay", "--", "/relay", "queue", "-admin", "127.0.0.1:8081", "-json", "list")
	if err != nil {
		return nil, err
	}
	var list []scheduler.MessageInfo
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("relay queue -json list in %s: %v\n%s", pod, err, out)
	}
	for i := range list {
		for _, r := range list[i].Recipients {
			if r.Address == rcpt {
				return &list[i], nil
			}
		}
	}
	return nil, nil
}
