package relaypool_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/attachment"
	"mailroom.io/mailroom/internal/controller/relaypool"
	"mailroom.io/mailroom/internal/controller/relaypool/pooltest"
	"mailroom.io/mailroom/internal/controller/smtpcredential"
	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/relayconfig"
	"mailroom.io/mailroom/internal/testutil/dkimpy"
	"mailroom.io/mailroom/internal/testutil/dnstest"
	"mailroom.io/mailroom/internal/testutil/envtest"
	"mailroom.io/mailroom/internal/testutil/relayhost"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
	"mailroom.io/mailroom/internal/testutil/writecount"
)

const settle = 60 * time.Second

var env *envtest.Env

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	var err error
	if env, err = envtest.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

type harness struct {
	t      *testing.T
	ctx    context.Context
	c      client.Client
	writes *writecount.Counter
	pool   *relaypool.Reconciler
	creds  *smtpcredential.Reconciler
}

// start runs the pool and credential controllers in a manager; relays
// answers for the relay pods (nil: nobody does).
func start(t *testing.T, relays relaypool.StatusReader) *harness {
	t.Helper()
	m := pooltest.Start(t, env, relays, nil)
	return &harness{t: t, ctx: m.Ctx, c: m.Client, writes: m.Writes, pool: m.Pool, creds: m.Creds}
}

func (h *harness) create(objs ...client.Object) {
	h.t.Helper()
	for _, o := range objs {
		if err := h.c.Create(h.ctx, o); err != nil {
			h.t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

// eventually polls f until it returns nil or the deadline passes.
func (h *harness) eventually(what string, f func() error) {
	h.t.Helper()
	pooltest.Eventually(h.t, settle, what, f)
}

func (h *harness) get(ns, name string, obj client.Object) error {
	return h.c.Get(h.ctx, types.NamespacedName{Namespace: ns, Name: name}, obj)
}

func (h *harness) condition(obj client.Object, conds func() []metav1.Condition, typ string, status metav1.ConditionStatus, reason string) func() error {
	return func() error {
		if err := h.get(obj.GetNamespace(), obj.GetName(), obj); err != nil {
			return err
		}
		c := meta.FindStatusCondition(conds(), typ)
		if c == nil {
			return fmt.Errorf("no %s condition", typ)
		}
		if c.Status != status || (reason != "" && c.Reason != reason) {
			return fmt.Errorf("%s=%s reason %s: %s", typ, c.Status, c.Reason, c.Message)
		}
		if c.ObservedGeneration != obj.GetGeneration() {
			return fmt.Errorf("%s observes generation %d, object is at %d", typ, c.ObservedGeneration, obj.GetGeneration())
		}
		return nil
	}
}

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

// dkimSecret is what the SendingDomain controller writes for a domain;
// the test writes it itself so that no DNS check is involved.
func dkimSecret(t *testing.T, ns, sdName, domain, selector string, key crypto.Signer) (*corev1.Secret, string) {
	t.Helper()
	ring := dkim.NewKeyring(domain, selector, key, time.Now())
	data, err := ring.SecretData()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := ring.Active.Record()
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sdName + "-dkim", Labels: map[string]string{
			attachment.LabelManagedBy: attachment.ManagedBy, "mailroom.io/sending-domain": sdName}},
		Type: "mailroom.io/dkim", Data: data,
	}, rec
}

func sendingDomain(ns, name, domain string) *v1alpha1.SendingDomain {
	return &v1alpha1.SendingDomain{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha1.SendingDomainSpec{Domain: domain, PoolRef: v1alpha1.PoolReference{Name: "transactional", Namespace: "mail"}},
	}
}

func credential(ns, name string, senders ...string) *v1alpha1.SMTPCredential {
	return &v1alpha1.SMTPCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.SMTPCredentialSpec{
			PoolRef:          v1alpha1.PoolReference{Name: "transactional", Namespace: "mail"},
			AllowedSenders:   senders,
			PasswordRotation: v1alpha1.PasswordRotation{GracePeriod: &metav1.Duration{Duration: 4 * time.Second}},
		},
	}
}

// txt is a zone-file TXT record with the value split into 255-byte strings.
func txt(name, value string) string {
	var parts []string
	for len(value) > 255 {
		parts = append(parts, `"`+value[:255]+`"`)
		value = value[255:]
	}
	parts = append(parts, `"`+value+`"`)
	return name + " 300 IN TXT " + strings.Join(parts, " ")
}

