package cluster_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/mail"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"mailroom.io/mailroom/internal/events"
	"mailroom.io/mailroom/internal/relayconfig"
	"mailroom.io/mailroom/internal/testutil/dkimpy"
	"mailroom.io/mailroom/internal/testutil/kubeapp"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
	"mailroom.io/mailroom/internal/testutil/webhookverify"
	"mailroom.io/mailroom/test/e2e/cluster"
)

// feedbackTimeout bounds each wait for an event: the relays post events
// within seconds of the change.
const feedbackTimeout = time.Minute

// suppressionPull is how often a relay pulls the other relays'
// suppression changes (cmd/relay's default).
const suppressionPull = 30 * time.Second

// TestDeliveryFeedback checks what issue 13 asks of the HTTP API and
// delivery events on a real node: an application pod in a namespace
// enforcing the restricted Pod Security Standard sends through the pool
// Service's HTTP API (the Secret's api-url and api-key, TLS verified with
// the published CA), the message reaches the sink MX DKIM-signed, and the
// `delivered` event arrives at the same pod on its own Service, signed
// (verified in the pod with crypto/hmac, again here with an independent
// Python implementation, and a tampered post refused). A recipient the MX
// refuses permanently bounces on one relay (a hard `bounced` event), and
// the other relay then reports the address suppressed (the address
// check, and the credential's GET /v1/suppressions) and does not try it
// again: mail to it is a `suppressed` event, with no new attempt at the
// MX.
func TestDeliveryFeedback(t *testing.T) {
	c := cluster.Connect(t)
	ctx := context.Background()
	image := c.Image(t, "mailroom", "relay")
	helper := c.Image(t, "e2e-helper")
	kc := kubeClient(t, c)

	gone := "gone-" + randomHex(t, 4) + "@" + sinkDomain
	dnsSrv, sink := startOutside(t, c, smtpsink.Script{Rcpt: map[string]smtpsink.Action{
		gone: {Reply: smtpsink.Reply(550, "5.1.1", "no such user here")}}})
	installManager(t, c, image)
	mailNS, appNS := shopNamespaces(t, c)
	hookURL := fmt.Sprintf("http://hooks.%s.svc:8080/hooks", appNS)
	applyYAML(t, c, shopManifests(c, mailNS, appNS, dnsSrv.Addr, "  api: {enabled: true}\n", fmt.Sprintf(`  events:
    webhook:
      url: %s
      types: [delivered, bounced, suppressed]
`, hookURL)))
	publishDNSEndpoint(t, c, kc, dnsSrv, mailNS, "shop")
	waitPool(t, c, kc, mailNS, 2)
	shopLogin := waitCredentialReady(t, c, kc, appNS, "shop")
	secret, err := c.Client.CoreV1().Secrets(appNS).Get(ctx, "shop-smtp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"api-url", "api-key", "webhook-secret"} {
		if len(secret.Data[k]) == 0 {
			t.Fatalf("credential Secret shop-smtp has no %s (keys: %v)", k, keysOf(secret.Data))
		}
	}
	t.Logf("credential Secret: api-url %s, webhook %s", secret.Data["api-url"], hookURL)
	roots := poolCA(t, c, mailNS)

	app := runHookApp(t, c, appNS, helper, "shop-smtp")
	hooks := hookReceiver{addr: net.JoinHostPort(app.Status.PodIP, "8080")}

	t.Run("APISendAndDeliveredWebhook", func(t *testing.T) {
		subject := "api-" + appNS
		rcpt := "api@" + sinkDomain
		out, err := c.Kubectl("exec", "-n", appNS, "app", "--", "/e2e-helper", "api-send",
			"-from", "app@"+opDomain, "-to", rcpt, "-subject", subject, "-timeout", "90s")
		if err != nil {
			t.Fatal(err)
		}
		var accepted struct{ ID, MessageID string }
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, "api-send: 202 "); ok {
				if err := json.Unmarshal([]byte(v), &accepted); err != nil {
					t.Fatalf("the 202 answer %q: %v", v, err)
				}
			}
		}
		if accepted.ID == "" || accepted.MessageID == "" {
			t.Fatalf("api-send printed no 202 answer with id and messageId:\n%s", out)
		}
		t.Logf("app pod: POST %s/v1/messages: 202 queued as %s, Message-ID <%s>", secret.Data["api-url"], accepted.ID, accepted.MessageID)

		msg := waitSinkMessage(t, c, sink, subject)
		parsed, err := mail.ReadMessage(bytes.NewReader(msg.Data))
		if err != nil {
			t.Fatalf("the delivered message: %v", err)
		}
		if got := parsed.Header.Get("Message-Id"); got != "<"+accepted.MessageID+">" {
			t.Errorf("the delivered message has Message-ID %q; the API answered %q", got, accepted.MessageID)
		}
		report, err := dkimpy.Verify(dnsSrv.Addr, msg.Data)
		if err != nil || !strings.Contains(parsed.Header.Get("DKIM-Signature"), "d="+opDomain) {
			t.Fatalf("the message reached the sink without a valid DKIM signature for %s: %v\n%s\n%s", opDomain, err, report, msg.Data)
		}
		t.Logf("delivered to the sink, dkimpy says: %s", strings.TrimSpace(report))

		got := hooks.wait(t, c, "delivered event of "+accepted.ID, func(e events.Event) bool {
			return e.Type == events.Delivered && e.QueueID == accepted.ID
		})
		e := got.event
		if e.Recipient != rcpt || e.MessageID != accepted.MessageID || e.Credential != shopLogin.username || e.RemoteMTA == "" {
			t.Errorf("delivered event: recipient %q, messageId %q, credential %q, remoteMta %q; want %q, %q, %q and the MX",
				e.Recipient, e.MessageID, e.Credential, e.RemoteMTA, rcpt, accepted.MessageID, shopLogin.username)
		}
		if got.WebhookID != e.ID {
			t.Errorf("webhook-id %s is not the event's id %s", got.WebhookID, e.ID)
		}
		t.Logf("the app pod verified the delivered event %s (remote MTA %s, %s)", e.ID, e.RemoteMTA, e.Reply)

		// The same post checked by an implementation that shares nothing
		// with the pod's or the relay's.
		post := webhookverify.Post{Header: got.header(), Body: got.Body}
		if v := webhookverify.Verify(t, string(secret.Data["webhook-secret"]), time.Now(), []webhookverify.Post{post}); len(v) != 1 || v[0] != "ok" {
			t.Errorf("verify_webhook.py on the relay's post: %v", v)
		}
		// The receiver takes the relay's post again as it was (a
		// duplicate, as a retry would be) and refuses it changed.
		if code := hooks.replay(t, got.header(), got.Body); code != http.StatusNoContent {
			t.Errorf("the relay's post sent again: %d, want 204", code)
		}
		tamperedBody := bytes.Replace(got.Body, []byte(`"type":"delivered"`), []byte(`"type":"bounced"`), 1)
		if bytes.Equal(tamperedBody, got.Body) {
			t.Fatalf("the delivered event has no \"type\":\"delivered\" to change: %s", got.Body)
		}
		tamperedSig := got.header()
		tamperedSig.Set("webhook-signature", "v1,"+flipBase64(strings.TrimPrefix(got.Signature, "v1,")))
		for name, req := range map[string]struct {
			h    http.Header
			body []byte
		}{"body": {got.header(), tamperedBody}, "signature": {tamperedSig, got.Body}} {
			if code := hooks.replay(t, req.h, req.body); code != http.StatusUnauthorized {
				t.Errorf("a post with a tampered %s: %d, want 401", name, code)
			}
		}
		if st := hooks.state(t); len(st.Refused) != 2 {
			t.Errorf("the receiver refused %d posts, want the 2 tampered ones: %v", len(st.Refused), st.Refused)
		} else {
			t.Logf("the receiver refused the tampered posts: %v", st.Refused)
		}
	})

	t.Run("HardBounceSuppressedByTheOtherRelay", func(t *testing.T) {
		pods, err := relayPods(ctx, c, mailNS, opPool)
		if err != nil {
			t.Fatal(err)
		}
		first, other := pods[opPool+"-relay-0"], pods[opPool+"-relay-1"]
		if first.Status.PodIP == "" || other.Status.PodIP == "" {
			t.Fatalf("relay pods without addresses: %v", pods)
		}
		// Each pod by its own address: the Service would pick either.
		res := submitMessage(net.JoinHostPort(first.Status.PodIP, "587"), opHostname, roots, shopLogin, "app@"+opDomain, gone, "bounce-"+appNS)
		if res.stage != "done" || res.id == "" {
			t.Fatalf("submission to %s: %s", first.Name, res)
		}
		b := hooks.wait(t, c, "bounced event of "+res.id, func(e events.Event) bool {
			return e.Type == events.Bounced && e.QueueID == res.id
		}).event
		if b.Recipient != gone || b.BounceType != events.Hard || b.EnhancedStatus != "5.1.1" {
			t.Errorf("bounced event: recipient %q, bounceType %q, enhancedStatus %q; want %q, hard, 5.1.1", b.Recipient, b.BounceType, b.EnhancedStatus, gone)
		}
		t.Logf("%s bounced %s: %s event, bounceType %s, bounceClass %q, reply %q", first.Name, res.id, b.Type, b.BounceType, b.BounceClass, b.Reply)

		apiKey := string(secret.Data["api-key"])
		start := time.Now()
		// Within two pull rounds: in a pool this young the push usually
		// fails, as cluster DNS still caches (30s) the peer names' NXDOMAIN
		// from the relays' start, before their pods were in the headless
		// Service; the next pull round then brings the entry.
		c.WaitFor(t, other.Name+" reports "+gone+" suppressed and lists it for the credential", 2*suppressionPull+10*time.Second, func(ctx context.Context) (bool, error) {
			return addressSuppressed(ctx, other.Status.PodIP, roots, apiKey, gone)
		})
		t.Logf("%s knew of the suppression %.1fs after the bounced event was read", other.Name, time.Since(start).Seconds())
		// What the relays said about sharing it.
		for _, p := range []string{first.Name, other.Name} {
			logs, _ := c.Kubectl("logs", "-n", mailNS, p, "-c", "relay")
			for _, line := range strings.Split(logs, "\n") {
				if strings.Contains(line, "suppression") {
					t.Logf("%s: %s", p, line)
				}
			}
		}

		attempts := rcptAttempts(sink, gone)
		res2 := submitMessage(net.JoinHostPort(other.Status.PodIP, "587"), opHostname, roots, shopLogin, "app@"+opDomain, gone, "suppressed-"+appNS)
		if res2.stage != "done" || res2.id == "" {
			t.Fatalf("submission to %s: %s", other.Name, res2)
		}
		s := hooks.wait(t, c, "suppressed event of "+res2.id, func(e events.Event) bool {
			return e.QueueID == res2.id && (e.Type == events.Suppressed || e.Type == events.Delivered || e.Type == events.Bounced)
		}).event
		if s.Type != events.Suppressed || s.Recipient != gone || s.BounceType != events.Hard {
			t.Errorf("%s reported %s for %s (recipient %q, bounceType %q, reply %q); want suppressed, hard", other.Name, s.Type, res2.id, s.Recipient, s.BounceType, s.Reply)
		}
		if n := rcptAttempts(sink, gone); n != attempts {
			t.Errorf("the MX was asked for %s %d more times after the suppression", gone, n-attempts)
		}
		t.Logf("%s did not try %s again: %s event (%s)", other.Name, gone, s.Type, s.Reply)
	})
}

