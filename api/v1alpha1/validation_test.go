package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "mailroom.io/mailroom/api/v1alpha1"
)

var nsCounter atomic.Int64

// newNamespace creates a namespace of the test's own.
func newNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("t%d", nsCounter.Add(1))
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.Client.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return name
}

// object builds an unstructured object of a mailroom kind from a YAML spec,
// so tests can send what a user would write, including wrong types.
func object(t *testing.T, kind, ns, specYAML string) *unstructured.Unstructured {
	t.Helper()
	spec := map[string]any{}
	if err := yaml.Unmarshal([]byte(specYAML), &spec); err != nil {
		t.Fatalf("bad test spec: %v", err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1.GroupVersion.String(),
		"kind":       kind,
		"metadata":   map[string]any{"generateName": strings.ToLower(kind) + "-", "namespace": ns},
		"spec":       spec,
	}}
	return u
}

func TestSamplesAreAcceptedAndDefaulted(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join("..", "..", "config", "samples")
	for _, ns := range []string{"mail", "shop"} {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	files, err := filepath.Glob(filepath.Join(root, "mailroom_v1alpha1_*.yaml"))
	if err != nil || len(files) != 3 {
		t.Fatalf("want 3 samples, found %v (%v)", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(b, &u.Object); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := env.Client.Create(ctx, u); err != nil {
			t.Fatalf("sample %s refused: %v", filepath.Base(f), err)
		}
	}

	t.Run("RelayPool", func(t *testing.T) {
		var p v1.RelayPool
		get(t, "mail", "transactional", &p)
		s := p.Spec
		expect(t, "replicas", *s.Replicas, int32(2))
		expect(t, "storage.size", s.Storage.Size, "5Gi")
		expect(t, "storage.storageClassName", s.Storage.StorageClassName, "")
		expect(t, "submission.starttlsPort", s.Submission.StartTLSPort, int32(587))
		expect(t, "submission.implicitTLSPort", s.Submission.ImplicitTLSPort, int32(465))
		expect(t, "submission.maxMessageSize", s.Submission.MaxMessageSize, "25Mi")
		expect(t, "submission.maxRecipients", s.Submission.MaxRecipients, int32(100))
		expect(t, "delivery.mode", s.Delivery.Mode, v1.DeliveryModeDirect)
		expect(t, "delivery.maxConnectionsPerDomain", s.Delivery.MaxConnectionsPerDomain, int32(10))
		var sched []string
		for _, d := range s.Delivery.Retry.Schedule {
			sched = append(sched, d.Duration.Duration.String())
		}
		expect(t, "delivery.retry.schedule", sched, []string{"1m0s", "5m0s", "15m0s", "30m0s", "1h0m0s"})
		expect(t, "delivery.retry.maxAge", s.Delivery.Retry.MaxAge.Duration.String(), "120h0m0s")
		expect(t, "delivery.retry.delayWarningAfter", s.Delivery.Retry.DelayWarningAfter.Duration.String(), "4h0m0s")
		expect(t, "allowedNamespaces.from", s.AllowedNamespaces.From, v1.NamespacesFromAll)
		expect(t, "api.enabled", *s.API.Enabled, true)
		expect(t, "api.port", s.API.Port, int32(443))
		expect(t, "events.allowedTargets", len(s.Events.AllowedTargets), 0)
	})
	t.Run("SendingDomain", func(t *testing.T) {
		var d v1.SendingDomain
		get(t, "mail", "example-com", &d)
		s := d.Spec
		expect(t, "poolRef.namespace", s.PoolRef.Namespace, "")
		expect(t, "dkim.algorithm", s.DKIM.Algorithm, v1.DKIMAlgorithmRSA2048)
		expect(t, "dkim.selector", s.DKIM.Selector, "")
		expect(t, "dkim.rotation.interval", s.DKIM.Rotation.Interval.Duration.String(), "2160h0m0s")
		expect(t, "dkim.rotation.overlap", s.DKIM.Rotation.Overlap.Duration.String(), "168h0m0s")
		expect(t, "spf.publish", *s.SPF.Publish, true)
		expect(t, "spf.policy", s.SPF.Policy, v1.SPFPolicySoftFail)
		expect(t, "dmarc.publish", *s.DMARC.Publish, true)
		expect(t, "dmarc.policy", s.DMARC.Policy, v1.DMARCPolicyNone)
		expect(t, "dmarc.percent", *s.DMARC.Percent, int32(100))
		expect(t, "dmarc.alignment.dkim", s.DMARC.Alignment.DKIM, v1.DMARCAlignmentRelaxed)
		expect(t, "dmarc.alignment.spf", s.DMARC.Alignment.SPF, v1.DMARCAlignmentRelaxed)
		expect(t, "dns.ttl", s.DNS.TTL, int32(300))
		expect(t, "dns.txtEncoding", s.DNS.TXTEncoding, v1.TXTEncodingSplit)
		expect(t, "dns.verify.interval", s.DNS.Verify.Interval.Duration.String(), "10m0s")
	})
	t.Run("SMTPCredential", func(t *testing.T) {
		var c v1.SMTPCredential
		get(t, "shop", "shop", &c)
		s := c.Spec
		expect(t, "limits", s.Limits, v1.CredentialLimits{})
		expect(t, "suspended", s.Suspended, false)
		expect(t, "secretName", s.SecretName, "shop-smtp")
	})
}

func get(t *testing.T, ns, name string, obj client.Object) {
	t.Helper()
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
		t.Fatal(err)
	}
}

func expect[T any](t *testing.T, field string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s defaulted to %v, want %v", field, got, want)
	}
}