// send submits one message as an application would, with the settings of
// its Secret: STARTTLS to the Service name, trusting ca.crt, AUTH PLAIN.
func send(addr string, secret *corev1.Secret, pw, from, to, subject string) error {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(secret.Data["ca.crt"])
	c, err := smtp.DialStartTLS(addr, &tls.Config{RootCAs: roots, ServerName: string(secret.Data["host"])})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", string(secret.Data["username"]), pw)); err != nil {
		return err
	}
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nhello from the seam test\r\n", from, to, subject)
	return c.SendMail(from, []string{to}, strings.NewReader(msg))
}

func TestPoolRendersRelaysAndCredentialsEndToEnd(t *testing.T) {
	host := relayhost.New(t, env.Client, &v1alpha1.RelayPool{ObjectMeta: metav1.ObjectMeta{Namespace: "mail", Name: "transactional"}})
	h := start(t, host)
	dns := dnstest.Start(t)
	sink := smtpsink.Start(t, "127.0.0.1:0", smtpsink.Options{})
	host.MXPort = sink.Port
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	comSecret, comRec := dkimSecret(t, "mail", "example-com", "example.com", "mr-com", edKey)
	orgSecret, orgRec := dkimSecret(t, "mail", "example-org", "example.org", "mr-org", rsaKey)
	dns.Add(t, "rcpt.test. 300 IN MX 10 mx.rcpt.test.", "mx.rcpt.test. 300 IN A 127.0.0.1",
		txt("mr-com._domainkey.example.com.", comRec), txt("mr-org._domainkey.example.org.", orgRec))

	apps := map[string]string{"team": "apps"}
	pool := &v1alpha1.RelayPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "mail", Name: "transactional"},
		Spec: v1alpha1.RelayPoolSpec{
			Replicas: ptr.To[int32](2), Hostname: "relay.example.com",
			AllowedNamespaces: v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromSelector, Selector: &metav1.LabelSelector{MatchLabels: apps}},
			Delivery:          v1alpha1.DeliverySpec{Resolvers: []string{dns.Addr}},
		},
	}
	h.create(namespace("mail", apps), namespace("shop", apps), namespace("billing", apps), namespace("denied", nil),
		comSecret, orgSecret, sendingDomain("mail", "example-com", "example.com"), sendingDomain("mail", "example-org", "example.org"),
		pool,
		credential("shop", "shop", "example.com"),
		credential("billing", "billing", "example.org", "noreply@example.org"),
		credential("shop", "stray", "stray.example.net"),
		credential("denied", "intruder", "example.com"))

	t.Run("refusals are conditions and leave the configuration alone", func(t *testing.T) {
		stray := &v1alpha1.SMTPCredential{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "stray"}}
		h.eventually("stray's Ready", h.condition(stray, func() []metav1.Condition { return stray.Status.Conditions }, "Ready", metav1.ConditionFalse, smtpcredential.ReasonSenderNotCovered))
		if c := meta.FindStatusCondition(stray.Status.Conditions, "Ready"); !strings.Contains(c.Message, `spec.allowedSenders[0] "stray.example.net"`) {
			t.Errorf("stray's message does not name the sender: %s", c.Message)
		}
		if c := meta.FindStatusCondition(stray.Status.Conditions, "Stalled"); c == nil || c.Status != metav1.ConditionTrue {
			t.Errorf("a refused credential is Stalled (kstatus Failed); got %v", c)
		}
		intruder := &v1alpha1.SMTPCredential{ObjectMeta: metav1.ObjectMeta{Namespace: "denied", Name: "intruder"}}
		h.eventually("intruder's Ready", h.condition(intruder, func() []metav1.Condition { return intruder.Status.Conditions }, "Ready", metav1.ConditionFalse, smtpcredential.ReasonNotAllowed))
		var s corev1.Secret
		if err := h.get("denied", "intruder-smtp", &s); err == nil {
			t.Errorf("a credential the pool does not admit got a Secret")
		}
	})

	var cfg *config.Config
	t.Run("the configuration holds exactly the admitted domains and credentials", func(t *testing.T) {
		h.eventually("two credentials in the config", func() error {
			if err := h.get("mail", "transactional", pool); err != nil {
				return err
			}
			if pool.Status.Credentials != 2 || pool.Status.Domains != 2 || pool.Status.ConfigRevision == 0 {
				return fmt.Errorf("status says %d domains, %d credentials, revision %d; %v", pool.Status.Domains, pool.Status.Credentials, pool.Status.ConfigRevision, pool.Status.Conditions)
			}
			return nil
		})
		var err error
		if cfg, err = host.Load(h.ctx, settle); err != nil {
			t.Fatalf("the relay's loader refuses the rendered config: %v", err)
		}
		var users, domains []string
		for _, c := range cfg.Credentials {
			users = append(users, c.Username)
			if !strings.HasPrefix(c.PasswordHash, "$mr-sha256$") {
				t.Errorf("%s: the relay gets a hash, got %q", c.Username, c.PasswordHash)
			}
		}
		for _, d := range cfg.Domains {
			domains = append(domains, d.Name)
		}
		if got := strings.Join(sortStrings(users), ","); got != "billing.billing,shop.shop" {
			t.Errorf("credentials in the config: %s", got)
		}
		if got := strings.Join(sortStrings(domains), ","); got != "example.com,example.org" {
			t.Errorf("domains in the config: %s", got)
		}
		if cfg.Revision < 1 || cfg.Revision != pool.Status.ConfigRevision {
			t.Errorf("config revision %d, status %d", cfg.Revision, pool.Status.ConfigRevision)
		}
	})

	t.Run("the pod template and the other objects", func(t *testing.T) { checkObjects(t, h, pool) })

	t.Run("with no relay pods nothing claims to be applied", func(t *testing.T) {
		h.eventually("pool ConfigApplied", h.condition(pool, func() []metav1.Condition { return pool.Status.Conditions }, v1alpha1.RelayPoolConfigApplied, metav1.ConditionFalse, relaypool.ReasonNoReadyRelays))
		shop := &v1alpha1.SMTPCredential{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "shop"}}
		h.eventually("shop's Ready", h.condition(shop, func() []metav1.Condition { return shop.Status.Conditions }, "Ready", metav1.ConditionFalse, smtpcredential.ReasonNoReadyRelays))
		if c := meta.FindStatusCondition(shop.Status.Conditions, "Reconciling"); c == nil || c.Status != metav1.ConditionTrue {
			t.Errorf("a credential waiting for relays is Reconciling; got %v", c)
		}
	})

	// The seam: the real relay process runs the rendered configuration.
	host.Start(h.ctx, settle)
	submit := host.SubmissionAddr()

	var shopSecret corev1.Secret
	t.Run("Ready once the relay runs the revision, and the login works", func(t *testing.T) {
		h.eventually("pool Ready", h.condition(pool, func() []metav1.Condition { return pool.Status.Conditions }, "Ready", metav1.ConditionTrue, ""))
		// relay.example.com lies under example.com: bounces are signed.
		if c := meta.FindStatusCondition(pool.Status.Conditions, v1alpha1.RelayPoolBouncesSigned); c == nil || c.Status != metav1.ConditionTrue {
			t.Errorf("BouncesSigned = %+v", c)
		}
		shop := &v1alpha1.SMTPCredential{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "shop"}}
		h.eventually("shop's Ready", h.condition(shop, func() []metav1.Condition { return shop.Status.Conditions }, "Ready", metav1.ConditionTrue, ""))
		if err := h.get("shop", "shop-smtp", &shopSecret); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"host", "port", "username", "password", "url", "ca.crt"} {
			if len(shopSecret.Data[key]) == 0 {
				t.Errorf("credential Secret lacks %s", key)
			}
		}
		if got := string(shopSecret.Data["host"]); got != "transactional-relay.mail.svc.cluster.local" {
			t.Errorf("host = %s", got)
		}
		if len(shopSecret.Data["password"]) < 43 {
			t.Errorf("password of %d characters holds less than 256 bits", len(shopSecret.Data["password"]))
		}
		if !strings.HasPrefix(string(shopSecret.Data["url"]), "smtp://shop.shop:") || !strings.HasSuffix(string(shopSecret.Data["url"]), "@transactional-relay.mail.svc.cluster.local:587") {
			t.Errorf("url = %s", shopSecret.Data["url"])
		}
		if err := send(submit, &shopSecret, string(shopSecret.Data["password"]), "app@example.com", "someone@rcpt.test", "seam"); err != nil {
			t.Fatalf("submission with the generated password: %v", err)
		}
		h.eventually("the message at the sink", func() error {
			for _, m := range sink.Messages() {
				if m.Accepted && strings.Contains(string(m.Data), "Subject: seam") {
					report, err := dkimpy.Verify(dns.Addr, m.Data)
					if err != nil {
						t.Fatalf("dkimpy: %v\n%s", err, report)
					}
					if !strings.Contains(report, "d=example.com s=mr-com") {
						t.Errorf("signed with the wrong key: %s", report)
					}
					return nil
				}
			}
			return errors.New("not delivered yet")
		})
	})

	t.Run("the Secret's API key sends through the relay's HTTP API", func(t *testing.T) {
		// The controller hashes the key it writes; the relay checks what
		// an app presents: only a real request shows the two agree.
		apiURL, err := url.Parse(string(shopSecret.Data["api-url"]))
		if err != nil || apiURL.Hostname() == "" {
			t.Fatalf("api-url %q: %v", shopSecret.Data["api-url"], err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(shopSecret.Data["ca.crt"]) {
			t.Fatal("ca.crt holds no certificate")
		}
		hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: apiURL.Hostname()}}}
		post := func(key string) (int, string) {
			body := `{"from": "app@example.com", "to": ["someone@rcpt.test"], "subject": "over the API", "text": "hello"}`
			req, _ := http.NewRequest("POST", "https://"+host.APIAddr()+"/v1/messages", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("POST /v1/messages (certificate checked for %s): %v", apiURL.Hostname(), err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		key := string(shopSecret.Data["api-key"])
		if code, body := post(key + "x"); code != http.StatusUnauthorized {
			t.Errorf("a wrong key: %d %s, want 401", code, body)
		}
		code, body := post(key)
		if code != http.StatusAccepted {
			t.Fatalf("the Secret's api-key: %d %s, want 202", code, body)
		}
		h.eventually("the API's message at the sink", func() error {
			for _, m := range sink.Messages() {
				if m.Accepted && strings.Contains(string(m.Data), "Subject: over the API") {
					if report, err := dkimpy.Verify(dns.Addr, m.Data); err != nil {
						t.Fatalf("dkimpy: %v\n%s", err, report)
					}
					return nil
				}
			}
			return errors.New("not delivered yet")
		})
	})

	t.Run("an unchanged world writes nothing", func(t *testing.T) {
		time.Sleep(time.Second) // let in-flight reconciles finish
		h.writes.Reset()
		for range 3 {
			if _, err := h.pool.Reconcile(h.ctx, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "mail", Name: "transactional"}}); err != nil {
				t.Fatal(err)
			}
			for _, c := range [][2]string{{"shop", "shop"}, {"billing", "billing"}, {"shop", "stray"}, {"denied", "intruder"}} {
				if _, err := h.creds.Reconcile(h.ctx, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: c[0], Name: c[1]}}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if n := h.writes.Total(); n != 0 {
			t.Errorf("three resyncs of an unchanged world wrote %d times:\n%s", n, h.writes)
		}
	})

	t.Run("password rotation: both work during the grace period, then only the new one", func(t *testing.T) {
		old := string(shopSecret.Data["password"])
		shop := &v1alpha1.SMTPCredential{}
		if err := h.get("shop", "shop", shop); err != nil {
			t.Fatal(err)
		}
		var before v1alpha1.RelayPool
		if err := h.get("mail", "transactional", &before); err != nil {
			t.Fatal(err)
		}
		shop.Annotations = map[string]string{v1alpha1.AnnotationRotatePassword: "1"}
		if err := h.c.Update(h.ctx, shop); err != nil {
			t.Fatal(err)
		}
		var fresh corev1.Secret
		h.eventually("a new password", func() error {
			if err := h.get("shop", "shop-smtp", &fresh); err != nil {
				return err
			}
			if string(fresh.Data["password"]) == old {
				return errors.New("still the old password")
			}
			return nil
		})
		// Polling with the new password before the relay has it would be
		// failed logins, which the relay's AUTH throttle counts: wait for
		// the relay to report the configuration with it applied instead.
		h.eventually("the relay applies the rotated password", func() error {
			var pool v1alpha1.RelayPool
			if err := h.get("mail", "transactional", &pool); err != nil {
				return err
			}
			if pool.Status.AppliedRevision <= before.Status.AppliedRevision {
				return fmt.Errorf("applied revision %d, was %d before the rotation", pool.Status.AppliedRevision, before.Status.AppliedRevision)
			}
			return nil
		})
		if err := send(submit, &fresh, string(fresh.Data["password"]), "app@example.com", "someone@rcpt.test", "new password"); err != nil {
			t.Fatalf("the new password once the relay applied it: %v", err)
		}
		if err := send(submit, &fresh, old, "app@example.com", "someone@rcpt.test", "old password in grace"); err != nil {
			t.Errorf("the old password during the grace period: %v", err)
		}
		h.eventually("the old password refused", func() error {
			err := send(submit, &fresh, old, "app@example.com", "someone@rcpt.test", "old password after grace")
			var se *smtp.SMTPError
			if errors.As(err, &se) && se.Code == 535 {
				return nil
			}
			return fmt.Errorf("after the grace period the old password gave %v", err)
		})
		if err := send(submit, &fresh, string(fresh.Data["password"]), "app@example.com", "someone@rcpt.test", "new password after grace"); err != nil {
			t.Errorf("the new password after the grace period: %v", err)
		}
	})
}

