package v1alpha1_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Class 3: a refusal says what to fix, on the field to change.
func TestMessagesSayWhatToFix(t *testing.T) {
	// A rule over a list names the entry at fault, not the whole list.
	t.Run("ListRulesNameTheEntry", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"third allowed sender", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: [example.com, shop.example.com, '*@example.com']",
				"spec.allowedSenders[2]", "allowedSenders entries are literal, not patterns"},
			{"second sending IP", "RelayPool", validPool + "sendingIPs: [203.0.113.10, mail.example.com]",
				"spec.sendingIPs[1]", "sendingIPs entries must be IPv4 or IPv6 addresses or CIDR ranges, e.g. 203.0.113.10 or 203.0.113.0/28, not host names"},
			{"second SPF include", "SendingDomain", validDomain + "spf: {include: [_spf.google.com, 'include:spf.protection.outlook.com']}",
				"spec.spf.include[1]", "spf.include entries must be DNS names such as _spf.google.com, without include:"},
			{"second DMARC report target", "SendingDomain", validDomain + "dmarc: {aggregateReportsTo: ['mailto:dmarc@example.com', 'dmarc@example.com']}",
				"spec.dmarc.aggregateReportsTo[1]", "dmarc.aggregateReportsTo entries must be mailto: URIs such as mailto:dmarc@example.com"},
			{"third MX resolver", "RelayPool", validPool + "delivery: {resolvers: [10.0.0.10, '10.0.0.11:53', resolver.local]}",
				"spec.delivery.resolvers[2]", "delivery.resolvers entries must be IP addresses"},
			{"second verify resolver", "SendingDomain", validDomain + "dns: {verify: {resolvers: [10.0.0.10, dns.google]}}",
				"spec.dns.verify.resolvers[1]", "dns.verify.resolvers entries must be IP addresses"},
			{"second retry step", "RelayPool", validPool + "delivery: {retry: {schedule: [1m, 5 minutes]}}",
				"spec.delivery.retry.schedule[1]", "delivery.retry.schedule entries must be positive durations such as 5m or 1h"},
			{"second trusted CIDR", "RelayPool", validPool + "proxyProtocol: {trustedCIDRs: [10.0.0.0/16, lb]}",
				"spec.proxyProtocol.trustedCIDRs[1]", "proxyProtocol.trustedCIDRs entries must be CIDRs"},
			{"second source range", "RelayPool", validPool + "service: {loadBalancerSourceRanges: [198.51.100.0/24, office]}",
				"spec.service.loadBalancerSourceRanges[1]", "must be CIDRs"},
		})
	})

	// A rule across fields is reported on the field to change and shows
	// the values involved, defaults included.
	t.Run("CrossFieldRulesShowTheValues", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"interval against the default overlap", "SendingDomain", validDomain + "dkim: {rotation: {interval: 168h}}",
				"spec.dkim.rotation.interval", "dkim.rotation.interval (168h) must be longer than overlap (168h, the default)"},
			{"overlap against the interval", "SendingDomain", validDomain + "dkim: {rotation: {interval: 300h, overlap: 400h}}",
				"spec.dkim.rotation.overlap", "dkim.rotation.overlap (400h) must be shorter than interval (300h)"},
			{"overlap against the default interval", "SendingDomain", validDomain + "dkim: {rotation: {overlap: 3000h}}",
				"spec.dkim.rotation.overlap", "dkim.rotation.overlap (3000h) must be shorter than interval (2160h, the default)"},
			{"maxAge against the default schedule", "RelayPool", validPool + "delivery: {retry: {maxAge: 45s}}",
				"spec.delivery.retry.maxAge", "delivery.retry.maxAge (45s) must be longer than the first retry step (1m of the default schedule)"},
			{"delay warning against the default maxAge", "RelayPool", validPool + "delivery: {retry: {delayWarningAfter: 200h}}",
				"spec.delivery.retry.delayWarningAfter", "delivery.retry.delayWarningAfter (200h) must be shorter than maxAge (120h, the default)"},
			{"implicit TLS port against the default STARTTLS port", "RelayPool", validPool + "submission: {implicitTLSPort: 587}",
				"spec.submission.implicitTLSPort", "submission.implicitTLSPort (587) must differ from submission.starttlsPort (587, the default)"},
			{"STARTTLS port against the default implicit TLS port", "RelayPool", validPool + "submission: {starttlsPort: 465}",
				"spec.submission.starttlsPort", "submission.starttlsPort (465) must differ from submission.implicitTLSPort (465, the default)"},
			{"both ports set to the same", "RelayPool", validPool + "submission: {starttlsPort: 2525, implicitTLSPort: 2525}",
				"spec.submission.implicitTLSPort", "submission.implicitTLSPort must differ from submission.starttlsPort: both are set to the same port"},
			{"SPF record name outside the domain", "SendingDomain", validDomain + "spf: {recordName: example.org}",
				"spec.spf.recordName", "spf.recordName (example.org) must be the domain itself (example.com) or a name under it, e.g. bounce.example.com"},
			{"smarthost mode without a host", "RelayPool", validPool + "delivery: {mode: Smarthost}",
				"spec.delivery.smarthost.host", "delivery.smarthost.host is required when delivery.mode is Smarthost"},
			{"smarthost mode with an empty host", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {host: '', port: 587}}",
				"spec.delivery.smarthost.host", "delivery.smarthost.host is required when delivery.mode is Smarthost"},
			{"credentials over opportunistic TLS", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {host: smtp.example.net, tls: Opportunistic, credentialsSecretRef: {name: up}}}",
				"spec.delivery.smarthost.tls", "delivery.smarthost.tls cannot be Opportunistic when credentialsSecretRef is set: credentials are never sent in cleartext"},
			{"namespace selector missing", "RelayPool", validPool + "allowedNamespaces: {from: Selector}",
				"spec.allowedNamespaces.selector", "allowedNamespaces.selector is required when from is Selector, e.g. {matchLabels: {mail: enabled}}"},
		})
	})

	// Internationalized names get the hint to use their xn-- form.
	t.Run("UnicodeNamesGetTheXNHint", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"domain", "SendingDomain", "domain: münchen.de\npoolRef: {name: p}",
				"spec.domain", "domain must be ASCII: write an internationalized domain in its xn-- (punycode) form, e.g. xn--mnchen-3ya.de"},
			{"hostname", "RelayPool", "hostname: relay.münchen.de",
				"spec.hostname", "hostname must be ASCII: write an internationalized name in its xn-- (punycode) form"},
			{"allowed sender", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: [noreply@münchen.de]",
				"spec.allowedSenders[0]", "allowedSenders entries must be ASCII: write an internationalized domain in its xn-- (punycode) form"},
			{"SPF include", "SendingDomain", validDomain + "spf: {include: [_spf.bücher.example]}",
				"spec.spf.include[0]", "spf.include entries must be ASCII: write an internationalized name in its xn-- (punycode) form"},
			{"SPF record name", "SendingDomain", validDomain + "spf: {recordName: bounce.bücher.example}",
				"spec.spf.recordName", "spf.recordName must be ASCII: write an internationalized name in its xn-- (punycode) form"},
			{"DMARC report target", "SendingDomain", validDomain + "dmarc: {aggregateReportsTo: ['mailto:dmarc@bücher.example']}",
				"spec.dmarc.aggregateReportsTo[0]", "dmarc.aggregateReportsTo entries must be ASCII: write the domain in its xn-- (punycode) form"},
			{"smarthost", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {host: smtp.bücher.example}}",
				"spec.delivery.smarthost.host", "delivery.smarthost.host must be ASCII: write an internationalized name in its xn-- (punycode) form"},
		})
	})

	// A value of the wrong type names the field; its description (kubectl
	// explain) shows the expected form.
	t.Run("TypeErrorsNameTheField", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"TTL as a duration", "SendingDomain", validDomain + "dns: {ttl: 5m}",
				"spec.dns.ttl", "must be of type integer"},
			{"quoted port", "RelayPool", validPool + "submission: {starttlsPort: '587'}",
				"spec.submission.starttlsPort", "must be of type integer"},
			{"message size as a bare number", "RelayPool", validPool + "submission: {maxMessageSize: 26214400}",
				"spec.submission.maxMessageSize", "must be of type string"},
			{"maxAge as a bare number", "RelayPool", validPool + "delivery: {retry: {maxAge: 120}}",
				"spec.delivery.retry.maxAge", "must be of type string"},
			{"delay warning off as a bare 0", "RelayPool", validPool + "delivery: {retry: {delayWarningAfter: 0}}",
				"spec.delivery.retry.delayWarningAfter", "must be of type string"},
			{"retry step as a bare number", "RelayPool", validPool + "delivery: {retry: {schedule: [60]}}",
				"spec.delivery.retry.schedule[0]", "must be of type string"},
			{"DMARC percent quoted", "SendingDomain", validDomain + "dmarc: {percent: '50'}",
				"spec.dmarc.percent", "must be of type integer"},
			{"rotation interval as a bare number", "SendingDomain", validDomain + "dkim: {rotation: {interval: 2160}}",
				"spec.dkim.rotation.interval", "must be of type string"},
			{"rate limit quoted", "SMTPCredential", validCredential + "limits: {messagesPerMinute: '60'}",
				"spec.limits.messagesPerMinute", "must be of type integer"},
			{"suspended as a string", "SMTPCredential", validCredential + "suspended: 'yes'",
				"spec.suspended", "must be of type boolean"},
		})
	})

	// One mistake gets one error: a value refused by the schema is not
	// refused again by a rule, and one wrong field does not trip the rules
	// that compare it with others. (checkRefusals counts the errors of
	// every case; these are the cases most likely to double.)
	t.Run("OneMistakeOneError", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"negative replicas", "RelayPool", validPool + "replicas: -1", ".spec.replicas", "should be a non-negative integer"},
			{"empty hostname", "RelayPool", "hostname: ''", "spec.hostname", "hostname is required: the DNS name of the relays, e.g. relay.example.com"},
			{"hostname too long", "RelayPool", "hostname: " + strings.Repeat("a.", 127) + "com", "spec.hostname", "may not be more than 253 bytes"},
			{"empty domain", "SendingDomain", "domain: ''\npoolRef: {name: p}", "spec.domain", "domain is required: the mail domain, e.g. example.com"},
			{"empty pool name", "SendingDomain", "domain: example.com\npoolRef: {name: ''}", "spec.poolRef.name", "poolRef.name is required: the name of the RelayPool"},
			{"maxAge below the first step and the delay warning", "RelayPool", validPool + "delivery: {retry: {maxAge: 30s}}", "spec.delivery.retry.maxAge", "must be longer than the first retry step"},
			{"maxAge not a duration", "RelayPool", validPool + "delivery: {retry: {maxAge: 5d}}", "spec.delivery.retry.maxAge", "delivery.retry.maxAge must be a positive duration such as 120h"},
			{"interval too short and below the overlap", "SendingDomain", validDomain + "dkim: {rotation: {interval: 1s}}", "spec.dkim.rotation.interval", "must be at least 168h"},
			{"overlap too short and not below the interval", "SendingDomain", validDomain + "dkim: {rotation: {overlap: 1h}}", "spec.dkim.rotation.overlap", "dkim.rotation.overlap (1h) must be at least 120h"},
			{"unknown enum value", "SendingDomain", validDomain + "dkim: {algorithm: RSA1024}", "spec.dkim.algorithm", `Unsupported value: "RSA1024": supported values: "RSA2048", "RSA3072", "RSA4096", "Ed25519"`},
			{"port out of range", "RelayPool", validPool + "submission: {starttlsPort: 70000}", "spec.submission.starttlsPort", "submission.starttlsPort must be a port between 1 and 65535"},
			{"size zero of the retry schedule", "RelayPool", validPool + "delivery: {retry: {schedule: []}}", "spec.delivery.retry.schedule", "delivery.retry.schedule needs at least one step"},
		})
	})
}

