package gitops

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	externaldnsv1alpha1 "sigs.k8s.io/external-dns/apis/v1alpha1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller"
	"mailroom.io/mailroom/internal/controller/apply"
	"mailroom.io/mailroom/internal/controller/attachment"
	"mailroom.io/mailroom/internal/controller/relaypool"
	"mailroom.io/mailroom/internal/controller/sendingdomain"
	"mailroom.io/mailroom/internal/controller/smtpcredential"
	"mailroom.io/mailroom/internal/testutil/bindtest"
	"mailroom.io/mailroom/internal/testutil/envtest"
	"mailroom.io/mailroom/internal/testutil/relayhost"
)

// expectation is what kstatus and Argo CD must say of one object once the
// reconcilers have settled it.
type expectation struct {
	obj    client.Object
	reason string // the Ready condition's reason
	kstat  status.Status
	argo   string
}

// TestStatusOfRealObjects creates objects in a real API server, lets the
// manager's three real reconcilers write their status, then computes what
// kstatus (cli-utils) and the Argo CD health checks make of them. Afterwards
// it checks that the controllers never wrote into spec: generation and spec
// are as created, and every managedFields entry of the field manager
// "mailroom" is on the status subresource.
//
// In envtest no kubelet runs: for one pool the test runs the real relay
// process on the rendered configuration and creates its pod, Ready
// (internal/testutil/relayhost), so that pool and its credential reach
// Ready=True; another pool has no pod and waits. The test also plays
// external-dns: it writes a DNSEndpoint's records into a real BIND and sets
// its observedGeneration, so that a SendingDomain reaches Ready=True.
func TestStatusOfRealObjects(t *testing.T) {
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	env, err := envtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	bind := bindtest.Start(t, "example.test")

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Cache: controller.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	// The one pool with a relay: the real relay process on loopback, its
	// pod Ready as kubelet would report it.
	host := relayhost.New(t, env.Client, &v1alpha1.RelayPool{ObjectMeta: metav1.ObjectMeta{Namespace: "gitops", Name: "transactional"}})
	// As cmd/manager wires them (cmd/manager/reconcilers.go), but the pool
	// controller reads relay status from the relay process.
	if err := attachment.SetupIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		t.Fatal(err)
	}
	for _, setup := range []func(ctrl.Manager) error{
		(&relaypool.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(),
			Recorder: mgr.GetEventRecorder("relaypool-controller"), RelayImage: "localhost/mailroom:test", Relays: host}).SetupWithManager,
		(&smtpcredential.Reconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme(),
			Recorder: mgr.GetEventRecorder("smtpcredential-controller")}).SetupWithManager,
		(&sendingdomain.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(),
			MinVerifyBackoff: time.Second, QueryTimeout: 2 * time.Second}).SetupWithManager,
	} {
		if err := setup(mgr); err != nil {
			t.Fatal(err)
		}
	}
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	c := env.Client

	const ns = "gitops"
	verify := v1alpha1.DNSVerifySpec{Resolvers: []string{bind.Addr}, Interval: &metav1.Duration{Duration: time.Minute}}
	domain := func(name, dnsName, pool string) *v1alpha1.SendingDomain {
		return &v1alpha1.SendingDomain{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1alpha1.SendingDomainSpec{
			Domain: dnsName, PoolRef: v1alpha1.PoolReference{Name: pool},
			DKIM: v1alpha1.DKIMSpec{Algorithm: v1alpha1.DKIMAlgorithmEd25519}, DNS: v1alpha1.DNSSpec{TTL: 60, Verify: verify}}}
	}
	cred := func(name, pool string, suspended bool, senders ...string) *v1alpha1.SMTPCredential {
		return &v1alpha1.SMTPCredential{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1alpha1.SMTPCredentialSpec{
			PoolRef: v1alpha1.PoolReference{Name: pool}, AllowedSenders: senders, SecretName: name + "-smtp", Suspended: suspended}}
	}
	pool := func(name string, replicas int32, tlsSecret string) *v1alpha1.RelayPool {
		p := &v1alpha1.RelayPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1alpha1.RelayPoolSpec{
			Replicas: ptr.To(replicas), Hostname: "relay.example.test", SendingIPs: []string{"192.0.2.10"}}}
		p.Spec.Submission.TLS.SecretName = tlsSecret
		return p
	}

	cases := []expectation{
		// Its relay runs the rendered revision.
		{pool("transactional", 1, ""), relaypool.ReasonReady, status.CurrentStatus, "Healthy"},
		// No relay pod here (no kubelet in envtest): converging.
		{pool("idle", 1, ""), relaypool.ReasonNoReadyRelays, status.InProgressStatus, "Progressing"},
		// The TLS Secret it names does not exist: stuck until someone acts.
		{pool("badtls", 1, "no-such-secret"), relaypool.ReasonTLS, status.FailedStatus, "Degraded"},
		{pool("zero", 0, ""), relaypool.ReasonScaledToZero, status.FailedStatus, "Degraded"},
		// Published by the test's external-dns, verified against BIND.
		{domain("example-test", "example.test", "transactional"), sendingdomain.ReasonReady, status.CurrentStatus, "Healthy"},
		// Published nowhere: DNS verification keeps trying.
		{domain("unpublished", "sub.example.test", "idle"), "", status.InProgressStatus, "Progressing"},
		{domain("nopool", "other.example.test", "missing"), sendingdomain.ReasonPoolNotFound, status.FailedStatus, "Degraded"},
		// The relay accepts its login.
		{cred("shop", "transactional", false, "example.test"), smtpcredential.ReasonReady, status.CurrentStatus, "Healthy"},
		{cred("waiting", "idle", false, "sub.example.test"), smtpcredential.ReasonNoReadyRelays, status.InProgressStatus, "Progressing"},
		{cred("stray", "transactional", false, "stray.example.net"), smtpcredential.ReasonSenderNotCovered, status.FailedStatus, "Degraded"},
		{cred("paused", "transactional", true, "example.test"), smtpcredential.ReasonSuspended, status.FailedStatus, "Suspended"},
		{cred("orphan", "missing", false, "example.test"), smtpcredential.ReasonPoolNotFound, status.FailedStatus, "Degraded"},
	}

	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	created := map[string]client.Object{}
	for _, tc := range cases {
		if err := c.Create(ctx, tc.obj); err != nil {
			t.Fatalf("create %T %s: %v", tc.obj, tc.obj.GetName(), err)
		}
		created[key(tc.obj)] = tc.obj.DeepCopyObject().(client.Object)
	}

	host.Start(ctx, time.Minute)

	// external-dns, played: publish example-test's DNSEndpoint into BIND.
	published := map[string]int64{}
	publish := func() {
		var ep externaldnsv1alpha1.DNSEndpoint
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "example-test"}, &ep); err != nil {
			return
		}
		if published[ep.Name] == ep.Generation {
			return
		}
		for _, e := range ep.Spec.Endpoints {
			bind.Delete(t, e.DNSName+".", dns.TypeTXT)
			for _, target := range e.Targets {
				bind.Add(t, fmt.Sprintf("%s. %d IN TXT %s", e.DNSName, e.RecordTTL, target))
			}
		}
		ep.Status.ObservedGeneration = ep.Generation
		if err := c.Status().Update(ctx, &ep); err == nil {
			published[ep.Name] = ep.Generation
		}
	}

	deadline := time.Now().Add(3 * time.Minute)
	var pending []string
	for {
		publish()
		pending = pending[:0]
		for _, tc := range cases {
			if msg := check(ctx, c, tc); msg != "" {
				pending = append(pending, msg)
			}
		}
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, p := range pending {
		t.Error(p)
	}
	for _, tc := range cases {
		if check(ctx, c, tc) == "" {
			t.Logf("%s: Ready reason %s, kstatus %s, Argo CD %s", key(tc.obj), orAny(tc.reason), tc.kstat, tc.argo)
		}
	}

	// Let the reconcilers run a while longer (requeues, DNS rechecks), then
	// look at what they wrote.
	time.Sleep(3 * time.Second)
	t.Run("no controller writes into spec", func(t *testing.T) {
		for _, tc := range cases {
			now := newOf(tc.obj)
			if err := c.Get(ctx, client.ObjectKeyFromObject(tc.obj), now); err != nil {
				t.Fatal(err)
			}
			was := created[key(tc.obj)]
			if now.GetGeneration() != was.GetGeneration() {
				t.Errorf("%s: generation %d, created at %d: something wrote into spec", key(tc.obj), now.GetGeneration(), was.GetGeneration())
			}
			if !equality.Semantic.DeepEqual(specOf(t, now), specOf(t, was)) {
				t.Errorf("%s: spec changed:\nnow %v\nwas %v", key(tc.obj), specOf(t, now), specOf(t, was))
			}
			var mailroom int
			for _, mf := range now.GetManagedFields() {
				if mf.Manager != apply.FieldOwner {
					continue
				}
				mailroom++
				if mf.Subresource != "status" {
					t.Errorf("%s: field manager %q owns fields outside status (operation %s): %s", key(tc.obj), mf.Manager, mf.Operation, mf.FieldsV1.Raw)
				}
				var fields map[string]any
				_ = json.Unmarshal(mf.FieldsV1.Raw, &fields)
				for f := range fields {
					if f != "f:status" {
						t.Errorf("%s: %q owns %s", key(tc.obj), mf.Manager, f)
					}
				}
			}
			if mailroom == 0 {
				t.Errorf("%s: no managedFields entry of %q: the status was not written with the field owner", key(tc.obj), apply.FieldOwner)
			}
		}
	})
}