func sortStrings(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func checkObjects(t *testing.T, h *harness, pool *v1alpha1.RelayPool) {
	var sts appsv1.StatefulSet
	if err := h.get("mail", "transactional-relay", &sts); err != nil {
		t.Fatal(err)
	}
	ps := sts.Spec.Template.Spec
	ctr := ps.Containers[0]
	checks := []struct {
		what      string
		got, want any
	}{
		{"replicas", *sts.Spec.Replicas, int32(2)},
		{"image", ctr.Image, "localhost/mailroom:test"},
		{"runAsNonRoot", *ps.SecurityContext.RunAsNonRoot, true},
		{"fsGroup", *ps.SecurityContext.FSGroup, int64(65532)},
		{"seccomp", ps.SecurityContext.SeccompProfile.Type, corev1.SeccompProfileTypeRuntimeDefault},
		{"readOnlyRootFilesystem", *ctr.SecurityContext.ReadOnlyRootFilesystem, true},
		{"allowPrivilegeEscalation", *ctr.SecurityContext.AllowPrivilegeEscalation, false},
		{"capabilities", fmt.Sprint(ctr.SecurityContext.Capabilities.Drop), "[ALL]"},
		{"readiness", ctr.ReadinessProbe.HTTPGet.Path, "/readyz"},
		{"liveness", ctr.LivenessProbe.HTTPGet.Path, "/healthz"},
		// limits.shutdownDelay 5s + shutdownGrace 25s + delivery 20s + margin
		{"terminationGracePeriodSeconds", *ps.TerminationGracePeriodSeconds, int64(config.ShutdownBudget(defaults()) / time.Second)},
		{"config sources", len(ps.Volumes[0].Projected.Sources), relayconfig.NumShards + 1},
		{"anti-affinity topology", ps.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey, "kubernetes.io/hostname"},
		{"claim", sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String(), "5Gi"},
		{"claims kept on delete", sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted, appsv1.RetainPersistentVolumeClaimRetentionPolicyType},
		{"owner", metav1.IsControlledBy(&sts, pool), true},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("StatefulSet %s = %v, want %v", c.what, c.got, c.want)
		}
	}
	for _, m := range ctr.VolumeMounts {
		if m.Name != "spool" && !m.ReadOnly {
			t.Errorf("mount %s is writable", m.Name)
		}
	}
	var svc, headless corev1.Service
	if err := h.get("mail", "transactional-relay", &svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.Ports) != 3 {
		t.Fatalf("app Service ports: %+v", svc.Spec.Ports)
	}
	if got := fmt.Sprintf("%s %d %d %s:%d>%s", svc.Spec.Type, svc.Spec.Ports[0].Port, svc.Spec.Ports[1].Port, svc.Spec.Ports[2].Name, svc.Spec.Ports[2].Port, svc.Spec.Ports[2].TargetPort.String()); got != "ClusterIP 587 465 api:443>api" {
		t.Errorf("app Service: %s", got)
	}
	if err := h.get("mail", "transactional-relay-headless", &headless); err != nil {
		t.Fatal(err)
	}
	if headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("headless Service: clusterIP %q, publishNotReadyAddresses %v", headless.Spec.ClusterIP, headless.Spec.PublishNotReadyAddresses)
	}
	var pdb policyv1.PodDisruptionBudget
	if err := h.get("mail", "transactional-relay", &pdb); err != nil {
		t.Errorf("no PodDisruptionBudget for 2 replicas: %v", err)
	} else if pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PDB maxUnavailable %v", pdb.Spec.MaxUnavailable)
	}
	var np networkingv1.NetworkPolicy
	if err := h.get("mail", "transactional-relay", &np); err != nil {
		t.Fatal(err)
	}
	smtpFrom, _ := json.Marshal(np.Spec.Ingress[0].From)
	if !strings.Contains(string(smtpFrom), `"team":"apps"`) {
		t.Errorf("SMTP is admitted from %s, want the pool's namespace selector", smtpFrom)
	}
	var cm corev1.ConfigMap
	if err := h.get("mail", "transactional-relay-ca", &cm); err != nil || !strings.Contains(cm.Data["ca.crt"], "BEGIN CERTIFICATE") {
		t.Errorf("CA ConfigMap: %v", err)
	}
}

func defaults() *config.Config {
	var c config.Config
	c.SetDefaults()
	return &c
}