// Field formats that were already checked before issue 11, one invalid
// value per case.
func TestMalformedValuesAreRefused(t *testing.T) {
	checkRefusals(t, []refusal{
		// SendingDomain
		{"uppercase domain", "SendingDomain", "domain: Example.com\npoolRef: {name: p}", "spec.domain", "domain must be a lowercase DNS name"},
		{"domain with trailing dot", "SendingDomain", "domain: example.com.\npoolRef: {name: p}", "spec.domain", "domain must be a lowercase DNS name with at least two labels and no trailing dot"},
		{"single-label domain", "SendingDomain", "domain: localhost\npoolRef: {name: p}", "spec.domain", "domain must be a lowercase DNS name with at least two labels"},
		{"domain with a space", "SendingDomain", "domain: exa mple.com\npoolRef: {name: p}", "spec.domain", "domain must be a lowercase DNS name"},
		{"missing domain", "SendingDomain", "poolRef: {name: p}", "spec.domain", "Required value"},
		{"missing poolRef", "SendingDomain", "domain: example.com", "spec.poolRef", "Required value"},
		{"poolRef name with capitals", "SendingDomain", "domain: example.com\npoolRef: {name: Pool1}", "spec.poolRef.name", "poolRef.name must be the name of a RelayPool"},
		{"poolRef name with an underscore", "SendingDomain", "domain: example.com\npoolRef: {name: pool_1}", "spec.poolRef.name", "poolRef.name must be the name of a RelayPool"},
		{"poolRef namespace not a name", "SendingDomain", "domain: example.com\npoolRef: {name: p, namespace: Mail}", "spec.poolRef.namespace", "poolRef.namespace must be a namespace name"},
		{"selector with a dot", "SendingDomain", validDomain + "dkim: {selector: mr.2026}", "spec.dkim.selector", "dkim.selector must be a DNS label"},
		{"selector starting with a dash", "SendingDomain", validDomain + "dkim: {selector: -mr}", "spec.dkim.selector", "dkim.selector must be a DNS label"},
		{"rotation interval in days", "SendingDomain", validDomain + "dkim: {rotation: {interval: 90d}}", "spec.dkim.rotation.interval", "dkim.rotation.interval must be a positive duration such as 2160h (units: h, m, s; no d)"},
		{"overlap in words", "SendingDomain", validDomain + "dkim: {rotation: {overlap: a week}}", "spec.dkim.rotation.overlap", "dkim.rotation.overlap must be a duration such as 168h"},
		{"overlap empty", "SendingDomain", validDomain + "dkim: {rotation: {overlap: ''}}", "spec.dkim.rotation.overlap", "dkim.rotation.overlap must be a duration such as 168h"},
		{"DMARC percent over 100", "SendingDomain", validDomain + "dmarc: {percent: 101}", "spec.dmarc.percent", "dmarc.percent must be between 0 and 100"},
		{"DMARC percent negative", "SendingDomain", validDomain + "dmarc: {percent: -1}", "spec.dmarc.percent", "dmarc.percent must be between 0 and 100"},
		{"DMARC report target without mailto", "SendingDomain", validDomain + "dmarc: {aggregateReportsTo: [dmarc@example.com]}", "spec.dmarc.aggregateReportsTo[0]", "dmarc.aggregateReportsTo entries must be mailto: URIs"},
		{"DMARC report target https", "SendingDomain", validDomain + "dmarc: {aggregateReportsTo: ['https://example.com/dmarc']}", "spec.dmarc.aggregateReportsTo[0]", "dmarc.aggregateReportsTo entries must be mailto: URIs"},
		{"DMARC unknown policy", "SendingDomain", validDomain + "dmarc: {policy: block}", "spec.dmarc.policy", `Unsupported value: "block"`},
		{"DMARC alignment unknown", "SendingDomain", validDomain + "dmarc: {alignment: {dkim: loose}}", "spec.dmarc.alignment.dkim", `Unsupported value: "loose": supported values: "relaxed", "strict"`},
		{"SPF unknown policy", "SendingDomain", validDomain + "spf: {policy: HardFail}", "spec.spf.policy", `Unsupported value: "HardFail": supported values: "SoftFail", "Fail", "Neutral"`},
		{"SPF include with mechanism prefix", "SendingDomain", validDomain + "spf: {include: ['include:_spf.google.com']}", "spec.spf.include[0]", "spf.include entries must be DNS names such as _spf.google.com, without include:"},
		{"SPF include with a trailing dot", "SendingDomain", validDomain + "spf: {include: [_spf.google.com.]}", "spec.spf.include[0]", "without a trailing dot"},
		{"TTL too short", "SendingDomain", validDomain + "dns: {ttl: 29}", "spec.dns.ttl", "dns.ttl must be between 30 and 86400 seconds"},
		{"TTL too long", "SendingDomain", validDomain + "dns: {ttl: 86401}", "spec.dns.ttl", "dns.ttl must be between 30 and 86400 seconds"},
		{"unknown TXT encoding", "SendingDomain", validDomain + "dns: {txtEncoding: Chunked}", "spec.dns.txtEncoding", `Unsupported value: "Chunked": supported values: "Split", "Single"`},
		{"resolver given by name", "SendingDomain", validDomain + "dns: {verify: {resolvers: [dns.google]}}", "spec.dns.verify.resolvers[0]", "dns.verify.resolvers entries must be IP addresses, optionally with a port"},
		{"IPv6 resolver port without brackets", "SendingDomain", validDomain + "dns: {verify: {resolvers: ['fd00::1:53:x']}}", "spec.dns.verify.resolvers[0]", "dns.verify.resolvers entries must be IP addresses"},
		{"verify interval in words", "SendingDomain", validDomain + "dns: {verify: {interval: 10 minutes}}", "spec.dns.verify.interval", "dns.verify.interval must be a duration of at least 1s"},
		{"verify interval below 1s", "SendingDomain", validDomain + "dns: {verify: {interval: 999ms}}", "spec.dns.verify.interval", "dns.verify.interval must be a duration of at least 1s"},

		// RelayPool
		{"missing hostname", "RelayPool", "replicas: 1", "spec.hostname", "Required value"},
		{"hostname not a DNS name", "RelayPool", "hostname: Relay_Host", "spec.hostname", "hostname must be a lowercase fully qualified DNS name"},
		{"hostname of one label", "RelayPool", "hostname: relay", "spec.hostname", "hostname must be a lowercase fully qualified DNS name"},
		{"implicit TLS port zero", "RelayPool", validPool + "submission: {implicitTLSPort: 0}", "spec.submission.implicitTLSPort", "submission.implicitTLSPort must be a port between 1 and 65535"},
		{"message size not a quantity", "RelayPool", validPool + "submission: {maxMessageSize: huge}", "spec.submission.maxMessageSize", "submission.maxMessageSize must be a quantity between 1Ki and 1Gi (both included)"},
		{"message size too large", "RelayPool", validPool + "submission: {maxMessageSize: 1025Mi}", "spec.submission.maxMessageSize", "submission.maxMessageSize must be a quantity between 1Ki and 1Gi"},
		{"message size too small", "RelayPool", validPool + "submission: {maxMessageSize: '1023'}", "spec.submission.maxMessageSize", "submission.maxMessageSize must be a quantity between 1Ki and 1Gi"},
		{"zero recipients", "RelayPool", validPool + "submission: {maxRecipients: 0}", "spec.submission.maxRecipients", "submission.maxRecipients must be between 1 and 10000"},
		{"too many recipients", "RelayPool", validPool + "submission: {maxRecipients: 10001}", "spec.submission.maxRecipients", "submission.maxRecipients must be between 1 and 10000"},
		{"TLS secret name not a name", "RelayPool", validPool + "submission: {tls: {secretName: My_Cert}}", "spec.submission.tls.secretName", "submission.tls.secretName must be a Secret name"},
		{"smarthost host with port", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {host: 'smtp.example.net:587'}}", "spec.delivery.smarthost.host", "delivery.smarthost.host must be a host name or an IP address, without a port"},
		{"smarthost port zero", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {host: smtp.example.net, port: 0}}", "spec.delivery.smarthost.port", "delivery.smarthost.port must be a port between 1 and 65535"},
		{"credentials secret not a name", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {host: smtp.example.net, credentialsSecretRef: {name: Up_Stream}}}", "spec.delivery.smarthost.credentialsSecretRef.name", "secret names must be lowercase letters, digits"},
		{"unknown delivery mode", "RelayPool", validPool + "delivery: {mode: Relay}", "spec.delivery.mode", `Unsupported value: "Relay": supported values: "Direct", "Smarthost"`},
		{"unknown smarthost TLS", "RelayPool", validPool + "delivery: {mode: Smarthost, smarthost: {host: smtp.example.net, tls: None}}", "spec.delivery.smarthost.tls", `Unsupported value: "None"`},
		{"retry step zero", "RelayPool", validPool + "delivery: {retry: {schedule: [0s]}}", "spec.delivery.retry.schedule[0]", "delivery.retry.schedule entries must be positive durations"},
		{"retry max age in days", "RelayPool", validPool + "delivery: {retry: {maxAge: 5d}}", "spec.delivery.retry.maxAge", "delivery.retry.maxAge must be a positive duration such as 120h"},
		{"retry max age empty", "RelayPool", validPool + "delivery: {retry: {maxAge: ''}}", "spec.delivery.retry.maxAge", "delivery.retry.maxAge must be a positive duration such as 120h"},
		{"delay warning not a duration", "RelayPool", validPool + "delivery: {retry: {delayWarningAfter: soon}}", "spec.delivery.retry.delayWarningAfter", "delivery.retry.delayWarningAfter must be a duration such as 4h, or 0 to disable"},
		{"zero connections per domain", "RelayPool", validPool + "delivery: {maxConnectionsPerDomain: 0}", "spec.delivery.maxConnectionsPerDomain", "delivery.maxConnectionsPerDomain must be between 1 and 1000"},
		{"MX resolver by name", "RelayPool", validPool + "delivery: {resolvers: [resolver.local]}", "spec.delivery.resolvers[0]", "delivery.resolvers entries must be IP addresses"},
		{"storage size not a quantity", "RelayPool", validPool + "storage: {size: lots}", "spec.storage.size", "storage.size must be a Kubernetes quantity such as 5Gi or 512Mi"},
		{"sending IP not an address", "RelayPool", validPool + "sendingIPs: [mail.example.com]", "spec.sendingIPs[0]", "sendingIPs entries must be IPv4 or IPv6 addresses or CIDR ranges"},
		{"unknown namespaces from", "RelayPool", validPool + "allowedNamespaces: {from: Cluster}", "spec.allowedNamespaces.from", `Unsupported value: "Cluster": supported values: "Same", "All", "Selector"`},
		{"image with a space", "RelayPool", validPool + "image: 'ghcr.io/example/relay v1'", "spec.image", "image must be an image reference"},

		// SMTPCredential
		{"no allowed senders", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: []", "spec.allowedSenders", "allowedSenders needs at least one domain"},
		{"allowed senders missing", "SMTPCredential", "poolRef: {name: p}", "spec.allowedSenders", "Required value"},
		{"allowed sender uppercase domain", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: [Example.COM]", "spec.allowedSenders[0]", "allowedSenders entries must be lowercase domains"},
		{"allowed sender with two @", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: ['a@b@example.com']", "spec.allowedSenders[0]", "allowedSenders entries must be lowercase domains"},
		{"allowed sender with a space", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: ['no reply@example.com']", "spec.allowedSenders[0]", "allowedSenders entries must be lowercase domains"},
		{"secret name not a name", "SMTPCredential", validCredential + "secretName: Shop_SMTP", "spec.secretName", "secretName must be a Secret name"},
		{"negative rate limit", "SMTPCredential", validCredential + "limits: {messagesPerMinute: -5}", "spec.limits.messagesPerMinute", "limits.messagesPerMinute must be 0 (no limit) or more"},
		{"negative daily limit", "SMTPCredential", validCredential + "limits: {messagesPerDay: -1}", "spec.limits.messagesPerDay", "limits.messagesPerDay must be 0 (no limit) or more"},
		{"negative recipients limit", "SMTPCredential", validCredential + "limits: {recipientsPerMessage: -1}", "spec.limits.recipientsPerMessage", "limits.recipientsPerMessage must be 0 (pool default) or more"},
		{"missing poolRef on credential", "SMTPCredential", "allowedSenders: [example.com]", "spec.poolRef", "Required value"},
	})
}

// Unknown fields are refused, as kubectl's default (Strict) field
// validation reports them: a misspelt field must not be silently dropped.
func TestUnknownFieldsAreRefused(t *testing.T) {
	ns := newNamespace(t)
	cases := []struct{ name, kind, spec, want string }{
		{"misspelt port", "RelayPool", validPool + "submission: {starttlsport: 2587}", `unknown field "spec.submission.starttlsport"`},
		{"field at the wrong level", "RelayPool", validPool + "maxAge: 48h", `unknown field "spec.maxAge"`},
		{"singular allowedSender", "SMTPCredential", "poolRef: {name: p}\nallowedSenders: [example.com]\nallowedSender: shop.example.com", `unknown field "spec.allowedSender"`},
		{"misspelt rotation", "SendingDomain", validDomain + "dkim: {rotaton: {interval: 2160h}}", `unknown field "spec.dkim.rotaton"`},
		{"DMARC field from the record syntax", "SendingDomain", validDomain + "dmarc: {rua: ['mailto:d@example.com']}", `unknown field "spec.dmarc.rua"`},
		{"misspelt selector field", "RelayPool", validPool + "allowedNamespaces: {from: Selector, selector: {matchLabel: {a: b}}}", `unknown field "spec.allowedNamespaces.selector.matchLabel"`},
		{"misspelt trusted CIDRs", "RelayPool", validPool + "proxyProtocol: {trustedCidrs: [10.0.0.0/16]}", `unknown field "spec.proxyProtocol.trustedCidrs"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := create(object(t, tc.kind, ns, tc.spec))
			if err == nil {
				t.Fatalf("accepted; want a refusal saying %s", tc.want)
			}
			if !apierrors.IsBadRequest(err) && !apierrors.IsInvalid(err) {
				t.Fatalf("refused as %v: %v", apierrors.ReasonForError(err), err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("message %q\ndoes not say %s", err, tc.want)
			}
		})
	}
}

// Fields whose values have a form a type alone does not tell (durations,
// quantities, TTLs in seconds, quoted numbers) show that form in their
// description, which kubectl explain prints and which a type error points
// at.
func TestDescriptionsShowTheExpectedForm(t *testing.T) {
	want := map[string]map[string][]string{
		"relaypools.mailroom.io": {
			"spec.replicas":                         {"an integer such as 2 (not quoted)"},
			"spec.storage.size":                     {`quantity string`, `"5Gi"`, "at least 512Mi"},
			"spec.submission.starttlsPort":          {"an integer such as", "8080", "8081", "8443"},
			"spec.submission.implicitTLSPort":       {"an integer such as"},
			"spec.submission.maxMessageSize":        {`quantity string`, `"25Mi"`, `quoted: "26214400"`},
			"spec.submission.maxRecipients":         {"integer from 1 to 10000"},
			"spec.delivery.retry.schedule":          {`["1m", "5m", "1h"]`, "no d"},
			"spec.delivery.retry.maxAge":            {`Go duration string such as "120h"`, "no d"},
			"spec.delivery.retry.delayWarningAfter": {`Go duration string`, `"4h"`, `"0" (quoted)`},
			"spec.delivery.maxConnectionsPerDomain": {"integer from 1 to 1000"},
			"spec.delivery.resolvers":               {`"ip:port"`, `"10.0.0.10:53"`},
			"spec.delivery.smarthost.port":          {"an integer such as 587"},
			"spec.sendingIPs":                       {`"203.0.113.10"`, "/16"},
			"spec.proxyProtocol.trustedCIDRs":       {`"10.0.0.0/16"`},
			"spec.service.loadBalancerSourceRanges": {`"198.51.100.0/24"`},
			"spec.service.annotations":              {"annotation keys"},
			"spec.storage.storageClassName":         {"cannot be", "changed"},
			"spec.allowedNamespaces.selector":       {"matchLabels"},
			"spec.hostname":                         {"xn--"},
		},
		"sendingdomains.mailroom.io": {
			"spec.domain":                 {"xn--"},
			"spec.dkim.rotation.interval": {`Go duration string`, `"2160h"`, `"168h"`},
			"spec.dkim.rotation.overlap":  {`Go duration string`, `"168h"`, `"120h"`},
			"spec.dns.ttl":                {"in seconds", "an integer", `not a duration like "5m"`},
			"spec.dns.verify.interval":    {`Go duration`, `"10m"`},
			"spec.dns.verify.resolvers":   {`"[ipv6]:port"`},
			"spec.dmarc.percent":          {"integer from 0 to 100"},
			"spec.spf.include":            {"not IP addresses"},
		},
		"smtpcredentials.mailroom.io": {
			"spec.passwordRotation.gracePeriod": {`Go`, `duration string such as "24h"`, `"0" (quoted)`},
			"spec.limits":                       {"an integer (not quoted)"},
			"spec.allowedSenders":               {"no patterns", "xn--"},
		},
	}
	for crdName, fields := range want {
		schema := crdSchema(t, crdName)
		for path, parts := range fields {
			desc := describe(t, schema, path)
			flat := strings.Join(strings.Fields(desc), " ")
			for _, p := range parts {
				if !strings.Contains(flat, p) {
					t.Errorf("%s %s: description does not show %q:\n%s", crdName, path, p, flat)
				}
			}
		}
	}
}

func crdSchema(t *testing.T, name string) map[string]any {
	t.Helper()
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, crd); err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	schema, _, _ := unstructured.NestedMap(versions[0].(map[string]any), "schema", "openAPIV3Schema")
	return schema
}

// describe returns the description of the field at a dotted path.
func describe(t *testing.T, schema map[string]any, path string) string {
	t.Helper()
	s := schema
	for _, f := range strings.Split(path, ".") {
		next, ok, _ := unstructured.NestedMap(s, "properties", f)
		if !ok {
			t.Fatalf("no field %s in the schema", path)
		}
		s = next
	}
	d, _ := s["description"].(string)
	return d
}

// A quoted replicas count is refused by the schema on spec.replicas; the
// scale subresource (kubectl scale, autoscalers) reads the same field and
// adds a line of its own, which a CRD cannot switch off.
func TestQuotedReplicasNameTheField(t *testing.T) {
	ns := newNamespace(t)
	err := create(object(t, "RelayPool", ns, validPool+"replicas: '2'"))
	var se *apierrors.StatusError
	if !errors.As(err, &se) || !apierrors.IsInvalid(err) {
		t.Fatalf("got %v, want Invalid", err)
	}
	for _, c := range errorsOf(se) {
		if c.Field == "spec.replicas" && strings.Contains(c.Message, "must be of type integer") {
			return
		}
	}
	t.Fatalf("no type error on spec.replicas in %v", err)
}