// runHookApp runs the application pod of TestDeliveryFeedback: the e2e
// helper's webhook receiver, with the credential Secret's api-url,
// api-key, ca.crt and webhook-secret in its environment (api-send is run
// in it with kubectl exec), behind a Service "hooks" on port 8080. It
// returns the pod once Ready.
func runHookApp(t *testing.T, c *cluster.Cluster, ns, image, secret string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	env := func(name, key string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key}}}
	}
	labels := map[string]string{"app.kubernetes.io/name": "hooks"}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Labels: labels},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "app", Image: image, ImagePullPolicy: corev1.PullNever,
				Args:  []string{"hooks", "-listen", ":8080", "-path", "/hooks"},
				Env:   []corev1.EnvVar{env("API_URL", "api-url"), env("API_KEY", "api-key"), env("API_CA_CRT", "ca.crt"), env("WEBHOOK_SECRET", "webhook-secret")},
				Ports: []corev1.ContainerPort{{Name: "hooks", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("hooks")}}},
				SecurityContext: kubeapp.RestrictedContainer(),
			}},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "hooks"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
			{Name: "hooks", Port: 8080, TargetPort: intstr.FromString("hooks")}}},
	}
	if _, err := c.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Service hooks: %v", err)
	}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create app pod: %v", err)
	}
	return c.WaitPodReady(t, ns, "app", podTimeout)
}

