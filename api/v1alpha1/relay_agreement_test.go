package v1alpha1_test

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/relay/password"
	"mailroom.io/mailroom/internal/relayconfig"
)

// TestAdmissionAgreesWithTheRelay holds admission to the relay's own
// configuration validation: a RelayPool the relay would refuse (once the
// operator renders it with relayconfig.Render) must be refused at
// admission, where the user sees it, and every pool admission accepts must
// render to a configuration the relay accepts. Admission may be stricter
// than the relay (port 0, a sending range of /8), never laxer.
func TestAdmissionAgreesWithTheRelay(t *testing.T) {
	t.Setenv(config.PodNameEnv, "p-relay-0") // the downward API sets it in a pod
	ns := newNamespace(t)

	// The spec of a minimal pool, with every default the API server fills
	// in: the base the relay's verdict on each case is computed from.
	base := object(t, "RelayPool", ns, validPool)
	if err := env.Client.Create(context.Background(), base, strict, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	baseSpec, _, _ := unstructured.NestedMap(base.Object, "spec")

	cases := []struct {
		name          string
		spec          string // merged over the defaulted minimal pool
		relayRefuses  bool   // the relay's own validation refuses it
		admissionOnly bool   // refused at admission only: stricter than the relay
	}{
		// The relay refuses these; admission must too.
		{name: "STARTTLS on the HTTP listener's port", spec: "submission: {starttlsPort: 8080}", relayRefuses: true},
		{name: "implicit TLS on the HTTP listener's port", spec: "submission: {implicitTLSPort: 8080}", relayRefuses: true},
		{name: "STARTTLS on the admin listener's port", spec: "submission: {starttlsPort: 8081}", relayRefuses: true},
		{name: "implicit TLS on the admin listener's port", spec: "submission: {implicitTLSPort: 8081}", relayRefuses: true},
		{name: "STARTTLS on the peer listener's port", spec: "submission: {starttlsPort: 8443}", relayRefuses: true},
		{name: "implicit TLS on the peer listener's port", spec: "submission: {implicitTLSPort: 8443}", relayRefuses: true},
		{name: "both submission listeners on one port", spec: "submission: {starttlsPort: 2525, implicitTLSPort: 2525}", relayRefuses: true},
		{name: "port above 65535", spec: "submission: {starttlsPort: 70000}", relayRefuses: true},
		{name: "message size above 2Gi", spec: "submission: {maxMessageSize: 3Gi}", relayRefuses: true},
		{name: "message size below 1Ki", spec: "submission: {maxMessageSize: '512'}", relayRefuses: true},
		{name: "hostname not a DNS name", spec: "hostname: 'relay!.example.com'", relayRefuses: true},
		{name: "smarthost mode without a host", spec: "delivery: {mode: Smarthost}", relayRefuses: true},
		{name: "smarthost host with a port", spec: "delivery: {mode: Smarthost, smarthost: {host: 'smtp.example.net:587'}}", relayRefuses: true},
		{name: "smarthost port above 65535", spec: "delivery: {mode: Smarthost, smarthost: {host: smtp.example.net, port: 70000}}", relayRefuses: true},
		{name: "retry step of zero", spec: "delivery: {retry: {schedule: [0s]}}", relayRefuses: true},
		{name: "maxAge of zero", spec: "delivery: {retry: {maxAge: 0s}}", relayRefuses: true},
		{name: "resolver port zero", spec: "delivery: {resolvers: ['10.0.0.10:0']}", relayRefuses: true},
		{name: "resolver port above 65535", spec: "delivery: {resolvers: ['10.0.0.10:99999']}", relayRefuses: true},
		{name: "resolver IPv6 port above 65535", spec: "delivery: {resolvers: ['[fd00::10]:65536']}", relayRefuses: true},
		{name: "trusted load balancer not a CIDR", spec: "proxyProtocol: {trustedCIDRs: [10.0.0.7]}", relayRefuses: true},
		{name: "no trusted load balancers", spec: "proxyProtocol: {trustedCIDRs: []}", relayRefuses: true},
		{name: "webhook target an IPv6 address", spec: "events: {allowedTargets: ['fd00::5']}", relayRefuses: true},
		{name: "webhook target a wildcard", spec: "events: {allowedTargets: ['*.example.com']}", relayRefuses: true},
		{name: "webhook target a URL", spec: "events: {allowedTargets: ['https://hooks.example.com']}", relayRefuses: true},

		// Admission is stricter here; the relay would start but mail or
		// DNS would suffer.
		{name: "submission on port 0", spec: "submission: {starttlsPort: 0}", admissionOnly: true},
		{name: "message size between 1Gi and 2Gi", spec: "submission: {maxMessageSize: 1500Mi}", admissionOnly: true},
		{name: "hostname an IP address", spec: "hostname: 192.0.2.25", admissionOnly: true},
		{name: "resolver by name", spec: "delivery: {resolvers: [dns.example.com]}", admissionOnly: true},
		{name: "smarthost ignored in Direct mode", spec: "delivery: {smarthost: {host: smtp.example.net}}", admissionOnly: true},
		{name: "PROXY headers trusted from everyone", spec: "proxyProtocol: {trustedCIDRs: [0.0.0.0/0]}", admissionOnly: true},
		{name: "maxAge before the first retry", spec: "delivery: {retry: {maxAge: 30s}}", admissionOnly: true},
		{name: "webhook target an IPv4 address, which would match nothing", spec: "events: {allowedTargets: [10.0.0.5]}", admissionOnly: true},
		{name: "webhook target with a trailing dot", spec: "events: {allowedTargets: [hooks.example.com.]}", admissionOnly: true},
		{name: "API on a submission port", spec: "api: {port: 587}", admissionOnly: true},

		// Both accept.
		{name: "the defaults", spec: "{}"},
		{name: "ports next to the relay's own", spec: "submission: {starttlsPort: 8079, implicitTLSPort: 8444}"},
		{name: "ports 1 and 65535", spec: "submission: {starttlsPort: 1, implicitTLSPort: 65535}"},
		{name: "swapped submission ports", spec: "submission: {starttlsPort: 465, implicitTLSPort: 587}"},
		{name: "message size 1Gi", spec: "submission: {maxMessageSize: 1Gi}"},
		{name: "message size 1Ki", spec: "submission: {maxMessageSize: 1Ki}"},
		{name: "three replicas", spec: "replicas: 3"},
		{name: "scaled to zero", spec: "replicas: 0"},
		{name: "smarthost with credentials", spec: "delivery: {mode: Smarthost, smarthost: {host: email-smtp.eu-west-1.amazonaws.com, port: 465, tls: Implicit, credentialsSecretRef: {name: ses}}}"},
		{name: "smarthost by address", spec: "delivery: {mode: Smarthost, smarthost: {host: 192.0.2.50, tls: Opportunistic}}"},
		{name: "resolvers with ports", spec: "delivery: {resolvers: [10.0.0.10, '10.0.0.11:5353', 'fd00::10', '[fd00::11]:53']}"},
		{name: "a custom retry policy", spec: "delivery: {retry: {schedule: [30s, 2m], maxAge: 1h, delayWarningAfter: '0'}, maxConnectionsPerDomain: 1000}"},
		{name: "PROXY protocol", spec: "proxyProtocol: {trustedCIDRs: [10.0.0.0/16, 'fd00::/64']}"},
		{name: "webhook targets of every form", spec: "events: {allowedTargets: [hooks.example.com, .shop.svc, 10.20.0.0/16, 10.0.0.5/32, 'fd00::/64']}"},
		{name: "API off", spec: "api: {enabled: false}"},
		{name: "API on the peer port's number", spec: "api: {port: 8443}"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			overlay := map[string]any{}
			if err := yaml.Unmarshal([]byte(tc.spec), &overlay); err != nil {
				t.Fatalf("bad test spec: %v", err)
			}

			// The relay's verdict, without admission.
			relayErr := relayVerdict(t, ns, merge(deepCopy(baseSpec), overlay))
			if relayErr != nil {
				t.Logf("relay: %v", relayErr)
			}
			if tc.relayRefuses && relayErr == nil {
				t.Fatalf("the relay accepts this; the case no longer shows a relay rule (update the table)")
			}
			if !tc.relayRefuses && !tc.admissionOnly && relayErr != nil {
				t.Fatalf("the relay refuses a case listed as valid: %v", relayErr)
			}

			// Admission's verdict.
			u := object(t, "RelayPool", ns, tc.spec)
			unstructured.SetNestedMap(u.Object, merge(map[string]any{"hostname": "relay.example.com"}, overlay), "spec")
			admErr := env.Client.Create(context.Background(), u, strict, client.DryRunAll)
			switch {
			case relayErr != nil && admErr == nil:
				t.Fatalf("admitted, but the relay would refuse the rendered configuration: %v", relayErr)
			case tc.admissionOnly && admErr == nil:
				t.Fatalf("admitted; want admission to refuse it")
			case !tc.relayRefuses && !tc.admissionOnly && admErr != nil:
				t.Fatalf("refused at admission: %v", admErr)
			case admErr == nil:
				// What admission stored (defaults included) must render to a
				// configuration the relay accepts.
				spec, _, _ := unstructured.NestedMap(u.Object, "spec")
				if err := relayVerdict(t, ns, spec); err != nil {
					t.Fatalf("admitted, but the relay refuses the rendered configuration: %v", err)
				}
			}
		})
	}
}

