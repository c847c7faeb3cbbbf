package v1alpha1_test

// Admission tests: what the API server refuses, with which message, on
// which field. Every object is sent the way kubectl sends it (Strict field
// validation, so unknown fields are refused too), and every refused case
// holds exactly one invalid value and must produce exactly one error: a
// case with two invalid values could hide that one of them is accepted.

import (
	"context"
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

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

// strict is how kubectl applies objects: unknown and duplicate fields are
// errors, not silently dropped.
var strict = client.FieldValidation("Strict")

// create sends obj as kubectl would.
func create(obj *unstructured.Unstructured) error {
	return env.Client.Create(context.Background(), obj, strict)
}

// refusal is one invalid input: the API server must refuse it with exactly
// one error, on field, whose message contains want.
type refusal struct {
	name  string
	kind  string
	spec  string
	field string // the field named by the error, e.g. spec.allowedSenders[2]
	want  string // a part of the message
}

func checkRefusals(t *testing.T, cases []refusal) {
	t.Helper()
	ns := newNamespace(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkRefused(t, create(object(t, tc.kind, ns, tc.spec)), tc.field, tc.want)
		})
	}
}

// checkRefused checks that err is an Invalid refusal with exactly one
// cause, on field, saying want.
func checkRefused(t *testing.T, err error, field, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want a refusal on %s saying %q", field, want)
	}
	var se *apierrors.StatusError
	if !errors.As(err, &se) || !apierrors.IsInvalid(err) {
		t.Fatalf("refused as %v (%v), want Invalid on %s saying %q", apierrors.ReasonForError(err), err, field, want)
	}
	errs := errorsOf(se)
	var causes []string
	for _, c := range errs {
		causes = append(causes, c.Field+": "+c.Message)
	}
	if len(causes) != 1 {
		t.Fatalf("one mistake, %d errors (want exactly one, on %s):\n  %s", len(causes), field, strings.Join(causes, "\n  "))
	}
	c := errs[0]
	if c.Field != field {
		t.Errorf("error names %s, want %s: %s", c.Field, field, causes[0])
	}
	if !strings.Contains(c.Message, want) {
		t.Errorf("message %q\ndoes not say %q", c.Message, want)
	}
}

// skippedRulesNote is what the API server adds, on no field, when a value
// fails the schema itself (type, enum, required, length): the CEL rules are
// then not run. It is a note about the refusal, not a second error.
const skippedRulesNote = "some validation rules were not checked because the object was invalid"

// errorsOf returns the errors of a refusal, without the API server's note.
func errorsOf(se *apierrors.StatusError) []metav1.StatusCause {
	var out []metav1.StatusCause
	if d := se.ErrStatus.Details; d != nil {
		for _, c := range d.Causes {
			if (c.Field == "" || c.Field == "<nil>") && strings.Contains(c.Message, skippedRulesNote) {
				continue
			}
			out = append(out, c)
		}
	}
	return out
}

// acceptance is a valid input the API server must accept.
type acceptance struct{ name, kind, spec string }