// hookReceiver reads and feeds the app pod's webhook receiver directly at
// its pod address (the node reaches pod addresses).
type hookReceiver struct{ addr string }

// receivedHook is one verified post as the receiver lists it, the body
// as it was posted.
type receivedHook struct {
	WebhookID string `json:"webhookId"`
	Timestamp int64  `json:"timestamp"`
	Signature string `json:"signature"`
	Body      []byte `json:"body"`
	Posts     int    `json:"posts"`
	event     events.Event
}

// header is the post's Standard Webhooks headers.
func (h receivedHook) header() http.Header {
	hd := http.Header{}
	hd.Set("Content-Type", "application/json")
	hd.Set("webhook-id", h.WebhookID)
	hd.Set("webhook-timestamp", fmt.Sprint(h.Timestamp))
	hd.Set("webhook-signature", h.Signature)
	return hd
}

type receiverState struct {
	Events  []receivedHook `json:"events"`
	Refused []string       `json:"refused"`
}

func (r hookReceiver) get(ctx context.Context) (receiverState, error) {
	var st receiverState
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.addr+"/events", nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /events: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, err
	}
	for i := range st.Events {
		if err := json.Unmarshal(st.Events[i].Body, &st.Events[i].event); err != nil {
			return st, fmt.Errorf("event %s: %v", st.Events[i].WebhookID, err)
		}
	}
	return st, nil
}