func TestDomainIsImmutable(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	d := &v1.SendingDomain{
		ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: ns},
		Spec:       v1.SendingDomainSpec{Domain: "example.com", PoolRef: v1.PoolReference{Name: "p"}},
	}
	if err := env.Client.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	d.Spec.Domain = "example.org"
	err := env.Client.Update(ctx, d)
	if err == nil || !strings.Contains(err.Error(), "domain is immutable; create a new SendingDomain for a different domain") {
		t.Fatalf("changing the domain: got %v, want the immutability message", err)
	}
	// Other fields stay editable.
	var fresh v1.SendingDomain
	get(t, ns, "d", &fresh)
	fresh.Spec.DMARC.Policy = v1.DMARCPolicyReject
	if err := env.Client.Update(ctx, &fresh); err != nil {
		t.Fatalf("changing the DMARC policy: %v", err)
	}
}

func TestPrinterColumnsAndCategory(t *testing.T) {
	// kubectl get mailroom lists all three kinds; columns show what a
	// platform engineer checks first.
	ctx := context.Background()
	crds := map[string][]string{
		"sendingdomains.mailroom.io":  {"Domain", "Pool", "Selector", "Verified", "Ready", "Age"},
		"relaypools.mailroom.io":      {"Replicas", "Available", "Endpoint", "Revision", "Applied", "Ready", "Reason", "Age"},
		"smtpcredentials.mailroom.io": {"Username", "Pool", "Secret", "Suspended", "Ready", "Age"},
	}
	for name, want := range crds {
		crd := &unstructured.Unstructured{}
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			t.Fatal(err)
		}
		cats, _, _ := unstructured.NestedStringSlice(crd.Object, "spec", "names", "categories")
		if !reflect.DeepEqual(cats, []string{"mailroom"}) {
			t.Errorf("%s categories = %v", name, cats)
		}
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		cols, _, _ := unstructured.NestedSlice(versions[0].(map[string]any), "additionalPrinterColumns")
		var got []string
		for _, c := range cols {
			got = append(got, c.(map[string]any)["name"].(string))
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s columns = %v, want %v", name, got, want)
		}
	}
}

// TestEveryFieldIsDocumented keeps `kubectl explain` useful: each field of
// each kind carries a description.
func TestEveryFieldIsDocumented(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"sendingdomains.mailroom.io", "relaypools.mailroom.io", "smtpcredentials.mailroom.io"} {
		crd := &unstructured.Unstructured{}
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			t.Fatal(err)
		}
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		schema, _, _ := unstructured.NestedMap(versions[0].(map[string]any), "schema", "openAPIV3Schema")
		checked := 0
		var walk func(path string, s map[string]any)
		walk = func(path string, s map[string]any) {
			props, _, _ := unstructured.NestedMap(s, "properties")
			for field, v := range props {
				checked++
				p := v.(map[string]any)
				if path != "" || (field != "apiVersion" && field != "kind" && field != "metadata") {
					if d, _ := p["description"].(string); strings.TrimSpace(d) == "" {
						t.Errorf("%s: %s%s has no description", name, path, field)
					}
				}
				walk(path+field+".", p)
				if items, ok := p["items"].(map[string]any); ok {
					walk(path+field+"[].", items)
				}
			}
		}
		walk("", schema)
		if checked < 20 {
			t.Errorf("%s: only %d fields found; is the schema walk broken?", name, checked)
		}
		t.Logf("%s: %d fields documented", name, checked)
	}
}
