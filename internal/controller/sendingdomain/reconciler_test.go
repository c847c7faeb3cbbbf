package sendingdomain

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	externaldnsv1alpha1 "sigs.k8s.io/external-dns/apis/v1alpha1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller"
	"mailroom.io/mailroom/internal/controller/attachment"
	"mailroom.io/mailroom/internal/dkim"
	relaycfg "mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/relayconfig"
	"mailroom.io/mailroom/internal/testutil/bindtest"
	"mailroom.io/mailroom/internal/testutil/envtest"
	"mailroom.io/mailroom/internal/testutil/writecount"
)

// These tests drive the SendingDomain reconciler by calling Reconcile
// directly against a real API server, with a fake clock and a real BIND as
// the resolver. The test itself plays external-dns (publishEndpoint), so
// every step is deterministic; test/e2e runs the real external-dns.

type sdHarness struct {
	t      *testing.T
	ctx    context.Context
	c      client.Client // cached, as the manager's
	api    client.Reader // uncached
	r      *Reconciler
	clock  *clocktesting.FakeClock
	events *events.FakeRecorder
	writes *writecount.Counter
	bind   *bindtest.Server
	ns     string
	// published remembers which names publishEndpoint wrote, to remove
	// those that disappear from the DNSEndpoint.
	published map[string]bool
}