func (r hookReceiver) state(t *testing.T) receiverState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := r.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// wait polls the receiver until it has verified an event that match
// accepts, and returns it.
func (r hookReceiver) wait(t *testing.T, c *cluster.Cluster, what string, match func(events.Event) bool) receivedHook {
	t.Helper()
	var found receivedHook
	c.WaitFor(t, what+" at the app pod", feedbackTimeout, func(ctx context.Context) (bool, error) {
		st, err := r.get(ctx)
		if err != nil {
			return false, err
		}
		var seen []string
		for _, h := range st.Events {
			if match(h.event) {
				found = h
				return true, nil
			}
			seen = append(seen, string(h.event.Type)+" "+h.event.QueueID)
		}
		return false, fmt.Errorf("verified so far: %v; refused: %v", seen, st.Refused)
	})
	return found
}

// replay posts body with the headers to the receiver and returns the
// status.
func (r hookReceiver) replay(t *testing.T, h http.Header, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+r.addr+"/hooks", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// relayAPI makes one request of one relay's HTTP API at its pod address
// (TLS verified for the pool's name) with the credential's API key, and
// returns the answer, failing on any status but 200.
func relayAPI(ctx context.Context, podIP string, roots *x509.CertPool, apiKey, method, path string, body any) ([]byte, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil,
		TLSClientConfig: &tls.Config{ServerName: opHostname, RootCAs: roots}}}
	defer client.CloseIdleConnections()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	url := "https://" + net.JoinHostPort(podIP, fmt.Sprint(relayconfig.APIPort)) + path
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s %s", method, url, resp.Status, answer)
	}
	return answer, nil
}

// addressSuppressed asks one relay (POST /v1/addresses/check) whether
// addr is suppressed, and whether the credential sees the entry in its
// GET /v1/suppressions (scoped to entries its senders' mail caused).
func addressSuppressed(ctx context.Context, podIP string, roots *x509.CertPool, apiKey, addr string) (bool, error) {
	answer, err := relayAPI(ctx, podIP, roots, apiKey, http.MethodPost, "/v1/addresses/check", map[string]string{"address": addr})
	if err != nil {
		return false, err
	}
	var check struct {
		Suppressed bool `json:"suppressed"`
	}
	if err := json.Unmarshal(answer, &check); err != nil {
		return false, err
	}
	if !check.Suppressed {
		return false, fmt.Errorf("address check: %s", bytes.TrimSpace(answer))
	}
	list, err := relayAPI(ctx, podIP, roots, apiKey, http.MethodGet, "/v1/suppressions", nil)
	if err != nil {
		return false, err
	}
	var l struct {
		Suppressions []struct {
			Address string `json:"address"`
		} `json:"suppressions"`
	}
	if err := json.Unmarshal(list, &l); err != nil {
		return false, err
	}
	for _, e := range l.Suppressions {
		if e.Address == addr {
			return true, nil
		}
	}
	return false, fmt.Errorf("suppressed, but GET /v1/suppressions does not list it: %s", bytes.TrimSpace(list))
}

// rcptAttempts counts the RCPT commands for addr the sink has seen (the
// relays deliver to it in cleartext, so its transcripts hold them all).
func rcptAttempts(sink *smtpsink.Sink, addr string) int {
	n := 0
	for _, c := range sink.Conns() {
		for _, line := range c.Transcript {
			if strings.HasPrefix(strings.ToLower(line), "rcpt to:<"+addr+">") {
				n++
			}
		}
	}
	return n
}