func checkAccepted(t *testing.T, cases []acceptance) {
	t.Helper()
	ns := newNamespace(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := create(object(t, tc.kind, ns, tc.spec)); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
}

// Class 1: values the schema used to accept although they break mail or DNS
// later, far from the user.
func TestRefusedBecauseTheyWouldBreakMailOrDNSLater(t *testing.T) {
	t.Run("SmarthostIgnoredInDirectMode", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"smarthost host with the default mode", "RelayPool", validPool + "delivery: {smarthost: {host: smtp.example.net}}",
				"spec.delivery.mode", "delivery.smarthost (smtp.example.net) is only used when delivery.mode is Smarthost, but mode is Direct (the default): set mode: Smarthost, or remove smarthost"},
			{"smarthost credentials with mode Direct", "RelayPool", validPool + "delivery: {mode: Direct, smarthost: {credentialsSecretRef: {name: upstream}}}",
				"spec.delivery.mode", "delivery.smarthost is only used when delivery.mode is Smarthost, but mode is Direct (the default)"},
		})
	})
	t.Run("SPFAuthorizingTheWholeInternet", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"sendingIPs 0.0.0.0/0", "RelayPool", validPool + "sendingIPs: [203.0.113.10, 0.0.0.0/0]",
				"spec.sendingIPs[1]", "sendingIPs entry 0.0.0.0/0 is too broad: SPF would authorize the whole Internet"},
			{"sendingIPs ::/0", "RelayPool", validPool + "sendingIPs: ['::/0']",
				"spec.sendingIPs[0]", "sendingIPs entry ::/0 is too broad: SPF would authorize the whole Internet"},
			{"sendingIPs the unspecified IPv4 address", "RelayPool", validPool + "sendingIPs: [0.0.0.0]",
				"spec.sendingIPs[0]", "sendingIPs entry 0.0.0.0 is the unspecified address"},
			{"sendingIPs the unspecified IPv6 address", "RelayPool", validPool + "sendingIPs: ['::']",
				"spec.sendingIPs[0]", "sendingIPs entry :: is the unspecified address"},
			{"sendingIPs an IPv4 /8", "RelayPool", validPool + "sendingIPs: [10.0.0.0/8]",
				"spec.sendingIPs[0]", "ranges of at least /16 (IPv4) or /32 (IPv6)"},
			{"sendingIPs an IPv6 /16", "RelayPool", validPool + "sendingIPs: ['2001::/16']",
				"spec.sendingIPs[0]", "ranges of at least /16 (IPv4) or /32 (IPv6)"},
		})
	})
	t.Run("InvalidSPF", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"include an IPv4 address", "SendingDomain", validDomain + "spf: {include: [192.0.2.1]}",
				"spec.spf.include[0]", "spf.include entries must be DNS names, not IP addresses (192.0.2.1)"},
			{"include an IPv6 address", "SendingDomain", validDomain + "spf: {include: ['2001:db8::1']}",
				"spec.spf.include[0]", "not IP addresses (2001:db8::1)"},
			{"include a CIDR", "SendingDomain", validDomain + "spf: {include: [192.0.2.0/24]}",
				"spec.spf.include[0]", "put the relay addresses in the RelayPool sendingIPs"},
			{"include the domain itself", "SendingDomain", validDomain + "spf: {include: [_spf.google.com, example.com]}",
				"spec.spf.include", "spf.include must not list example.com, the name this SPF record is published at: a record that includes itself is a loop receivers reject (permerror)"},
			{"include the domain itself in capitals", "SendingDomain", validDomain + "spf: {include: [Example.COM]}",
				"spec.spf.include", "spf.include must not list Example.COM, the name this SPF record is published at"},
			{"include the record's own name", "SendingDomain", validDomain + "spf: {recordName: bounce.example.com, include: [bounce.example.com]}",
				"spec.spf.include", "spf.include must not list bounce.example.com"},
		})
	})
	t.Run("DKIMKeyWithdrawnWhileMailIsQueued", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"overlap shorter than the default maxAge", "SendingDomain", validDomain + "dkim: {rotation: {overlap: 24h}}",
				"spec.dkim.rotation.overlap", "dkim.rotation.overlap (24h) must be at least 120h: mail signed with the old key can wait in the queue up to the pool delivery.retry.maxAge (120h by default)"},
			{"overlap zero", "SendingDomain", validDomain + "dkim: {rotation: {overlap: 0s}}",
				"spec.dkim.rotation.overlap", "must be at least 120h"},
			{"overlap just below the floor", "SendingDomain", validDomain + "dkim: {rotation: {overlap: 119h59m}}",
				"spec.dkim.rotation.overlap", "must be at least 120h"},
			{"interval of an hour", "SendingDomain", validDomain + "dkim: {rotation: {interval: 1h}}",
				"spec.dkim.rotation.interval", "dkim.rotation.interval (1h) must be at least 168h (7 days)"},
			{"interval zero", "SendingDomain", validDomain + "dkim: {rotation: {interval: 0s}}",
				"spec.dkim.rotation.interval", "must be at least 168h"},
			{"interval not longer than the default overlap", "SendingDomain", validDomain + "dkim: {rotation: {interval: 168h}}",
				"spec.dkim.rotation.interval", "dkim.rotation.interval (168h) must be longer than overlap (168h, the default)"},
			{"overlap not shorter than the default interval", "SendingDomain", validDomain + "dkim: {rotation: {overlap: 2160h}}",
				"spec.dkim.rotation.overlap", "dkim.rotation.overlap (2160h) must be shorter than interval (2160h, the default)"},
			{"overlap longer than the interval", "SendingDomain", validDomain + "dkim: {rotation: {interval: 200h, overlap: 300h}}",
				"spec.dkim.rotation.overlap", "dkim.rotation.overlap (300h) must be shorter than interval (200h)"},
		})
	})
	t.Run("RetrySettingsThatContradictEachOther", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"maxAge shorter than the default first step", "RelayPool", validPool + "delivery: {retry: {maxAge: 30s}}",
				"spec.delivery.retry.maxAge", "delivery.retry.maxAge (30s) must be longer than the first retry step (1m of the default schedule): mail would expire before its first retry"},
			{"maxAge equal to the first step", "RelayPool", validPool + "delivery: {retry: {schedule: [2h, 4h], maxAge: 2h, delayWarningAfter: '0'}}",
				"spec.delivery.retry.maxAge", "delivery.retry.maxAge (2h) must be longer than the first retry step (2h)"},
			{"first step longer than the default maxAge", "RelayPool", validPool + "delivery: {retry: {schedule: [200h]}}",
				"spec.delivery.retry.maxAge", "delivery.retry.maxAge (120h, the default) must be longer than the first retry step (200h)"},
			{"maxAge shorter than the default delay warning", "RelayPool", validPool + "delivery: {retry: {maxAge: 2h}}",
				"spec.delivery.retry.maxAge", "delivery.retry.maxAge (2h) must be longer than delayWarningAfter (4h, the default)"},
			{"delay warning at the default maxAge", "RelayPool", validPool + "delivery: {retry: {delayWarningAfter: 120h}}",
				"spec.delivery.retry.delayWarningAfter", "delivery.retry.delayWarningAfter (120h) must be shorter than maxAge (120h, the default)"},
			{"delay warning after maxAge", "RelayPool", validPool + "delivery: {retry: {maxAge: 10h, delayWarningAfter: 12h}}",
				"spec.delivery.retry.delayWarningAfter", "delivery.retry.delayWarningAfter (12h) must be shorter than maxAge (10h)"},
		})
	})
	t.Run("ResolversOutOfRange", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"IPv4 octet above 255", "RelayPool", validPool + "delivery: {resolvers: [999.0.0.1]}",
				"spec.delivery.resolvers[0]", "delivery.resolvers entries must be IP addresses, optionally with a port from 1 to 65535"},
			{"IPv4 octet above 255 with a port", "RelayPool", validPool + "delivery: {resolvers: ['10.0.0.300:53']}",
				"spec.delivery.resolvers[0]", "delivery.resolvers entries must be IP addresses"},
			{"port above 65535", "RelayPool", validPool + "delivery: {resolvers: ['10.0.0.10:70000']}",
				"spec.delivery.resolvers[0]", "optionally with a port from 1 to 65535"},
			{"port zero", "RelayPool", validPool + "delivery: {resolvers: ['10.0.0.10:0']}",
				"spec.delivery.resolvers[0]", "optionally with a port from 1 to 65535"},
			{"IPv6 port above 65535", "RelayPool", validPool + "delivery: {resolvers: ['[fd00::10]:99999']}",
				"spec.delivery.resolvers[0]", "optionally with a port from 1 to 65535"},
			{"verify resolver octet above 255", "SendingDomain", validDomain + "dns: {verify: {resolvers: ['256.1.1.1:53']}}",
				"spec.dns.verify.resolvers[0]", "dns.verify.resolvers entries must be IP addresses, optionally with a port from 1 to 65535"},
			{"verify resolver port above 65535", "SendingDomain", validDomain + "dns: {verify: {resolvers: ['10.0.0.10:65536']}}",
				"spec.dns.verify.resolvers[0]", "optionally with a port from 1 to 65535"},
		})
	})
	t.Run("SubmissionPortsOfTheRelayItself", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"STARTTLS on the HTTP port", "RelayPool", validPool + "submission: {starttlsPort: 8080}",
				"spec.submission.starttlsPort", "submission.starttlsPort cannot be 8080, 8081 or 8443: the relay listens there itself"},
			{"STARTTLS on the admin port", "RelayPool", validPool + "submission: {starttlsPort: 8081}",
				"spec.submission.starttlsPort", "submission.starttlsPort cannot be 8080, 8081 or 8443"},
			{"STARTTLS on the peer port", "RelayPool", validPool + "submission: {starttlsPort: 8443}",
				"spec.submission.starttlsPort", "submission.starttlsPort cannot be 8080, 8081 or 8443"},
			{"implicit TLS on the HTTP port", "RelayPool", validPool + "submission: {implicitTLSPort: 8080}",
				"spec.submission.implicitTLSPort", "submission.implicitTLSPort cannot be 8080, 8081 or 8443"},
			{"implicit TLS on the admin port", "RelayPool", validPool + "submission: {implicitTLSPort: 8081}",
				"spec.submission.implicitTLSPort", "submission.implicitTLSPort cannot be 8080, 8081 or 8443"},
			{"implicit TLS on the peer port", "RelayPool", validPool + "submission: {implicitTLSPort: 8443}",
				"spec.submission.implicitTLSPort", "submission.implicitTLSPort cannot be 8080, 8081 or 8443"},
		})
	})
	t.Run("SendersThatLookLikePatternsOrURIs", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"wildcard local part", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: ['*@example.com']",
				"spec.allowedSenders[0]", "allowedSenders entries are literal, not patterns: list the domain (example.com) to allow every address at it"},
			{"wildcard subdomain", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: ['*.example.com']",
				"spec.allowedSenders[0]", "allowedSenders entries are literal, not patterns"},
			{"mailto URI", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: ['mailto:noreply@example.com']",
				"spec.allowedSenders[0]", "allowedSenders entries are addresses, not URIs: write noreply@example.com without mailto:"},
			{"empty local part", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: ['@example.com']",
				"spec.allowedSenders[0]", "allowedSenders entries must be lowercase domains (example.com) or addresses (noreply@example.com)"},
			{"display name form", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: ['Shop <noreply@example.com>']",
				"spec.allowedSenders[0]", "allowedSenders entries must be lowercase domains"},
			{"address at an IP literal", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: ['noreply@192.0.2.1']",
				"spec.allowedSenders[0]", "allowedSenders entries must be lowercase domains"},
		})
	})
	t.Run("LabelSelectors", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"operator in lowercase", "RelayPool", validPool + "allowedNamespaces: {from: Selector, selector: {matchExpressions: [{key: team, operator: in, values: [shop]}]}}",
				"spec.allowedNamespaces.selector", "allowedNamespaces.selector.matchExpressions operators must be In, NotIn, Exists or DoesNotExist (case matters)"},
			{"operator Equals", "RelayPool", validPool + "allowedNamespaces: {from: Selector, selector: {matchExpressions: [{key: team, operator: Equals, values: [shop]}]}}",
				"spec.allowedNamespaces.selector", "operators must be In, NotIn, Exists or DoesNotExist"},
			{"In without values", "RelayPool", validPool + "allowedNamespaces: {from: Selector, selector: {matchExpressions: [{key: team, operator: In}]}}",
				"spec.allowedNamespaces.selector", "allowedNamespaces.selector.matchExpressions with In or NotIn need at least one value"},
			{"Exists with values", "RelayPool", validPool + "allowedNamespaces: {from: Selector, selector: {matchExpressions: [{key: team, operator: Exists, values: [shop]}]}}",
				"spec.allowedNamespaces.selector", "allowedNamespaces.selector.matchExpressions with Exists or DoesNotExist take no values"},
			{"selector with the default from", "RelayPool", validPool + "allowedNamespaces: {selector: {matchLabels: {mail: enabled}}}",
				"spec.allowedNamespaces.selector", "allowedNamespaces.selector is only used when from is Selector, but from is Same (the default): set from: Selector, or remove selector"},
			{"selector with from All", "RelayPool", validPool + "allowedNamespaces: {from: All, selector: {matchExpressions: [{key: team, operator: Exists}]}}",
				"spec.allowedNamespaces.selector", "but from is All: set from: Selector, or remove selector"},
			{"from Selector with an empty selector", "RelayPool", validPool + "allowedNamespaces: {from: Selector, selector: {}}",
				"spec.allowedNamespaces.selector", "an empty selector would admit every namespace (say from: All for that)"},
			{"metrics pod selector operator", "RelayPool", validPool + "networkPolicy: {metricsFrom: {podSelector: {matchExpressions: [{key: app, operator: Is, values: [prometheus]}]}}}",
				"spec.networkPolicy.metricsFrom.podSelector", "networkPolicy.metricsFrom.podSelector.matchExpressions operators must be In, NotIn, Exists or DoesNotExist"},
			{"metrics namespace selector operator", "RelayPool", validPool + "networkPolicy: {metricsFrom: {namespaceSelector: {matchExpressions: [{key: team, operator: exists}]}}}",
				"spec.networkPolicy.metricsFrom.namespaceSelector", "networkPolicy.metricsFrom.namespaceSelector.matchExpressions operators must be In, NotIn, Exists or DoesNotExist"},
		})
	})
	t.Run("NamesThatAreIPAddresses", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"hostname an IPv4 address", "RelayPool", "hostname: 192.0.2.25",
				"spec.hostname", "hostname must be a DNS name, not an IP address"},
			{"domain an IPv4 address", "SendingDomain", "domain: 192.0.2.25\npoolRef: {name: p}",
				"spec.domain", "domain must be a DNS name, not an IP address"},
			{"domain with a numeric top-level label", "SendingDomain", "domain: example.123\npoolRef: {name: p}",
				"spec.domain", "domain must be a lowercase DNS name"},
		})
	})
	t.Run("Storage", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"size below 1Mi", "RelayPool", validPool + "storage: {size: 1Ki}",
				"spec.storage.size", "storage.size (1Ki) must be at least 512Mi: the relay keeps 256Mi free as a reserve"},
			{"size below the reserve", "RelayPool", validPool + "storage: {size: 100Mi}",
				"spec.storage.size", "storage.size (100Mi) must be at least 512Mi"},
			{"size zero", "RelayPool", validPool + "storage: {size: '0'}",
				"spec.storage.size", "must be at least 512Mi"},
			{"size negative", "RelayPool", validPool + "storage: {size: -5Gi}",
				"spec.storage.size", "must be at least 512Mi"},
			{"class name with capitals", "RelayPool", validPool + "storage: {storageClassName: Fast}",
				"spec.storage.storageClassName", "storage.storageClassName must be a StorageClass name: lowercase letters, digits, '-' and '.'"},
			{"class name with an underscore", "RelayPool", validPool + "storage: {storageClassName: fast_ssd}",
				"spec.storage.storageClassName", "storage.storageClassName must be a StorageClass name"},
			{"unknown retention", "RelayPool", validPool + "storage: {whenDeleted: Keep}",
				"spec.storage.whenDeleted", `Unsupported value: "Keep": supported values: "Retain", "Delete"`},
		})
	})
	t.Run("RequestsAboveLimits", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"memory", "RelayPool", validPool + "resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}",
				"spec.resources.requests[memory]", "resources.requests.memory must not exceed resources.limits.memory"},
			{"cpu", "RelayPool", validPool + "resources: {requests: {cpu: '2'}, limits: {cpu: 500m}}",
				"spec.resources.requests[cpu]", "resources.requests.cpu must not exceed resources.limits.cpu"},
			{"ephemeral storage", "RelayPool", validPool + "resources: {requests: {ephemeral-storage: 2Gi}, limits: {ephemeral-storage: 1Gi}}",
				"spec.resources.requests[ephemeral-storage]", "resources.requests.ephemeral-storage must not exceed resources.limits.ephemeral-storage"},
		})
	})
	t.Run("ControlCharactersInTXTValues", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"DMARC report address with a trailing newline", "SendingDomain", validDomain + "dmarc: {aggregateReportsTo: [\"mailto:dmarc@example.com\\n\"]}",
				"spec.dmarc.aggregateReportsTo[0]", "dmarc.aggregateReportsTo entries must be mailto: URIs with a lowercase domain"},
			{"DMARC report address with a control character", "SendingDomain", validDomain + "dmarc: {aggregateReportsTo: [\"mailto:dm\\u0001arc@example.com\"]}",
				"spec.dmarc.aggregateReportsTo[0]", "without spaces, control characters, commas, semicolons or !"},
			{"DMARC report address with a tab", "SendingDomain", validDomain + "dmarc: {aggregateReportsTo: [\"mailto:dmarc@example.com\\t\"]}",
				"spec.dmarc.aggregateReportsTo[0]", "without spaces, control characters"},
			{"DMARC report addresses joined by a comma", "SendingDomain", validDomain + "dmarc: {aggregateReportsTo: ['mailto:a@example.com,mailto:b@example.com']}",
				"spec.dmarc.aggregateReportsTo[0]", "commas, semicolons"},
			{"DMARC report address with a tag separator", "SendingDomain", validDomain + "dmarc: {aggregateReportsTo: ['mailto:a@example.com; p=none']}",
				"spec.dmarc.aggregateReportsTo[0]", "commas, semicolons"},
			{"SPF include with a trailing newline", "SendingDomain", validDomain + "spf: {include: [\"_spf.google.com\\n\"]}",
				"spec.spf.include[0]", "spf.include entries must be DNS names such as _spf.google.com"},
			{"SPF include with a space", "SendingDomain", validDomain + "spf: {include: ['_spf.google.com ~all']}",
				"spec.spf.include[0]", "spf.include entries must be DNS names"},
			{"SPF record name with a trailing newline", "SendingDomain", validDomain + "spf: {recordName: \"example.com\\n\"}",
				"spec.spf.recordName", "spf.recordName must be a lowercase DNS name without a trailing dot"},
			{"DKIM selector with a trailing newline", "SendingDomain", validDomain + "dkim: {selector: \"mail2026\\n\"}",
				"spec.dkim.selector", "dkim.selector must be a DNS label"},
			{"domain with a trailing newline", "SendingDomain", "domain: \"example.com\\n\"\npoolRef: {name: p}",
				"spec.domain", "domain must be a lowercase DNS name"},
			{"sending IP with a trailing newline", "RelayPool", validPool + "sendingIPs: [\"203.0.113.10\\n\"]",
				"spec.sendingIPs[0]", "sendingIPs entries must be IPv4 or IPv6 addresses or CIDR ranges"},
			{"allowed sender with a trailing newline", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: [\"noreply@example.com\\n\"]",
				"spec.allowedSenders[0]", "allowedSenders entries must be lowercase domains"},
			{"allowed sender with a CR in the local part", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: [\"no\\rreply@example.com\"]",
				"spec.allowedSenders[0]", "allowedSenders entries must be lowercase domains"},
			{"image with a newline", "RelayPool", validPool + "image: \"ghcr.io/example/relay:v1\\n\"",
				"spec.image", "image must be an image reference such as ghcr.io/example/mailroom-relay:v1.2.3, without spaces or control characters"},
		})
	})
	t.Run("OperatorRunRelayFields", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"PROXY protocol trusting every IPv4 address", "RelayPool", validPool + "proxyProtocol: {trustedCIDRs: [10.0.0.0/16, 0.0.0.0/0]}",
				"spec.proxyProtocol.trustedCIDRs[1]", "proxyProtocol.trustedCIDRs entry 0.0.0.0/0 trusts every address: any client could forge its source address"},
			{"PROXY protocol trusting every IPv6 address", "RelayPool", validPool + "proxyProtocol: {trustedCIDRs: ['::/0']}",
				"spec.proxyProtocol.trustedCIDRs[0]", "proxyProtocol.trustedCIDRs entry ::/0 trusts every address"},
			{"PROXY protocol trusted address without a prefix length", "RelayPool", validPool + "proxyProtocol: {trustedCIDRs: [10.0.0.7]}",
				"spec.proxyProtocol.trustedCIDRs[0]", "proxyProtocol.trustedCIDRs entries must be CIDRs of the load balancers, such as 10.0.0.0/16 (a single address is 10.0.0.7/32)"},
			{"PROXY protocol trusted load balancer by name", "RelayPool", validPool + "proxyProtocol: {trustedCIDRs: [lb.example.com]}",
				"spec.proxyProtocol.trustedCIDRs[0]", "must be CIDRs of the load balancers"},
			{"PROXY protocol without trusted CIDRs", "RelayPool", validPool + "proxyProtocol: {trustedCIDRs: []}",
				"spec.proxyProtocol.trustedCIDRs", "should have at least 1 items"},
			{"source range not a CIDR", "RelayPool", validPool + "service: {loadBalancerSourceRanges: [office]}",
				"spec.service.loadBalancerSourceRanges[0]", "service.loadBalancerSourceRanges entries must be CIDRs such as 198.51.100.0/24"},
			{"source range a bare address", "RelayPool", validPool + "service: {loadBalancerSourceRanges: [198.51.100.7]}",
				"spec.service.loadBalancerSourceRanges[0]", "(a single address is 198.51.100.7/32)"},
			{"source ranges on a NodePort Service", "RelayPool", validPool + "service: {type: NodePort, loadBalancerSourceRanges: [198.51.100.0/24]}",
				"spec.service.loadBalancerSourceRanges", "service.loadBalancerSourceRanges only apply to type LoadBalancer: a NodePort Service would be open to every client"},
			{"annotation key with a space", "RelayPool", validPool + "service: {annotations: {'lb type': nlb}}",
				"spec.service.annotations", "service.annotations keys must be annotation keys"},
			{"annotation key with two slashes", "RelayPool", validPool + "service: {annotations: {'a/b/c': x}}",
				"spec.service.annotations", "service.annotations keys must be annotation keys"},
			{"annotation key prefix with capitals", "RelayPool", validPool + "service: {annotations: {'Example.com/type': x}}",
				"spec.service.annotations", "service.annotations keys must be annotation keys"},
			{"annotation name longer than 63", "RelayPool", validPool + "service: {annotations: {'example.com/" + strings.Repeat("a", 64) + "': x}}",
				"spec.service.annotations", "a name of at most 63"},
			{"unknown Service type", "RelayPool", validPool + "service: {type: ClusterIP}",
				"spec.service.type", `Unsupported value: "ClusterIP": supported values: "LoadBalancer", "NodePort"`},
			{"unknown traffic policy", "RelayPool", validPool + "service: {externalTrafficPolicy: Nearest}",
				"spec.service.externalTrafficPolicy", `Unsupported value: "Nearest"`},
			{"grace period in days", "SMTPCredential", validCredential + "passwordRotation: {gracePeriod: 1d}",
				"spec.passwordRotation.gracePeriod", "passwordRotation.gracePeriod must be a duration such as 24h"},
		})
	})
}

