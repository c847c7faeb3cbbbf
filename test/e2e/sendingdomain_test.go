package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	externaldnsv1alpha1 "sigs.k8s.io/external-dns/apis/v1alpha1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller"
	"mailroom.io/mailroom/internal/controller/attachment"
	"mailroom.io/mailroom/internal/controller/relaypool"
	"mailroom.io/mailroom/internal/controller/sendingdomain"
	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/testutil/bindtest"
	"mailroom.io/mailroom/internal/testutil/envtest"
	"mailroom.io/mailroom/internal/testutil/relayhost"
)

// TestSendingDomainE2E runs the SendingDomain reconciler in a manager
// against a real kube-apiserver, with external-dns publishing to BIND over
// RFC 2136 and the records checked in BIND itself.
func TestSendingDomainE2E(t *testing.T) {
	env, err := envtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	root, err := envtest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bind := bindtest.Start(t, "example.test")
	startGarbageCollector(t, root, env.Config)
	edns := startExternalDNS(t, root, env.Config, bind, 3*time.Second)

	managerLog := &syncBuffer{}
	logger := logr.FromSlogHandler(slog.NewTextHandler(managerLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// controller-runtime's global logger, for the parts that do not take the
	// manager's.
	ctrl.SetLogger(logger)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Cache:                  controller.CacheOptions(),
		Logger:                 logger,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	// Real time, which the rotation test moves forward: the CRD admits no
	// schedule short enough to wait for.
	clock := &skewedClock{}
	r := &sendingdomain.Reconciler{
		Client: mgr.GetClient(), Scheme: mgr.GetScheme(),
		MinVerifyBackoff: time.Second, QueryTimeout: 2 * time.Second,
		Clock: clock,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	// The pool's controller and one real relay on its rendered
	// configuration: a domain is Ready only once the relays sign with its
	// key.
	const ns = "mail"
	relay := relayhost.New(t, env.Client, &v1alpha1.RelayPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "transactional"}})
	if err := attachment.SetupIndexes(context.Background(), mgr.GetFieldIndexer()); err != nil {
		t.Fatal(err)
	}
	if err := (&relaypool.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(),
		RelayImage: "localhost/mailroom:test", Relays: relay}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	managerDone := make(chan error, 1)
	go func() { managerDone <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-managerDone; err != nil {
			t.Errorf("manager: %v", err)
		}
		if t.Failed() {
			t.Logf("manager log (tail):\n%s", tail(managerLog.String(), 80))
		}
	})

	c := env.Client
	mustCreate(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	mustCreate(t, c, &v1alpha1.RelayPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "transactional"},
		Spec:       v1alpha1.RelayPoolSpec{Hostname: "relay.example.test", SendingIPs: []string{"192.0.2.25", "2001:db8::25"}},
	})
	relay.Start(ctx, 2*time.Minute)
	sd := &v1alpha1.SendingDomain{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "example-test"},
		Spec: v1alpha1.SendingDomainSpec{
			Domain:  "example.test",
			PoolRef: v1alpha1.PoolReference{Name: "transactional"},
			DKIM:    v1alpha1.DKIMSpec{Algorithm: v1alpha1.DKIMAlgorithmRSA2048},
			SPF:     v1alpha1.SPFSpec{Include: []string{"_spf.partner.example.test"}},
			DMARC:   v1alpha1.DMARCSpec{Policy: v1alpha1.DMARCPolicyQuarantine, AggregateReportsTo: []string{"mailto:dmarc@example.test"}},
			DNS: v1alpha1.DNSSpec{
				TTL:    60,
				Verify: v1alpha1.DNSVerifySpec{Resolvers: []string{bind.Addr}, Interval: &metav1.Duration{Duration: 2 * time.Second}},
			},
		},
	}
	// The partner's SPF record the domain includes.
	bind.SetTXT(t, "_spf.partner", "v=spf1 ip4:198.51.100.0/24 -all")

	var selector string
	t.Run("the three records are served by BIND, verified, and the domain is Ready", func(t *testing.T) {
		mustCreate(t, c, sd)
		got := waitForCondition(t, c, sd, v1alpha1.ConditionReady, metav1.ConditionTrue, 3*time.Minute)
		selector = got.Status.DKIM.ActiveSelector

		var secret corev1.Secret
		if err := c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "example-test-dkim"}, &secret); err != nil {
			t.Fatal(err)
		}
		ring, err := dkim.ParseSecretData(secret.Data)
		if err != nil {
			t.Fatal(err)
		}
		dkimTXT := bind.LookupTXT(t, selector+"._domainkey")
		if len(dkimTXT) != 1 || len(dkimTXT[0]) < 2 {
			t.Fatalf("DKIM record for %s: %q, want one record of several strings (a 2048-bit key is longer than 255 bytes)", selector, dkimTXT)
		}
		want, _ := ring.Active.Record()
		if joined := strings.Join(dkimTXT[0], ""); joined != want {
			t.Fatalf("BIND serves\n%s\nwant\n%s", joined, want)
		}
		if spf := bind.LookupTXT(t, "@"); !slices.ContainsFunc(spf, func(s []string) bool {
			return strings.Join(s, "") == "v=spf1 ip4:192.0.2.25 ip6:2001:db8::25 include:_spf.partner.example.test ~all"
		}) {
			t.Fatalf("apex TXT %q lacks the SPF record", spf)
		}
		if dmarc := bind.LookupTXT(t, "_dmarc"); len(dmarc) != 1 || strings.Join(dmarc[0], "") != "v=DMARC1; p=quarantine; pct=100; rua=mailto:dmarc@example.test; adkim=r; aspf=r" {
			t.Fatalf("DMARC %q", dmarc)
		}
		for _, rec := range got.Status.Records {
			if !rec.Verified {
				t.Errorf("status record %s not verified: %s", rec.Name, rec.Reason)
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("external-dns and the operator reach a steady state", func(t *testing.T) {
		serial := soaSerial(t, bind)
		before := versionsOf(t, c, ns, "example-test")
		start := len(edns.log.String())
		// Three full cycles after this point, with verification running
		// every two seconds meanwhile.
		waitFor(t, 2*time.Minute, "three external-dns cycles", func() bool {
			return upToDateCycles(edns.log.String()[start:]) >= 3
		})
		if changes := changeLines(edns.log.String()[start:]); len(changes) > 0 {
			t.Fatalf("external-dns kept writing:\n%s", strings.Join(changes, "\n"))
		}
		if now := soaSerial(t, bind); now != serial {
			t.Fatalf("zone serial moved from %d to %d: something rewrote records", serial, now)
		}
		if after := versionsOf(t, c, ns, "example-test"); !slices.Equal(before, after) {
			t.Fatalf("the operator wrote to an unchanged domain: resourceVersions %v -> %v", before, after)
		}
	})

	t.Run("a record changed by hand turns DNSVerified false, naming it", func(t *testing.T) {
		// external-dns would put the record back within a cycle; hold it
		// off so the operator's check is what is tested.
		edns.pause()
		bind.SetTXT(t, "_dmarc", "v=DMARC1; p=none")
		got := waitForCondition(t, c, sd, v1alpha1.SendingDomainDNSVerified, metav1.ConditionFalse, time.Minute)
		cond := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.SendingDomainDNSVerified)
		if cond.Reason != "DMARCRecordMismatch" || !strings.Contains(cond.Message, "_dmarc.example.test") || !strings.Contains(cond.Message, "p=none, want quarantine") {
			t.Fatalf("DNSVerified %s: %s", cond.Reason, cond.Message)
		}
		if ready := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady); ready.Status != metav1.ConditionFalse {
			t.Fatalf("Ready stayed %s", ready.Status)
		}
		// external-dns repairs it, and verification sees that.
		edns.resume(t)
		waitForCondition(t, c, sd, v1alpha1.SendingDomainDNSVerified, metav1.ConditionTrue, 2*time.Minute)
	})

	t.Run("rotation goes publish-next, verify, switch, retire, visible in BIND", func(t *testing.T) {
		// The shortest overlap the CRD admits; the operator's clock jumps
		// to each step of the schedule, and a touched annotation wakes the
		// domain (its requeue was computed in the old time).
		const interval, overlap = 480 * time.Hour, 120 * time.Hour
		const lead = min(overlap, interval/2)
		rot := &v1alpha1.SendingDomain{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "rot"},
			Spec: v1alpha1.SendingDomainSpec{
				Domain:  "rot.example.test",
				PoolRef: v1alpha1.PoolReference{Name: "transactional"},
				DKIM: v1alpha1.DKIMSpec{
					Algorithm: v1alpha1.DKIMAlgorithmEd25519,
					Rotation:  &v1alpha1.DKIMRotation{Interval: &metav1.Duration{Duration: interval}, Overlap: &metav1.Duration{Duration: overlap}},
				},
				DNS: v1alpha1.DNSSpec{TTL: 30, Verify: v1alpha1.DNSVerifySpec{Resolvers: []string{bind.Addr}, Interval: &metav1.Duration{Duration: 2 * time.Second}}},
			},
		}
		mustCreate(t, c, rot)
		first := waitForCondition(t, c, rot, v1alpha1.ConditionReady, metav1.ConditionTrue, 2*time.Minute).Status.DKIM.ActiveSelector
		served := func(sel string) bool { return len(bind.LookupTXT(t, sel+"._domainkey.rot")) == 1 }
		pokes := 0
		jump := func(d time.Duration) {
			clock.add(d)
			pokes++
			patch := client.MergeFrom(rot.DeepCopy())
			if rot.Annotations == nil {
				rot.Annotations = map[string]string{}
			}
			rot.Annotations["e2e.mailroom.io/poke"] = fmt.Sprint(pokes)
			if err := c.Patch(context.Background(), rot, patch); err != nil {
				t.Fatal(err)
			}
		}
		// until polls the domain; the key that signs must always be served.
		until := func(phase string, done func(v1alpha1.DKIMStatus) bool) v1alpha1.DKIMStatus {
			var st v1alpha1.DKIMStatus
			waitFor(t, 2*time.Minute, phase, func() bool {
				var cur v1alpha1.SendingDomain
				if err := c.Get(context.Background(), client.ObjectKeyFromObject(rot), &cur); err != nil {
					t.Fatal(err)
				}
				st = cur.Status.DKIM
				if !served(st.ActiveSelector) {
					t.Fatalf("%s: the active key %s is not served by BIND", phase, st.ActiveSelector)
				}
				return done(st)
			})
			return st
		}

		jump(interval - lead)
		next := until("the next key published", func(st v1alpha1.DKIMStatus) bool {
			return st.NextSelector != "" && served(st.NextSelector)
		}).NextSelector
		if st := until("", func(v1alpha1.DKIMStatus) bool { return true }); st.ActiveSelector != first {
			t.Fatalf("switched before the switch was due: %+v", st)
		}
		jump(lead)
		until("the switch", func(st v1alpha1.DKIMStatus) bool { return st.ActiveSelector == next })
		if st := until("", func(v1alpha1.DKIMStatus) bool { return true }); !slices.Contains(st.RetiringSelectors, first) || !served(first) {
			t.Fatalf("after the switch the old key %s must stay published: %+v", first, st)
		}
		jump(overlap)
		until("the retirement", func(st v1alpha1.DKIMStatus) bool {
			return len(st.RetiringSelectors) == 0 && !served(first)
		})
	})

	t.Run("deleting the SendingDomain removes its records from BIND and keeps the key", func(t *testing.T) {
		if err := c.Delete(context.Background(), sd); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Minute, "records gone from BIND", func() bool {
			spfGone := !slices.ContainsFunc(bind.LookupTXT(t, "@"), func(s []string) bool { return strings.HasPrefix(strings.Join(s, ""), "v=spf1") })
			return len(bind.LookupTXT(t, selector+"._domainkey")) == 0 && len(bind.LookupTXT(t, "_dmarc")) == 0 && spfGone
		})
		// external-dns' ownership records go too.
		waitFor(t, time.Minute, "ownership records gone", func() bool {
			return len(bind.LookupTXT(t, "_extdns-txt._dmarc")) == 0 && len(bind.LookupTXT(t, "_extdns-txt")) == 0
		})
		var secret corev1.Secret
		if err := c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "example-test-dkim"}, &secret); err != nil {
			t.Fatalf("the DKIM Secret did not survive the SendingDomain: %v", err)
		}
		// The other domain's records are untouched.
		if len(bind.LookupTXT(t, "_dmarc.rot")) != 1 {
			t.Fatal("deleting one domain removed another's records")
		}
	})
}