// relayVerdict renders a pool's relay configuration the way the operator
// does and returns the relay's own validation result.
func relayVerdict(t *testing.T, ns string, spec map[string]any) error {
	t.Helper()
	var pool v1.RelayPool
	obj := map[string]any{"apiVersion": v1.GroupVersion.String(), "kind": "RelayPool",
		"metadata": map[string]any{"name": "p", "namespace": ns}, "spec": spec}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &pool); err != nil {
		return err
	}
	members := int32(1)
	if pool.Spec.Replicas != nil {
		members = *pool.Spec.Replicas
	}
	r, err := relayconfig.Render(relayconfig.Input{Pool: &pool, Members: members})
	if err != nil {
		return err
	}
	return r.Validate()
}

// merge writes src over dst: maps merge, everything else is replaced.
func merge(dst, src map[string]any) map[string]any {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				dst[k] = merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

func deepCopy(m map[string]any) map[string]any {
	return runtime.DeepCopyJSON(m)
}

// TestSendersAndDomainsAgreeWithTheRelay does the same for what
// SendingDomains and SMTPCredentials put into the relay configuration: a
// domain name and an allowed-sender entry admission accepts is one the
// relay accepts (with the sender's domain on the pool, as the operator
// requires before it renders the login).
func TestSendersAndDomainsAgreeWithTheRelay(t *testing.T) {
	t.Setenv(config.PodNameEnv, "p-relay-0")
	ns := newNamespace(t)
	hash, err := password.HashToken(strings.Repeat("s", 32))
	if err != nil {
		t.Fatal(err)
	}
	relay := func(domain, sender string) error {
		pool := &v1.RelayPool{}
		pool.Name, pool.Namespace = "p", ns
		pool.Spec.Hostname = "relay.example.com"
		pool.Spec.Submission = v1.SubmissionSpec{StartTLSPort: 587, ImplicitTLSPort: 465, MaxMessageSize: "25Mi", MaxRecipients: 100}
		pool.Spec.Delivery = v1.DeliverySpec{Mode: v1.DeliveryModeDirect, MaxConnectionsPerDomain: 10}
		r, err := relayconfig.Render(relayconfig.Input{Pool: pool, Members: 1,
			Domains:     []relayconfig.Domain{{Name: domain, Selector: "mr-20261125", Algorithm: "Ed25519", KeyPEM: []byte("key")}},
			Credentials: []relayconfig.Credential{{Username: "shop." + ns, PasswordHash: hash, AllowedSenders: []string{sender}}},
		})
		if err != nil {
			return err
		}
		return r.Validate()
	}
	domainOf := func(sender string) string {
		if at := strings.LastIndexByte(sender, '@'); at >= 0 {
			return sender[at+1:]
		}
		return sender
	}
	senders := []struct {
		sender       string
		relayRefuses bool
	}{
		{sender: "example.com"},
		{sender: "noreply@shop.example.com"},
		{sender: "billing+eu@example.com"},
		{sender: "first.last@example.com"},
		{sender: "O-Ops@example.com"},
		{sender: "xn--mnchen-3ya.de"},
		{sender: "@example.com", relayRefuses: true},
		{sender: "no reply@example.com", relayRefuses: true},
		{sender: "<noreply>@example.com", relayRefuses: true},
		{sender: `"no"@example.com`, relayRefuses: true},
		{sender: "noreply@exa mple.com", relayRefuses: true},
		{sender: "noreply@-example.com", relayRefuses: true},
	}
	for _, tc := range senders {
		t.Run(tc.sender, func(t *testing.T) {
			relayErr := relay(domainOf(tc.sender), tc.sender)
			if tc.relayRefuses != (relayErr != nil) {
				t.Fatalf("relay verdict %v, want refused=%v (update the table)", relayErr, tc.relayRefuses)
			}
			c := object(t, "SMTPCredential", ns, validCredential)
			unstructured.SetNestedStringSlice(c.Object, []string{tc.sender}, "spec", "allowedSenders")
			admErr := env.Client.Create(context.Background(), c, strict, client.DryRunAll)
			if relayErr != nil && admErr == nil {
				t.Fatalf("admitted, but the relay would refuse it: %v", relayErr)
			}
			if relayErr == nil && admErr != nil {
				t.Fatalf("the relay accepts it, admission refuses it: %v", admErr)
			}
		})
	}
	for _, domain := range []string{"example.com", "mail.example.co.uk", "xn--mnchen-3ya.de", "a-b.example"} {
		t.Run("domain "+domain, func(t *testing.T) {
			if err := relay(domain, domain); err != nil {
				t.Fatalf("the relay refuses a domain admission accepts: %v", err)
			}
			d := object(t, "SendingDomain", ns, "poolRef: {name: p}\ndomain: "+domain)
			if err := env.Client.Create(context.Background(), d, strict, client.DryRunAll); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
}