func TestReconciler(t *testing.T) {
	env, err := envtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })

	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Cache:                  controller.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{Client: mgr.GetClient(), Scheme: env.Scheme, MinVerifyBackoff: 5 * time.Second, QueryTimeout: 2 * time.Second}
	if err := r.SetupIndexes(context.Background(), mgr.GetFieldIndexer()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}

	nsCount := 0
	newHarness := func(t *testing.T) *sdHarness {
		h := &sdHarness{
			t: t, ctx: ctx, c: mgr.GetClient(), api: mgr.GetAPIReader(),
			clock:     clocktesting.NewFakeClock(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)),
			events:    events.NewFakeRecorder(100),
			bind:      bindtest.Start(t, "example.test"),
			published: map[string]bool{},
		}
		nsCount++
		h.ns = fmt.Sprintf("sd-%d", nsCount)
		// Each subtest gets its own reconciler state on the shared cache,
		// and its own write counter.
		var wc client.Client
		wc, h.writes = writecount.WrapClient(r.Client, r.Scheme)
		h.r = &Reconciler{Client: wc, APIReader: mgr.GetAPIReader(), Scheme: r.Scheme, MinVerifyBackoff: r.MinVerifyBackoff, QueryTimeout: r.QueryTimeout,
			Clock: h.clock, Recorder: h.events}
		h.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: h.ns}})
		h.create(&v1alpha1.RelayPool{
			ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "transactional"},
			Spec:       v1alpha1.RelayPoolSpec{Hostname: "relay.example.test", SendingIPs: []string{"192.0.2.10", "2001:db8::10"}},
		})
		return h
	}

	t.Run("a new domain gets a key, records, verification and Ready", func(t *testing.T) {
		h := newHarness(t)
		sd := h.createDomain("example-test", nil)

		h.reconcile(sd)
		sd = h.get(sd)
		secret := h.secret(sd)
		ring, err := dkim.ParseSecretData(secret.Data)
		if err != nil {
			t.Fatalf("the key Secret is not a keyring: %v", err)
		}
		if ring.Active.Selector != "mr-20261125" || sd.Status.DKIM.ActiveSelector != "mr-20261125" {
			t.Fatalf("selector %q, status %q; want mr-20261125 from the (fake) date", ring.Active.Selector, sd.Status.DKIM.ActiveSelector)
		}
		if _, ok := ring.Active.Signer.(ed25519.PrivateKey); !ok {
			t.Fatalf("key is %T, the spec asks for Ed25519", ring.Active.Signer)
		}
		if len(secret.OwnerReferences) != 0 {
			t.Fatal("the key Secret is owned by the SendingDomain; it must outlive it")
		}
		h.expectEvent(ReasonKeyCreated)

		ep := h.endpoint(sd)
		if !metav1.IsControlledBy(ep, sd) {
			t.Fatal("the DNSEndpoint is not owned by the SendingDomain")
		}
		var names []string
		for _, e := range ep.Spec.Endpoints {
			names = append(names, fmt.Sprintf("%s/%s/%d", e.DNSName, e.RecordType, e.RecordTTL))
		}
		if got := strings.Join(names, " "); got != "mr-20261125._domainkey.example.test/TXT/120 example.test/TXT/120 _dmarc.example.test/TXT/120" {
			t.Fatalf("endpoints %s", got)
		}
		if spf := ep.Spec.Endpoints[1].Targets[0]; spf != `"v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 ~all"` {
			t.Fatalf("SPF target %s", spf)
		}
		h.expectCondition(sd, v1alpha1.SendingDomainKeyReady, metav1.ConditionTrue, ReasonKeyReady)
		h.expectCondition(sd, v1alpha1.SendingDomainDNSPublished, metav1.ConditionTrue, ReasonPublished)
		// Nothing serves the records yet.
		c := h.expectCondition(sd, v1alpha1.SendingDomainDNSVerified, metav1.ConditionFalse, "DKIMRecordMissing")
		if !strings.Contains(c.Message, "mr-20261125._domainkey.example.test") {
			t.Fatalf("DNSVerified message %q does not name the record", c.Message)
		}
		h.expectCondition(sd, v1alpha1.ConditionReady, metav1.ConditionFalse, "DKIMRecordMissing")
		h.expectEvent(ReasonVerifyFailed)

		h.publishEndpoint(ep)
		// A retry before the backoff ends looks nothing up.
		res := h.reconcile(sd)
		if res.RequeueAfter <= 0 || res.RequeueAfter > 5*time.Second {
			t.Fatalf("requeue after %v, want the first backoff step", res.RequeueAfter)
		}
		h.expectCondition(h.get(sd), v1alpha1.SendingDomainDNSVerified, metav1.ConditionFalse, "DKIMRecordMissing")

		h.clock.Step(5 * time.Second)
		h.reconcile(sd)
		sd = h.get(sd)
		h.expectCondition(sd, v1alpha1.SendingDomainDNSVerified, metav1.ConditionTrue, "RecordsVerified")
		// Records resolve, but no relay signs with the key yet: not Ready.
		h.expectCondition(sd, v1alpha1.SendingDomainSigning, metav1.ConditionFalse, ReasonConfigPending)
		h.expectCondition(sd, v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonConfigPending)
		h.relaysSign(sd)
		h.reconcile(sd)
		sd = h.get(sd)
		h.expectCondition(sd, v1alpha1.SendingDomainSigning, metav1.ConditionTrue, ReasonSigning)
		h.expectCondition(sd, v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonReady)
		h.expectEvent(ReasonVerified)
		for _, rec := range sd.Status.Records {
			if !rec.Verified || rec.Type != "TXT" {
				t.Errorf("record %+v not verified", rec)
			}
		}
		for _, c := range sd.Status.Conditions {
			if c.ObservedGeneration != sd.Generation {
				t.Errorf("condition %s observed generation %d, object is at %d", c.Type, c.ObservedGeneration, sd.Generation)
			}
		}
		if sd.Status.ObservedGeneration != sd.Generation {
			t.Errorf("status.observedGeneration %d, want %d", sd.Status.ObservedGeneration, sd.Generation)
		}

		// Reconciling the unchanged domain, also when a check is due and
		// finds the same, writes nothing: resyncs at the same instant and
		// after several verify intervals.
		before := h.versions(sd)
		h.writes.Reset()
		h.reconcile(sd)
		for range 3 {
			h.clock.Step(time.Hour)
			h.reconcile(sd)
			h.reconcile(sd)
		}
		if n := h.writes.Total(); n != 0 {
			t.Fatalf("%d writes to an unchanged domain:\n%s", n, h.writes)
		}
		if after := h.versions(sd); !maps.Equal(before, after) {
			t.Fatalf("an unchanged domain was written: %v -> %v", before, after)
		}
		h.expectNoEvent()

		// A record changed by hand turns DNSVerified false, naming it.
		h.bind.SetTXT(t, "_dmarc", "v=DMARC1; p=reject")
		h.clock.Step(time.Hour)
		h.reconcile(sd)
		c = h.expectCondition(h.get(sd), v1alpha1.SendingDomainDNSVerified, metav1.ConditionFalse, "DMARCRecordMismatch")
		if !strings.Contains(c.Message, "_dmarc.example.test") || !strings.Contains(c.Message, "p=reject, want none") {
			t.Fatalf("message %q", c.Message)
		}
		h.expectEvent(ReasonVerifyFailed)
	})

	t.Run("verification follows external-dns reading the DNSEndpoint, not the backoff", func(t *testing.T) {
		h := newHarness(t)
		sd := h.createDomain("example-test", nil)
		h.reconcile(sd)
		h.expectCondition(h.get(sd), v1alpha1.SendingDomainDNSVerified, metav1.ConditionFalse, "DKIMRecordMissing")
		// A streak of failures long enough for the backoff to have grown.
		for range 4 {
			h.clock.Step(2 * time.Minute)
			h.reconcile(sd)
		}
		ep := h.endpoint(sd)
		h.publishEndpoint(ep)
		if res := h.reconcile(sd); res.RequeueAfter <= 5*time.Second {
			t.Fatalf("requeue after %v; the test wants a grown backoff first", res.RequeueAfter)
		}
		h.expectCondition(h.get(sd), v1alpha1.SendingDomainDNSVerified, metav1.ConditionFalse, "DKIMRecordMissing")

		// external-dns reads the DNSEndpoint (and writes the records just
		// after): the check is due at once, whatever the backoff said.
		h.observeEndpoint(ep)
		h.relaysSign(sd)
		h.reconcile(sd)
		sd = h.get(sd)
		h.expectCondition(sd, v1alpha1.SendingDomainDNSVerified, metav1.ConditionTrue, "RecordsVerified")
		h.expectCondition(sd, v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonReady)
		if c := meta.FindStatusCondition(sd.Status.Conditions, "Reconciling"); c != nil {
			t.Fatalf("Reconciling %s on a Ready domain", c.Status)
		}
	})

	t.Run("while external-dns publishes, failed checks retry in step with it", func(t *testing.T) {
		h := newHarness(t)
		sd := h.createDomain("example-test", nil)
		h.reconcile(sd)
		// external-dns has read the records but not written them yet.
		h.observeEndpoint(h.endpoint(sd))
		res := h.reconcile(sd)
		for i := range 5 {
			if res.RequeueAfter != 5*time.Second {
				t.Fatalf("retry %d after %v, want 5s while external-dns publishes", i, res.RequeueAfter)
			}
			h.clock.Step(res.RequeueAfter)
			res = h.reconcile(sd)
		}
		sd = h.get(sd)
		h.expectCondition(sd, v1alpha1.ConditionReady, metav1.ConditionFalse, "DKIMRecordMissing")
		// Waiting on DNS is progress, not a dead end.
		h.expectCondition(sd, "Reconciling", metav1.ConditionTrue, "DKIMRecordMissing")
		// Later, a tenth of the time since external-dns read the records.
		h.clock.Step(time.Minute)
		if res := h.reconcile(sd); res.RequeueAfter != 8500*time.Millisecond {
			t.Fatalf("retry after %v 85s after external-dns read the records, want 8.5s", res.RequeueAfter)
		}
	})

	t.Run("a key Secret made outside mailroom is read live and adopted", func(t *testing.T) {
		h := newHarness(t)
		key, err := dkim.Generate(dkim.Ed25519, nil)
		if err != nil {
			t.Fatal(err)
		}
		data, err := dkim.NewKeyring("example.test", "handmade", key, h.clock.Now()).SecretData()
		if err != nil {
			t.Fatal(err)
		}
		// No labels: the manager's cache does not hold it.
		if err := h.c.Create(h.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "example-test-dkim"}, Data: data}); err != nil {
			t.Fatal(err)
		}
		sd := h.createDomain("example-test", nil)
		h.reconcile(sd)
		sd = h.get(sd)
		if sd.Status.DKIM.ActiveSelector != "handmade" {
			t.Fatalf("signs with %q, want the adopted key", sd.Status.DKIM.ActiveSelector)
		}
		h.expectEvent(ReasonKeyAdopted)
		secret := h.secret(sd)
		if secret.Type != corev1.SecretTypeOpaque || secret.Labels["app.kubernetes.io/managed-by"] != "mailroom" {
			t.Fatalf("adopted Secret: type %s, labels %v; want its own type and mailroom's label", secret.Type, secret.Labels)
		}
	})

	t.Run("a resolver that does not answer is a reason, retried with backoff", func(t *testing.T) {
		h := newHarness(t)
		sd := h.createDomain("example-test", func(sd *v1alpha1.SendingDomain) {
			// TEST-NET-1 on a loopback-only machine: nothing answers.
			sd.Spec.DNS.Verify.Resolvers = []string{"127.0.0.1:9"}
		})
		res := h.reconcile(sd)
		h.expectCondition(h.get(sd), v1alpha1.SendingDomainDNSVerified, metav1.ConditionFalse, "ResolverUnreachable")
		var delays []time.Duration
		for range 5 {
			delays = append(delays, res.RequeueAfter)
			h.clock.Step(res.RequeueAfter)
			res = h.reconcile(sd)
		}
		for i := 1; i < len(delays); i++ {
			if delays[i] < delays[i-1] || delays[i] > time.Minute {
				t.Fatalf("retry delays %v do not back off up to the interval", delays)
			}
		}
		if delays[len(delays)-1] < 2*delays[0] {
			t.Fatalf("retry delays %v do not grow", delays)
		}
	})

	t.Run("the younger of two domains claiming a name for one pool reports a conflict", func(t *testing.T) {
		h := newHarness(t)
		older := h.createDomain("first", nil)
		h.reconcile(older)
		younger := h.createDomain("second", nil)
		h.waitFor(func() bool {
			var list v1alpha1.SendingDomainList
			_ = h.c.List(h.ctx, &list, client.InNamespace(h.ns))
			return len(list.Items) == 2
		})
		h.reconcile(younger)
		younger = h.get(younger)
		c := h.expectCondition(younger, v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonConflict)
		if !strings.Contains(c.Message, "first") {
			t.Fatalf("message %q does not name the older domain", c.Message)
		}
		if err := h.api.Get(h.ctx, types.NamespacedName{Namespace: h.ns, Name: "second-dkim"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
			t.Fatalf("the younger domain made a key: %v", err)
		}
		if err := h.api.Get(h.ctx, types.NamespacedName{Namespace: h.ns, Name: "second"}, &externaldnsv1alpha1.DNSEndpoint{}); !apierrors.IsNotFound(err) {
			t.Fatalf("the younger domain published records: %v", err)
		}
		h.reconcile(older)
		h.expectCondition(h.get(older), v1alpha1.SendingDomainKeyReady, metav1.ConditionTrue, ReasonKeyReady)
	})

	t.Run("a broken key Secret is reported, kept, and replaced only on request", func(t *testing.T) {
		h := newHarness(t)
		sd := h.createDomain("example-test", nil)
		h.reconcile(sd)
		secret := h.secret(sd)
		secret.Data[dkim.SecretPrivateKey] = []byte("not a key")
		if err := h.c.Update(h.ctx, secret); err != nil {
			t.Fatal(err)
		}
		h.waitForVersion(secret)
		h.drainEvents()

		h.reconcile(sd)
		c := h.expectCondition(h.get(sd), v1alpha1.SendingDomainKeyReady, metav1.ConditionFalse, ReasonKeyInvalid)
		if !strings.Contains(c.Message, dkim.SecretPrivateKey) || !strings.Contains(c.Message, v1alpha1.AnnotationRotateDKIM) {
			t.Fatalf("message %q should name the broken field and the way out", c.Message)
		}
		h.expectCondition(h.get(sd), v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonKeyInvalid)
		h.expectEvent(ReasonKeyInvalid)
		if got := h.secret(sd); string(got.Data[dkim.SecretPrivateKey]) != "not a key" {
			t.Fatal("the broken key was overwritten without a request")
		}
		// Published records stay: the relay may still hold the old key.
		if len(h.endpoint(sd).Spec.Endpoints) != 3 {
			t.Fatal("records were withdrawn because the Secret broke")
		}

		sd = h.annotate(sd, "2026-11-25")
		h.reconcile(sd)
		sd = h.get(sd)
		h.expectCondition(sd, v1alpha1.SendingDomainKeyReady, metav1.ConditionTrue, ReasonKeyReady)
		h.expectEvent(ReasonKeyReplaced)
		ring, err := dkim.ParseSecretData(h.secret(sd).Data)
		if err != nil {
			t.Fatal(err)
		}
		if ring.Active.Selector == "mr-20261125" {
			t.Fatal("the replacement key reuses the broken key's selector")
		}
		// The request is remembered on the Secret: it is acted on once.
		h.reconcile(sd)
		if again, _ := dkim.ParseSecretData(h.secret(sd).Data); again.Active.Selector != ring.Active.Selector {
			t.Fatal("the same annotation replaced the key twice")
		}
	})

	t.Run("a key that does not match the spec keeps signing until rotated on request", func(t *testing.T) {
		h := newHarness(t)
		sd := h.createDomain("example-test", nil)
		h.reconcile(sd)
		h.publishEndpoint(h.endpoint(sd))
		h.clock.Step(5 * time.Second)
		h.reconcile(sd)
		first := h.get(sd).Status.DKIM.ActiveSelector

		sd = h.get(sd)
		sd.Spec.DKIM.Algorithm = v1alpha1.DKIMAlgorithmRSA2048
		if err := h.c.Update(h.ctx, sd); err != nil {
			t.Fatal(err)
		}
		h.waitForVersion(sd)
		h.reconcile(sd)
		h.expectCondition(h.get(sd), v1alpha1.SendingDomainKeyReady, metav1.ConditionFalse, ReasonKeyMismatch)
		h.expectEvent(ReasonKeyMismatch)
		if h.get(sd).Status.DKIM.ActiveSelector != first {
			t.Fatal("the key was replaced silently")
		}

		// The request starts a rotation: publish the next key, verify, switch.
		sd = h.annotate(h.get(sd), "now")
		h.reconcile(sd)
		sd = h.get(sd)
		next := sd.Status.DKIM.NextSelector
		if next == "" || sd.Status.DKIM.ActiveSelector != first {
			t.Fatalf("dkim status %+v, want the old key active and a next key", sd.Status.DKIM)
		}
		h.expectEvent(ReasonNextKeyCreated)
		h.publishEndpoint(h.endpoint(sd))
		h.clock.Step(5 * time.Second)
		h.reconcile(sd) // verifies the next key
		h.reconcile(sd) // switches
		sd = h.get(sd)
		if sd.Status.DKIM.ActiveSelector != next || !strings.Contains(strings.Join(sd.Status.DKIM.RetiringSelectors, ","), first) {
			t.Fatalf("dkim status %+v, want %s active and %s retiring", sd.Status.DKIM, next, first)
		}
		h.expectEvent(ReasonKeyActivated)
		ring, _ := dkim.ParseSecretData(h.secret(sd).Data)
		if alg, _ := ring.Active.Algorithm(); alg != dkim.RSA2048 {
			t.Fatalf("new key is %s", alg)
		}
		h.expectCondition(sd, v1alpha1.SendingDomainKeyReady, metav1.ConditionTrue, ReasonKeyReady)
	})

	t.Run("scheduled rotation publishes, verifies, switches and retires without a gap", func(t *testing.T) {
		// The shortest overlap the CRD admits; the next key is published
		// lead before the switch, and the one after it long after the
		// retirement.
		const interval, overlap = 480 * time.Hour, 120 * time.Hour
		const lead = min(overlap, interval/2)
		h := newHarness(t)
		sd := h.createDomain("example-test", func(sd *v1alpha1.SendingDomain) {
			sd.Spec.DKIM.Rotation = &v1alpha1.DKIMRotation{Interval: &metav1.Duration{Duration: interval}, Overlap: &metav1.Duration{Duration: overlap}}
		})
		h.reconcile(sd)
		sd = h.get(sd)
		first := sd.Status.DKIM.ActiveSelector
		if want := h.clock.Now().Add(interval); sd.Status.DKIM.NextRotation == nil || !sd.Status.DKIM.NextRotation.Time.Equal(want) {
			t.Fatalf("nextRotation %v, want %v", sd.Status.DKIM.NextRotation, want)
		}

		var seen []string // every (active, published) pair observed
		step := func(d time.Duration) {
			h.clock.Step(d)
			// A second pass at the same instant acts on what the first
			// verified, as the requeue it asks for would.
			h.reconcile(sd)
			h.reconcile(sd)
			cur := h.get(sd)
			ep := h.endpoint(cur)
			h.publishEndpoint(ep)
			active := "mr-" + strings.TrimPrefix(cur.Status.DKIM.ActiveSelector, "mr-")
			found := false
			for _, e := range ep.Spec.Endpoints {
				if e.DNSName == active+"._domainkey.example.test" {
					found = true
				}
			}
			if !found {
				t.Fatalf("at %v the active key %s is not in the DNSEndpoint", h.clock.Now(), active)
			}
			seen = append(seen, fmt.Sprintf("%s|%s|%v", cur.Status.DKIM.ActiveSelector, cur.Status.DKIM.NextSelector, cur.Status.DKIM.RetiringSelectors))
		}
		step(interval - lead - time.Minute) // before the lead: nothing
		step(time.Minute)                   // the next key appears
		if h.get(sd).Status.DKIM.NextSelector == "" {
			t.Fatalf("no next key 10m before the switch: %v", seen)
		}
		step(5 * time.Second) // verified
		step(lead)
		if got := h.get(sd).Status.DKIM; got.ActiveSelector == first || len(got.RetiringSelectors) != 1 {
			t.Fatalf("at the end of the interval: %+v (%v)", got, seen)
		}
		step(overlap - time.Minute) // overlap not over
		if got := h.get(sd).Status.DKIM; len(got.RetiringSelectors) != 1 {
			t.Fatalf("retired key withdrawn before the overlap ended: %+v", got)
		}
		step(time.Minute)
		if got := h.get(sd).Status.DKIM; len(got.RetiringSelectors) != 0 {
			t.Fatalf("retired key still published after the overlap: %+v", got)
		}
		if eps := h.endpoint(sd).Spec.Endpoints; len(eps) != 3 {
			t.Fatalf("%d endpoints after retiring, want 3: %v (%+v) %v", len(eps), eps, h.get(sd).Status.DKIM, seen)
		}
		h.expectEvent(ReasonKeyWithdrawn)
	})

	t.Run("a re-created domain adopts its key", func(t *testing.T) {
		h := newHarness(t)
		sd := h.createDomain("example-test", nil)
		h.reconcile(sd)
		selector := h.get(sd).Status.DKIM.ActiveSelector
		keyBefore := h.secret(sd).Data[dkim.SecretPrivateKey]
		if err := h.c.Delete(h.ctx, sd); err != nil {
			t.Fatal(err)
		}
		h.waitFor(func() bool {
			return apierrors.IsNotFound(h.c.Get(h.ctx, client.ObjectKeyFromObject(sd), &v1alpha1.SendingDomain{}))
		})
		h.reconcile(sd) // the deleted domain: nothing to do
		// No garbage collector runs under envtest; the owner reference is
		// what removes the DNSEndpoint in a cluster (test/e2e checks that).
		_ = h.c.Delete(h.ctx, &externaldnsv1alpha1.DNSEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: sd.Name}})
		h.waitFor(func() bool {
			return apierrors.IsNotFound(h.c.Get(h.ctx, client.ObjectKeyFromObject(sd), &externaldnsv1alpha1.DNSEndpoint{}))
		})
		if string(h.secret(sd).Data[dkim.SecretPrivateKey]) != string(keyBefore) {
			t.Fatal("the key Secret did not survive the domain")
		}
		h.drainEvents()

		again := h.createDomain("example-test", nil)
		h.reconcile(again)
		if got := h.get(again).Status.DKIM.ActiveSelector; got != selector {
			t.Fatalf("re-created domain signs with %s, want the adopted %s", got, selector)
		}
		if string(h.secret(again).Data[dkim.SecretPrivateKey]) != string(keyBefore) {
			t.Fatal("a new key was made instead of adopting the existing one")
		}
		h.expectEvent(ReasonKeyAdopted)
	})

	t.Run("SPF includes past the lookup limit raise a warning", func(t *testing.T) {
		h := newHarness(t)
		h.bind.SetTXT(t, "big", "v=spf1 a mx ptr exists:a.example.test exists:b.example.test exists:c.example.test include:more.example.test -all")
		h.bind.SetTXT(t, "more", "v=spf1 a mx a:x.example.test a:y.example.test ~all")
		sd := h.createDomain("example-test", func(sd *v1alpha1.SendingDomain) {
			sd.Spec.SPF.Include = []string{"big.example.test"}
		})
		h.reconcile(sd)
		c := h.expectCondition(h.get(sd), v1alpha1.SendingDomainSPFLookupLimit, metav1.ConditionTrue, ReasonLookupsExceeded)
		if !strings.Contains(c.Message, "more than 10") {
			t.Fatalf("message %q", c.Message)
		}
		h.expectEvent(ReasonLookupsExceeded)
	})

	t.Run("a missing pool is reported and nothing is published", func(t *testing.T) {
		h := newHarness(t)
		sd := h.createDomain("example-test", func(sd *v1alpha1.SendingDomain) { sd.Spec.PoolRef.Name = "nope" })
		h.reconcile(sd)
		h.expectCondition(h.get(sd), v1alpha1.SendingDomainDNSPublished, metav1.ConditionFalse, ReasonPoolNotFound)
		h.expectCondition(h.get(sd), v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonPoolNotFound)
	})
}