// Pool names become Service, StatefulSet and pod names.
func TestPoolNamesThatCannotNameAService(t *testing.T) {
	ns := newNamespace(t)
	pool := func(name string) *unstructured.Unstructured {
		u := object(t, "RelayPool", ns, validPool)
		u.SetGenerateName("")
		u.SetName(name)
		return u
	}
	for _, name := range []string{
		"1relay",                // a Service name starts with a letter
		"relay.pool",            // no dots in a Service name
		strings.Repeat("r", 41), // <name>-relay and pod names must fit 63
		"relay-",                // ends with a dash
	} {
		t.Run(name, func(t *testing.T) {
			err := create(pool(name))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), "metadata.name of a RelayPool must be a DNS label of at most 40 characters starting with a letter") {
				t.Fatalf("message %q does not say what a pool name must be", err)
			}
		})
	}
	t.Run("40 characters", func(t *testing.T) {
		if err := create(pool(strings.Repeat("r", 40))); err != nil {
			t.Fatalf("refused: %v", err)
		}
	})
	checkRefusals(t, []refusal{
		{"poolRef naming a pool that cannot exist", "SendingDomain", "domain: example.com\npoolRef: {name: relay.pool}",
			"spec.poolRef.name", "poolRef.name must be the name of a RelayPool (lowercase letters, digits and -, starting with a letter)"},
		{"poolRef name too long", "SMTPCredential", "allowedSenders: [example.com]\npoolRef: {name: " + strings.Repeat("r", 41) + "}",
			"spec.poolRef.name", "may not be more than 40 bytes"},
	})
}