func mustCreate(t *testing.T, c client.Client, o client.Object) {
	t.Helper()
	if err := c.Create(context.Background(), o); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond every half second until it holds; tests run on
// loaded 2-core machines, so the timeouts are generous.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func waitForCondition(t *testing.T, c client.Client, sd *v1alpha1.SendingDomain, typ string, status metav1.ConditionStatus, timeout time.Duration) *v1alpha1.SendingDomain {
	t.Helper()
	var cur v1alpha1.SendingDomain
	waitFor(t, timeout, fmt.Sprintf("%s=%s on %s", typ, status, sd.Name), func() bool {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(sd), &cur); err != nil {
			if apierrors.IsNotFound(err) {
				return false
			}
			t.Fatal(err)
		}
		cond := meta.FindStatusCondition(cur.Status.Conditions, typ)
		return cond != nil && cond.Status == status && cond.ObservedGeneration == cur.Generation
	})
	return &cur
}

func soaSerial(t *testing.T, bind *bindtest.Server) uint32 {
	t.Helper()
	soa := bind.Lookup(t, "@", dns.TypeSOA)
	if len(soa) != 1 {
		t.Fatalf("SOA: %v", soa)
	}
	return soa[0].(*dns.SOA).Serial
}

// versionsOf returns the resourceVersions of a SendingDomain and of the
// Secret and DNSEndpoint the operator writes for it.
func versionsOf(t *testing.T, c client.Client, ns, name string) []string {
	t.Helper()
	var sd v1alpha1.SendingDomain
	var secret corev1.Secret
	var ep externaldnsv1alpha1.DNSEndpoint
	for _, g := range []struct {
		key types.NamespacedName
		o   client.Object
	}{
		{types.NamespacedName{Namespace: ns, Name: name}, &sd},
		{types.NamespacedName{Namespace: ns, Name: name + "-dkim"}, &secret},
		{types.NamespacedName{Namespace: ns, Name: name}, &ep},
	} {
		if err := c.Get(context.Background(), g.key, g.o); err != nil {
			t.Fatal(err)
		}
	}
	return []string{sd.ResourceVersion, secret.ResourceVersion, ep.ResourceVersion}
}

// skewedClock is the real clock moved forward by what add was given.
type skewedClock struct{ skew atomic.Int64 }

func (c *skewedClock) Now() time.Time { return time.Now().Add(time.Duration(c.skew.Load())) }

func (c *skewedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

func (c *skewedClock) add(d time.Duration) { c.skew.Add(int64(d)) }