// relaysSign plays the RelayPool controller and its relays for sd: the
// pool's shard holds the domain's active key at revision 7, and the
// pool's ready relays report that revision.
func (h *sdHarness) relaysSign(sd *v1alpha1.SendingDomain) {
	h.t.Helper()
	sd = h.get(sd)
	pool := &v1alpha1.RelayPool{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Namespace: h.ns, Name: "transactional"}, pool); err != nil {
		h.t.Fatal(err)
	}
	i := relayconfig.ShardOf(sd.Spec.Domain)
	shard, err := json.Marshal(relaycfg.Shard{Domains: []relaycfg.Domain{{Name: sd.Spec.Domain, Keys: []relaycfg.DKIMKey{{
		Selector: sd.Status.DKIM.ActiveSelector, Algorithm: "Ed25519", PrivateKeyFile: "/etc/mailroom/config/k.pem"}}}}})
	if err != nil {
		h.t.Fatal(err)
	}
	h.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: relayconfig.ShardSecretName(pool.Name, i),
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "mailroom"},
			Annotations: map[string]string{attachment.AnnotationConfigRevision: "7"}},
		Data: map[string][]byte{relayconfig.ShardFile(i): shard},
	})
	pool.Status.ReadyReplicas, pool.Status.ConfigRevision, pool.Status.AppliedRevision = 2, 7, 7
	if err := h.c.Status().Update(h.ctx, pool); err != nil {
		h.t.Fatal(err)
	}
	h.waitForVersion(pool)
}

