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

const (
	validDomain = `
domain: example.com
poolRef: {name: transactional}
`
	validPool = `
hostname: relay.example.com
`
	validCredential = `
poolRef: {name: transactional, namespace: mail}
allowedSenders: [example.com]
`
)

func TestInvalidObjectsAreRefusedWithAHelpfulMessage(t *testing.T) {
	ns := newNamespace(t)
	cases := []struct {
		name string
		kind string
		spec string
		want string // a part of the API server's message
	}{
		// SendingDomain
		{"uppercase domain", "SendingDomain", "domain: Example.com\npoolRef: {name: p}", "domain must be a lowercase DNS name"},
		{"domain with trailing dot", "SendingDomain", "domain: example.com.\npoolRef: {name: p}", "domain must be a lowercase DNS name with at least two labels and no trailing dot"},
		{"single-label domain", "SendingDomain", "domain: localhost\npoolRef: {name: p}", "domain must be a lowercase DNS name with at least two labels"},
		{"domain with a space", "SendingDomain", "domain: exa mple.com\npoolRef: {name: p}", "domain must be a lowercase DNS name"},
		{"missing domain", "SendingDomain", "poolRef: {name: p}", "spec.domain: Required value"},
		{"missing poolRef", "SendingDomain", "domain: example.com", "spec.poolRef: Required value"},
		{"poolRef name not a name", "SendingDomain", "domain: example.com\npoolRef: {name: Pool_1}", "poolRef.name must be the name of a RelayPool"},
		{"poolRef namespace not a name", "SendingDomain", "domain: example.com\npoolRef: {name: p, namespace: Mail}", "poolRef.namespace must be a namespace name"},
		{"selector with a dot", "SendingDomain", validDomain + "dkim: {selector: mr.2026}", "dkim.selector must be a DNS label"},
		{"selector starting with a dash", "SendingDomain", validDomain + "dkim: {selector: -mr}", "dkim.selector must be a DNS label"},
		{"1024-bit key", "SendingDomain", validDomain + "dkim: {algorithm: RSA1024}", `Unsupported value: "RSA1024": supported values: "RSA2048", "RSA3072", "RSA4096", "Ed25519"`},
		{"rotation interval in days", "SendingDomain", validDomain + "dkim: {rotation: {interval: 90d}}", "dkim.rotation.interval must be a positive duration such as 2160h"},
		{"rotation interval zero", "SendingDomain", validDomain + "dkim: {rotation: {interval: 0s, overlap: 0s}}", "dkim.rotation.interval must be a positive duration"},
		{"overlap longer than interval", "SendingDomain", validDomain + "dkim: {rotation: {interval: 24h, overlap: 48h}}", "dkim.rotation.overlap must be shorter than dkim.rotation.interval"},
		{"overlap not a duration", "SendingDomain", validDomain + "dkim: {rotation: {overlap: a week}}", "dkim.rotation.overlap must be a duration such as 168h"},
		{"DMARC percent over 100", "SendingDomain", validDomain + "dmarc: {percent: 101}", "dmarc.percent must be between 0 and 100"},
		{"DMARC percent negative", "SendingDomain", validDomain + "dmarc: {percent: -1}", "dmarc.percent must be between 0 and 100"},
		{"DMARC report target without mailto", "SendingDomain", validDomain + "dmarc: {aggregateReportsTo: [dmarc@example.com]}", "dmarc.aggregateReportsTo entries must be mailto: URIs"},
		{"DMARC report target https", "SendingDomain", validDomain + "dmarc: {aggregateReportsTo: ['https://example.com/dmarc']}", "dmarc.aggregateReportsTo entries must be mailto: URIs"},
		{"DMARC unknown policy", "SendingDomain", validDomain + "dmarc: {policy: block}", `Unsupported value: "block"`},
		{"DMARC alignment unknown", "SendingDomain", validDomain + "dmarc: {alignment: {dkim: loose}}", `Unsupported value: "loose": supported values: "relaxed", "strict"`},
		{"SPF unknown policy", "SendingDomain", validDomain + "spf: {policy: HardFail}", `Unsupported value: "HardFail": supported values: "SoftFail", "Fail", "Neutral"`},
		{"SPF include with mechanism prefix", "SendingDomain", validDomain + "spf: {include: ['include:_spf.google.com']}", "spf.include entries must be DNS names such as _spf.google.com, without 'include:'"},
		{"SPF record outside the domain", "SendingDomain", validDomain + "spf: {recordName: example.org}", "spf.recordName must be the domain itself or a name under it"},
		{"TTL too short", "SendingDomain", validDomain + "dns: {ttl: 5}", "dns.ttl must be between 30 and 86400 seconds"},
		{"unknown TXT encoding", "SendingDomain", validDomain + "dns: {txtEncoding: Chunked}", `Unsupported value: "Chunked": supported values: "Split", "Single"`},
		{"resolver given by name", "SendingDomain", validDomain + "dns: {verify: {resolvers: [dns.google]}}", "dns.verify.resolvers entries must be IP addresses, optionally with a port"},
		{"IPv6 resolver port without brackets", "SendingDomain", validDomain + "dns: {verify: {resolvers: ['fd00::1:53:x']}}", "dns.verify.resolvers entries must be IP addresses"},
		{"verify interval in words", "SendingDomain", validDomain + "dns: {verify: {interval: 10 minutes}}", "dns.verify.interval must be a duration of at least 1s"},

		// RelayPool
		{"negative replicas", "RelayPool", validPool + "replicas: -1", "replicas must be 0 or more"},
		{"missing hostname", "RelayPool", "replicas: 1", "spec.hostname: Required value"},
		{"hostname not a DNS name", "RelayPool", "hostname: Relay_Host", "hostname must be a lowercase fully qualified DNS name"},
		{"port out of range", "RelayPool", validPool + "submission: {starttlsPort: 70000}", "submission.starttlsPort must be a port between 1 and 65535"},
		{"implicit TLS port zero", "RelayPool", validPool + "submission: {implicitTLSPort: 0, starttlsPort: 2587}", "submission.implicitTLSPort must be a port between 1 and 65535"},
		{"same port twice", "RelayPool", validPool + "submission: {starttlsPort: 587, implicitTLSPort: 587}", "submission.starttlsPort and submission.implicitTLSPort must be different ports"},
		{"message size not a quantity", "RelayPool", validPool + "submission: {maxMessageSize: huge}", "submission.maxMessageSize must be a quantity between 1Ki and 1Gi"},
		{"message size too large", "RelayPool", validPool + "submission: {maxMessageSize: 2Gi}", "submission.maxMessageSize must be a quantity between 1Ki and 1Gi"},
		{"zero recipients", "RelayPool", validPool + "submission: {maxRecipients: 0}", "submission.maxRecipients must be between 1 and 10000"},
		{"TLS secret name not a name", "RelayPool", validPool + "submission: {tls: {secretName: My_Cert}}", "submission.tls.secretName must be a Secret name"},
		{"smarthost mode without smarthost", "RelayPool", validPool + "delivery: {mode: Smarthost}", "delivery.smarthost.host is required when delivery.mode is Smarthost"},
		{"smarthost mode with empty host", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {port: 587}}", "delivery.smarthost.host is required when delivery.mode is Smarthost"},
		{"smarthost host with port", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {host: 'smtp.example.net:587'}}", "delivery.smarthost.host must be a host name or an IP address, without a port"},
		{"credentials over opportunistic TLS", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {host: smtp.example.net, tls: Opportunistic, credentialsSecretRef: {name: up}}}", "credentials are never sent in cleartext"},
		{"credentials secret not a name", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {host: smtp.example.net, credentialsSecretRef: {name: Up_Stream}}}", "secret names must be lowercase letters, digits"},
		{"unknown delivery mode", "RelayPool", validPool + "delivery: {mode: Relay}", `Unsupported value: "Relay": supported values: "Direct", "Smarthost"`},
		{"empty retry schedule", "RelayPool", validPool + "delivery: {retry: {schedule: []}}", "delivery.retry.schedule needs at least one step"},
		{"retry step in words", "RelayPool", validPool + "delivery: {retry: {schedule: [1m, 5 minutes]}}", "delivery.retry.schedule entries must be positive durations"},
		{"retry max age in days", "RelayPool", validPool + "delivery: {retry: {maxAge: 5d}}", "delivery.retry.maxAge must be a positive duration such as 120h"},
		{"delay warning not a duration", "RelayPool", validPool + "delivery: {retry: {delayWarningAfter: soon}}", "delivery.retry.delayWarningAfter must be a duration such as 4h, or 0 to disable"},
		{"zero connections per domain", "RelayPool", validPool + "delivery: {maxConnectionsPerDomain: 0}", "delivery.maxConnectionsPerDomain must be between 1 and 1000"},
		{"MX resolver by name", "RelayPool", validPool + "delivery: {resolvers: [resolver.local]}", "delivery.resolvers entries must be IP addresses"},
		{"storage size not a quantity", "RelayPool", validPool + "storage: {size: lots}", "storage.size must be a positive Kubernetes quantity such as 5Gi"},
		{"storage size zero", "RelayPool", validPool + "storage: {size: '0'}", "storage.size must be a positive Kubernetes quantity"},
		{"sending IP not an address", "RelayPool", validPool + "sendingIPs: [mail.example.com]", "sendingIPs entries must be IPv4 or IPv6 addresses"},
		{"namespace selector missing", "RelayPool", validPool + "allowedNamespaces: {from: Selector}", "allowedNamespaces.selector is required when from is Selector"},

		// SMTPCredential
		{"no allowed senders", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: []", "allowedSenders needs at least one domain"},
		{"allowed senders missing", "SMTPCredential", "poolRef: {name: p}", "spec.allowedSenders: Required value"},
		{"allowed sender wildcard", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: ['*@example.com', '@example.com']", "allowedSenders entries must be lowercase domains (example.com) or addresses"},
		{"allowed sender uppercase", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: [Example.COM]", "allowedSenders entries must be lowercase domains"},
		{"secret name not a name", "SMTPCredential", validCredential + "secretName: Shop_SMTP", "secretName must be a Secret name"},
		{"negative rate limit", "SMTPCredential", validCredential + "limits: {messagesPerMinute: -5}", "limits.messagesPerMinute must be 0 (no limit) or more"},
		{"negative daily limit", "SMTPCredential", validCredential + "limits: {messagesPerDay: -1}", "limits.messagesPerDay must be 0 (no limit) or more"},
		{"missing poolRef on credential", "SMTPCredential", "allowedSenders: [example.com]", "spec.poolRef: Required value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := env.Client.Create(context.Background(), object(t, tc.kind, ns, tc.spec))
			if err == nil {
				t.Fatalf("accepted; want refusal with %q", tc.want)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("refused as %v, want Invalid with %q", apierrors.ReasonForError(err), tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("message %q\ndoes not say %q", err.Error(), tc.want)
			}
		})
	}
}

func TestValidObjectsBesideTheSamples(t *testing.T) {
	ns := newNamespace(t)
	cases := []struct{ name, kind, spec string }{
		{"Ed25519 with explicit selector", "SendingDomain", validDomain + "dkim: {algorithm: Ed25519, selector: mail2026}"},
		{"SPF on a bounce subdomain", "SendingDomain", validDomain + "spf: {recordName: bounce.example.com, include: [_spf.google.com], policy: Fail}"},
		{"resolvers with and without ports", "SendingDomain", validDomain + "dns: {verify: {resolvers: [10.0.0.10, '10.0.0.10:5353', 'fd00::10', '[fd00::10]:53']}}"},
		{"smarthost with credentials", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {host: email-smtp.eu-west-1.amazonaws.com, port: 465, tls: Implicit, credentialsSecretRef: {name: ses}}}"},
		{"scaled to zero", "RelayPool", validPool + "replicas: 0"},
		{"delay warnings off", "RelayPool", validPool + "delivery: {retry: {delayWarningAfter: '0', schedule: [30s]}}"},
		{"namespace selector", "RelayPool", validPool + "allowedNamespaces: {from: Selector, selector: {matchLabels: {mail: enabled}}}"},
		{"IPv6 and CIDR sending addresses", "RelayPool", validPool + "sendingIPs: ['2001:db8::25', 203.0.113.0/28]"},
		{"address and domain senders with limits", "SMTPCredential", validCredential + "allowedSenders: [example.com, noreply@shop.example.com]\nlimits: {messagesPerMinute: 60, messagesPerDay: 10000, recipientsPerMessage: 10}\nsuspended: true"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := env.Client.Create(context.Background(), object(t, tc.kind, ns, tc.spec)); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
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
		"relaypools.mailroom.io":      {"Replicas", "Available", "Endpoint", "Ready", "Age"},
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