// check returns "" when tc's object is where it should be, else what is off.
func check(ctx context.Context, c client.Client, tc expectation) string {
	obj := newOf(tc.obj)
	if err := c.Get(ctx, client.ObjectKeyFromObject(tc.obj), obj); err != nil {
		return err.Error()
	}
	u, err := toUnstructured(obj)
	if err != nil {
		return err.Error()
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	reason := ""
	for _, cd := range conds {
		if m := cd.(map[string]any); m["type"] == "Ready" {
			reason, _ = m["reason"].(string)
		}
	}
	res, err := status.Compute(u)
	if err != nil {
		return fmt.Sprintf("%s: kstatus: %v", key(tc.obj), err)
	}
	var script string
	if b, err := os.ReadFile(scriptPath(tc.obj)); err == nil {
		script = string(b)
	}
	h, err := argoHealth(script, u.Object)
	if err != nil {
		return fmt.Sprintf("%s: health.lua: %v", key(tc.obj), err)
	}
	var off []string
	if tc.reason != "" && reason != tc.reason {
		off = append(off, fmt.Sprintf("Ready reason %q, want %q", reason, tc.reason))
	}
	if res.Status != tc.kstat {
		off = append(off, fmt.Sprintf("kstatus %s (%s), want %s", res.Status, res.Message, tc.kstat))
	}
	if h.Status != tc.argo {
		off = append(off, fmt.Sprintf("Argo CD %s (%s), want %s", h.Status, h.Message, tc.argo))
	}
	if len(off) == 0 {
		return ""
	}
	return key(tc.obj) + ": " + strings.Join(off, "; ")
}

func orAny(reason string) string {
	if reason == "" {
		return "(any)"
	}
	return reason
}

func scriptPath(obj client.Object) string {
	root, _ := envtest.RepoRoot()
	return root + "/config/argocd/resource_customizations/mailroom.io/" + kindOf(obj) + "/health.lua"
}

func kindOf(obj client.Object) string {
	switch obj.(type) {
	case *v1alpha1.RelayPool:
		return "RelayPool"
	case *v1alpha1.SendingDomain:
		return "SendingDomain"
	case *v1alpha1.SMTPCredential:
		return "SMTPCredential"
	}
	return fmt.Sprintf("%T", obj)
}

func key(obj client.Object) string {
	return kindOf(obj) + " " + obj.GetNamespace() + "/" + obj.GetName()
}

func newOf(obj client.Object) client.Object {
	return obj.DeepCopyObject().(client.Object)
}

// toUnstructured is the object as kstatus and Argo CD read it: JSON, with
// apiVersion and kind.
func toUnstructured(obj client.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(v1alpha1.GroupVersion.String())
	u.SetKind(kindOf(obj))
	// Through JSON, as a client decodes what the API server sends.
	b, err := u.MarshalJSON()
	if err != nil {
		return nil, err
	}
	out := &unstructured.Unstructured{}
	return out, out.UnmarshalJSON(b)
}

func specOf(t *testing.T, obj client.Object) any {
	t.Helper()
	u, err := toUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	return u.Object["spec"]
}