func (h *sdHarness) create(o client.Object) {
	h.t.Helper()
	if err := h.c.Create(h.ctx, o); err != nil {
		h.t.Fatal(err)
	}
	h.waitForVersion(o)
}

func (h *sdHarness) createDomain(name string, edit func(*v1alpha1.SendingDomain)) *v1alpha1.SendingDomain {
	sd := &v1alpha1.SendingDomain{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: name},
		Spec: v1alpha1.SendingDomainSpec{
			Domain:  "example.test",
			PoolRef: v1alpha1.PoolReference{Name: "transactional"},
			DKIM:    v1alpha1.DKIMSpec{Algorithm: v1alpha1.DKIMAlgorithmEd25519},
			DNS: v1alpha1.DNSSpec{
				TTL:    120,
				Verify: v1alpha1.DNSVerifySpec{Resolvers: []string{h.bind.Addr}, Interval: &metav1.Duration{Duration: time.Minute}},
			},
		},
	}
	if edit != nil {
		edit(sd)
	}
	h.create(sd)
	return sd
}

// reconcile runs one reconcile and waits until the cache has seen what it
// wrote, so the next step reads its own writes.
func (h *sdHarness) reconcile(sd *v1alpha1.SendingDomain) ctrl.Result {
	h.t.Helper()
	res, err := h.r.Reconcile(h.ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(sd)})
	if err != nil {
		h.t.Fatalf("Reconcile: %v", err)
	}
	for _, o := range []client.Object{
		&v1alpha1.SendingDomain{ObjectMeta: metav1.ObjectMeta{Namespace: sd.Namespace, Name: sd.Name}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: sd.Namespace, Name: sd.Name + "-dkim"}},
		&externaldnsv1alpha1.DNSEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: sd.Namespace, Name: sd.Name}},
	} {
		if err := h.api.Get(h.ctx, client.ObjectKeyFromObject(o), o); err == nil {
			h.waitForVersion(o)
		}
	}
	return res
}