// Storage cannot shrink or change class once the StatefulSet exists.
func TestStorageTransitions(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	newPool := func(t *testing.T, storage string) *unstructured.Unstructured {
		t.Helper()
		u := object(t, "RelayPool", ns, validPool+"storage: "+storage)
		if err := create(u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	update := func(u *unstructured.Unstructured, field, value string) error {
		if value == "" {
			unstructured.RemoveNestedField(u.Object, "spec", "storage", field)
		} else if err := unstructured.SetNestedField(u.Object, value, "spec", "storage", field); err != nil {
			return err
		}
		return env.Client.Update(ctx, u, strict)
	}
	refusedUpdates := []struct{ name, storage, field, value, want string }{
		{"size shrunk", "{size: 10Gi}", "size", "5Gi", "storage.size cannot shrink (from 10Gi to 5Gi): a StatefulSet cannot shrink its queue volumes; keep 10Gi or more"},
		{"size shrunk in other units", "{size: 1Gi}", "size", "1000Mi", "storage.size cannot shrink (from 1Gi to 1000Mi)"},
		{"class changed", "{storageClassName: fast}", "storageClassName", "slow", "storage.storageClassName cannot be changed (from fast to slow): a StatefulSet cannot move its queue volumes to another StorageClass"},
		{"class set on a pool using the default class", "{}", "storageClassName", "fast", "storage.storageClassName cannot be changed (from the default StorageClass to fast)"},
		{"class removed", "{storageClassName: fast}", "storageClassName", "", "storage.storageClassName cannot be changed (from fast to the default StorageClass)"},
	}
	for _, tc := range refusedUpdates {
		t.Run(tc.name, func(t *testing.T) {
			u := newPool(t, tc.storage)
			checkRefused(t, update(u, tc.field, tc.value), "spec.storage."+tc.field, tc.want)
		})
	}
	acceptedUpdates := []struct{ name, storage, field, value string }{
		{"size grown", "{size: 5Gi}", "size", "20Gi"},
		{"size rewritten in other units", "{size: 1Gi}", "size", "1024Mi"},
		{"class kept", "{storageClassName: fast}", "storageClassName", "fast"},
		{"empty class for the default class", "{}", "storageClassName", ""},
		{"retention changed", "{}", "whenDeleted", "Delete"},
	}
	for _, tc := range acceptedUpdates {
		t.Run(tc.name, func(t *testing.T) {
			u := newPool(t, tc.storage)
			if tc.field == "storageClassName" && tc.value == "" {
				// "" and an omitted field both mean the default class.
				if err := unstructured.SetNestedField(u.Object, "", "spec", "storage", "storageClassName"); err != nil {
					t.Fatal(err)
				}
				if err := env.Client.Update(ctx, u, strict); err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err := update(u, tc.field, tc.value); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
}

// Class 2: valid input must be accepted. Templates (Helm, kustomize)
// render unset values as "", so every optional field documented as "empty
// means ..." accepts "", and every boundary a message names is accepted.
func TestAcceptedWhenValid(t *testing.T) {
	t.Run("EmptyMeansTheDefault", func(t *testing.T) {
		checkAccepted(t, []acceptance{
			{"DKIM selector", "SendingDomain", validDomain + "dkim: {selector: ''}"},
			{"poolRef namespace of a domain", "SendingDomain", "domain: example.com\npoolRef: {name: transactional, namespace: ''}"},
			{"poolRef namespace of a credential", "SMTPCredential", "poolRef: {name: transactional, namespace: ''}\nallowedSenders: [example.com]"},
			{"SPF record name", "SendingDomain", validDomain + "spf: {recordName: ''}"},
			{"SPF includes", "SendingDomain", validDomain + "spf: {include: []}"},
			{"DMARC report targets", "SendingDomain", validDomain + "dmarc: {aggregateReportsTo: []}"},
			{"verify resolvers", "SendingDomain", validDomain + "dns: {verify: {resolvers: []}}"},
			{"credential Secret name", "SMTPCredential", validCredential + "secretName: ''"},
			{"relay image", "RelayPool", validPool + "image: ''"},
			{"storage class", "RelayPool", validPool + "storage: {storageClassName: ''}"},
			{"TLS Secret name", "RelayPool", validPool + "submission: {tls: {secretName: ''}}"},
			{"smarthost host in Direct mode", "RelayPool", validPool + "delivery: {mode: Direct, smarthost: {host: ''}}"},
			{"empty smarthost in Direct mode", "RelayPool", validPool + "delivery: {smarthost: {}}"},
			{"MX resolvers", "RelayPool", validPool + "delivery: {resolvers: []}"},
			{"sending IPs", "RelayPool", validPool + "sendingIPs: []"},
			{"empty namespace selector with from Same", "RelayPool", validPool + "allowedNamespaces: {from: Same, selector: {}}"},
			{"no Service annotations", "RelayPool", validPool + "service: {annotations: {}}"},
			{"no source ranges on a NodePort Service", "RelayPool", validPool + "service: {type: NodePort, loadBalancerSourceRanges: []}"},
			{"empty metrics selectors", "RelayPool", validPool + "networkPolicy: {metricsFrom: {namespaceSelector: {}, podSelector: {}}}"},
		})
	})
	t.Run("BoundariesTheMessagesName", func(t *testing.T) {
		checkAccepted(t, []acceptance{
			{"message size 1Gi", "RelayPool", validPool + "submission: {maxMessageSize: 1Gi}"},
			{"message size 1Ki", "RelayPool", validPool + "submission: {maxMessageSize: 1Ki}"},
			{"message size as a quoted byte count", "RelayPool", validPool + "submission: {maxMessageSize: '26214400'}"},
			{"1 recipient", "RelayPool", validPool + "submission: {maxRecipients: 1}"},
			{"10000 recipients", "RelayPool", validPool + "submission: {maxRecipients: 10000}"},
			{"ports 1 and 65535", "RelayPool", validPool + "submission: {starttlsPort: 1, implicitTLSPort: 65535}"},
			{"ports next to the relay's own", "RelayPool", validPool + "submission: {starttlsPort: 8079, implicitTLSPort: 8444}"},
			{"1 connection per domain", "RelayPool", validPool + "delivery: {maxConnectionsPerDomain: 1}"},
			{"1000 connections per domain", "RelayPool", validPool + "delivery: {maxConnectionsPerDomain: 1000}"},
			{"smarthost port 65535", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {host: smtp.example.net, port: 65535}}"},
			{"storage 512Mi", "RelayPool", validPool + "storage: {size: 512Mi}"},
			{"requests equal to limits", "RelayPool", validPool + "resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {cpu: 500m, memory: 1Gi}}"},
			{"requests below limits in other units", "RelayPool", validPool + "resources: {requests: {cpu: '0.5', memory: 1000Mi}, limits: {cpu: '1', memory: 1Gi}}"},
			{"resolver ports 1 and 65535", "RelayPool", validPool + "delivery: {resolvers: ['10.0.0.10:1', '[fd00::10]:65535', '255.255.255.255']}"},
			{"sending range /16", "RelayPool", validPool + "sendingIPs: [198.51.0.0/16]"},
			{"sending range /32 of IPv6", "RelayPool", validPool + "sendingIPs: ['2001:db8::/32']"},
			{"maxAge just above the first step", "RelayPool", validPool + "delivery: {retry: {schedule: [1h], maxAge: 61m, delayWarningAfter: 1h}}"},
			{"delay warning just below maxAge", "RelayPool", validPool + "delivery: {retry: {maxAge: 4h1m}}"},
			{"delay warning 0s", "RelayPool", validPool + "delivery: {retry: {maxAge: 1h, delayWarningAfter: 0s}}"},
			{"delay warnings off with a short maxAge", "RelayPool", validPool + "delivery: {retry: {maxAge: 30m, delayWarningAfter: '0'}}"},
			{"TTL 30", "SendingDomain", validDomain + "dns: {ttl: 30}"},
			{"TTL 86400", "SendingDomain", validDomain + "dns: {ttl: 86400}"},
			{"DMARC percent 0", "SendingDomain", validDomain + "dmarc: {percent: 0}"},
			{"DMARC percent 100", "SendingDomain", validDomain + "dmarc: {percent: 100}"},
			{"verify interval 1s", "SendingDomain", validDomain + "dns: {verify: {interval: 1s}}"},
			{"overlap 120h", "SendingDomain", validDomain + "dkim: {rotation: {overlap: 120h}}"},
			{"interval 168h with overlap 120h", "SendingDomain", validDomain + "dkim: {rotation: {interval: 168h, overlap: 120h}}"},
			{"interval just longer than the default overlap", "SendingDomain", validDomain + "dkim: {rotation: {interval: 169h}}"},
			{"grace period 0", "SMTPCredential", validCredential + "passwordRotation: {gracePeriod: '0'}"},
		})
	})
	t.Run("OtherValidObjects", func(t *testing.T) {
		checkAccepted(t, []acceptance{
			{"Ed25519 with explicit selector", "SendingDomain", validDomain + "dkim: {algorithm: Ed25519, selector: mail2026}"},
			{"SPF on a bounce subdomain", "SendingDomain", validDomain + "spf: {recordName: bounce.example.com, include: [_spf.google.com, example.com], policy: Fail}"},
			{"internationalized domain in xn-- form", "SendingDomain", "domain: xn--mnchen-3ya.de\npoolRef: {name: transactional}"},
			{"resolvers with and without ports", "SendingDomain", validDomain + "dns: {verify: {resolvers: [10.0.0.10, '10.0.0.10:5353', 'fd00::10', '[fd00::10]:53']}}"},
			{"DMARC report targets", "SendingDomain", validDomain + "dmarc: {aggregateReportsTo: ['mailto:dmarc@example.com', 'mailto:dmarc+eu@reports.example.net']}"},
			{"smarthost with credentials", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {host: email-smtp.eu-west-1.amazonaws.com, port: 465, tls: Implicit, credentialsSecretRef: {name: ses}}}"},
			{"smarthost by IP address", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {host: 192.0.2.50}}"},
			{"scaled to zero", "RelayPool", validPool + "replicas: 0"},
			{"delay warnings off", "RelayPool", validPool + "delivery: {retry: {delayWarningAfter: '0', schedule: [30s]}}"},
			{"namespace selector", "RelayPool", validPool + "allowedNamespaces: {from: Selector, selector: {matchLabels: {mail: enabled}}}"},
			{"namespace selector by expressions", "RelayPool", validPool + "allowedNamespaces: {from: Selector, selector: {matchExpressions: [{key: team, operator: In, values: [shop]}, {key: legacy, operator: DoesNotExist}]}}"},
			{"IPv6 and CIDR sending addresses", "RelayPool", validPool + "sendingIPs: ['2001:db8::25', 203.0.113.0/28]"},
			{"external Service behind a PROXY-protocol load balancer", "RelayPool", validPool + `
service:
  type: LoadBalancer
  annotations: {service.beta.kubernetes.io/aws-load-balancer-type: nlb, example.com/owner: mail-team, team: mail}
  externalTrafficPolicy: Local
  loadBalancerSourceRanges: [198.51.100.0/24, '2001:db8::/48']
proxyProtocol: {trustedCIDRs: [10.0.0.0/16, 10.1.2.3/32]}
networkPolicy:
  enabled: true
  metricsFrom: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}, podSelector: {matchExpressions: [{key: app, operator: In, values: [prometheus]}]}}
storage: {size: 20Gi, storageClassName: fast-ssd, whenDeleted: Delete}
`},
			{"NodePort Service", "RelayPool", validPool + "service: {type: NodePort, externalTrafficPolicy: Cluster}"},
			{"address and domain senders with limits", "SMTPCredential", validCredential + "allowedSenders: [example.com, noreply@shop.example.com, billing+eu@example.com, first.last@example.com, O-Ops@example.com]\nlimits: {messagesPerMinute: 60, messagesPerDay: 10000, recipientsPerMessage: 10}\nsuspended: true"},
			{"password grace period", "SMTPCredential", validCredential + "passwordRotation: {gracePeriod: 72h}"},
		})
	})
}