// flipBase64 changes the first character of a base64 string to another
// valid one.
func flipBase64(s string) string {
	if s == "" {
		return "AAAA"
	}
	c := byte('A')
	if s[0] == 'A' {
		c = 'B'
	}
	return string(c) + s[1:]
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// startOutside starts the world outside the cluster on the node address:
// a DNS server for the recipients' MX (sinkDomain) and the senders' DKIM
// keys, and the MX itself, a sink answering as script says.
func startOutside(t *testing.T, c *cluster.Cluster, script smtpsink.Script) (*nodeDNS, *smtpsink.Sink) {
	t.Helper()
	dnsSrv := startNodeDNS(t, c.NodeIP)
	sink := smtpsink.Start(t, net.JoinHostPort(c.NodeIP, "25"), smtpsink.Options{Hostname: "mx." + sinkDomain, Script: script})
	dnsSrv.add(t,
		sinkDomain+". 60 IN MX 10 mx."+sinkDomain+".",
		"mx."+sinkDomain+". 60 IN A "+c.NodeIP,
	)
	return dnsSrv, sink
}

// shopNamespaces creates the pool's namespace and the application's, both
// enforcing the restricted Pod Security Standard and admitted by the pool.
func shopNamespaces(t *testing.T, c *cluster.Cluster) (mailNS, appNS string) {
	t.Helper()
	restricted := map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
		admittedLabel: "true",
	}
	return c.Namespace(t, "e2e-mail", restricted), c.Namespace(t, "e2e-app", restricted)
}

// shopManifests are a two-replica RelayPool opPool in mailNS delivering
// through the DNS server at dnsAddr, the SendingDomain opDomain, and the
// SMTPCredential shop in appNS (Secret shop-smtp). poolSpec and credSpec
// are more lines of the pool's and the credential's spec, indented by
// two spaces.
func shopManifests(c *cluster.Cluster, mailNS, appNS, dnsAddr, poolSpec, credSpec string) string {
	return fmt.Sprintf(`apiVersion: mailroom.io/v1alpha1
kind: RelayPool
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  replicas: 2
  hostname: %[3]s
  storage: {size: 1Gi, storageClassName: %[4]s, whenDeleted: Delete}
  allowedNamespaces:
    from: Selector
    selector: {matchLabels: {%[5]s: "true"}}
  delivery:
    resolvers: [%[6]q]
    retry: {schedule: ["3s"], maxAge: 1h, delayWarningAfter: "0"}
%[9]s---
apiVersion: mailroom.io/v1alpha1
kind: SendingDomain
metadata: {name: shop, namespace: %[2]s}
spec:
  domain: %[7]s
  poolRef: {name: %[1]s}
  dns:
    verify: {resolvers: [%[6]q], interval: 30s}
---
apiVersion: mailroom.io/v1alpha1
kind: SMTPCredential
metadata: {name: shop, namespace: %[8]s}
spec:
  poolRef: {name: %[1]s, namespace: %[2]s}
  allowedSenders: [%[7]s]
  secretName: shop-smtp
%[10]s`, opPool, mailNS, opHostname, c.StorageClass, admittedLabel, dnsAddr, opDomain, appNS, poolSpec, credSpec)
}

// waitManagerUninstalled waits until what an earlier installManager
// uninstalled (with --wait=false) is gone: applying into a namespace or a
// CRD that is still being deleted fails.
func waitManagerUninstalled(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	args := []string{"get", "--ignore-not-found", "-o",
		`jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.deletionTimestamp}{"\n"}{end}`,
		"namespace/" + managerNamespace, "crd/relaypools.mailroom.io", "crd/sendingdomains.mailroom.io",
		"crd/smtpcredentials.mailroom.io", "crd/dnsendpoints.externaldns.k8s.io"}
	c.WaitFor(t, "no earlier install of the manager being deleted", managerTimeout, func(ctx context.Context) (bool, error) {
		out, err := c.Kubectl(args...)
		if err != nil {
			return false, err
		}
		var terminating []string
		for _, line := range strings.Fields(out) {
			if name, since, _ := strings.Cut(line, "="); since != "" {
				terminating = append(terminating, name)
			}
		}
		return len(terminating) == 0, fmt.Errorf("still being deleted: %v", terminating)
	})
}