// waitForVersion waits until the cache holds o at its resourceVersion.
func (h *sdHarness) waitForVersion(o client.Object) {
	h.t.Helper()
	want := o.GetResourceVersion()
	cached := o.DeepCopyObject().(client.Object)
	h.waitFor(func() bool {
		return h.c.Get(h.ctx, client.ObjectKeyFromObject(o), cached) == nil && cached.GetResourceVersion() == want
	})
}

func (h *sdHarness) waitFor(cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatal("condition not reached within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *sdHarness) get(sd *v1alpha1.SendingDomain) *v1alpha1.SendingDomain {
	h.t.Helper()
	var out v1alpha1.SendingDomain
	if err := h.api.Get(h.ctx, client.ObjectKeyFromObject(sd), &out); err != nil {
		h.t.Fatal(err)
	}
	return &out
}

func (h *sdHarness) secret(sd *v1alpha1.SendingDomain) *corev1.Secret {
	h.t.Helper()
	var s corev1.Secret
	if err := h.api.Get(h.ctx, types.NamespacedName{Namespace: sd.Namespace, Name: sd.Name + "-dkim"}, &s); err != nil {
		h.t.Fatal(err)
	}
	return &s
}

func (h *sdHarness) endpoint(sd *v1alpha1.SendingDomain) *externaldnsv1alpha1.DNSEndpoint {
	h.t.Helper()
	var ep externaldnsv1alpha1.DNSEndpoint
	if err := h.api.Get(h.ctx, client.ObjectKeyFromObject(sd), &ep); err != nil {
		h.t.Fatal(err)
	}
	return &ep
}

func (h *sdHarness) annotate(sd *v1alpha1.SendingDomain, value string) *v1alpha1.SendingDomain {
	h.t.Helper()
	patch := client.MergeFrom(sd.DeepCopy())
	if sd.Annotations == nil {
		sd.Annotations = map[string]string{}
	}
	sd.Annotations[v1alpha1.AnnotationRotateDKIM] = value
	if err := h.c.Patch(h.ctx, sd, patch); err != nil {
		h.t.Fatal(err)
	}
	h.waitForVersion(sd)
	return sd
}

// versions are the resourceVersions of everything the reconciler writes.
func (h *sdHarness) versions(sd *v1alpha1.SendingDomain) map[string]string {
	return map[string]string{
		"SendingDomain": h.get(sd).ResourceVersion,
		"Secret":        h.secret(sd).ResourceVersion,
		"DNSEndpoint":   h.endpoint(sd).ResourceVersion,
	}
}

// observeEndpoint does what external-dns does when it reads a DNSEndpoint:
// it sets status.observedGeneration.
func (h *sdHarness) observeEndpoint(ep *externaldnsv1alpha1.DNSEndpoint) {
	h.t.Helper()
	ep.Status.ObservedGeneration = ep.Generation
	if err := h.c.Status().Update(h.ctx, ep); err != nil {
		h.t.Fatal(err)
	}
	h.waitForVersion(ep)
}

// publishEndpoint does what external-dns does with the DNSEndpoint: each
// target is parsed as "<name> <ttl> TXT <target>" and the RRset replaced;
// names no longer listed are removed.
func (h *sdHarness) publishEndpoint(ep *externaldnsv1alpha1.DNSEndpoint) {
	h.t.Helper()
	now := map[string]bool{}
	for _, e := range ep.Spec.Endpoints {
		now[e.DNSName] = true
		h.bind.Delete(h.t, e.DNSName+".", dns.TypeTXT)
		for _, target := range e.Targets {
			h.bind.Add(h.t, fmt.Sprintf("%s. %d IN TXT %s", e.DNSName, e.RecordTTL, target))
		}
	}
	for name := range h.published {
		if !now[name] {
			h.bind.Delete(h.t, name+".", dns.TypeTXT)
		}
	}
	h.published = now
}

func (h *sdHarness) expectCondition(sd *v1alpha1.SendingDomain, typ string, status metav1.ConditionStatus, reason string) metav1.Condition {
	h.t.Helper()
	c := meta.FindStatusCondition(sd.Status.Conditions, typ)
	if c == nil {
		h.t.Fatalf("no %s condition in %+v", typ, sd.Status.Conditions)
	}
	if c.Status != status || c.Reason != reason {
		h.t.Fatalf("%s = %s/%s (%s), want %s/%s", typ, c.Status, c.Reason, c.Message, status, reason)
	}
	return *c
}

// expectEvent consumes recorded Events up to one with reason.
func (h *sdHarness) expectEvent(reason string) {
	h.t.Helper()
	var seen []string
	for {
		select {
		case e := <-h.events.Events:
			if strings.Contains(e, " "+reason+" ") {
				return
			}
			seen = append(seen, e)
		default:
			h.t.Fatalf("no %s Event; saw %q", reason, seen)
		}
	}
}

func (h *sdHarness) expectNoEvent() {
	h.t.Helper()
	select {
	case e := <-h.events.Events:
		h.t.Fatalf("unexpected Event %q", e)
	default:
	}
}

func (h *sdHarness) drainEvents() {
	for {
		select {
		case <-h.events.Events:
		default:
			return
		}
	}
}
