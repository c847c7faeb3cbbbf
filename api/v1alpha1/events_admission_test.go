package v1alpha1_test

import (
	"testing"

	v1 "mailroom.io/mailroom/api/v1alpha1"
)

// The HTTP API and webhook fields: one invalid value per case, each named
// by its field and saying how to fix it.
func TestWebhookAndAPIRefusals(t *testing.T) {
	hook := func(s string) string { return validCredential + "events: {webhook: " + s + "}" }
	t.Run("CredentialWebhook", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"url without a scheme", "SMTPCredential", hook("{url: mail-events.shop.svc}"),
				"spec.events.webhook.url", "events.webhook.url must be an absolute http or https URL with a host"},
			{"url without a host", "SMTPCredential", hook("{url: 'https:///hooks'}"),
				"spec.events.webhook.url", "events.webhook.url must be an absolute http or https URL with a host"},
			{"url of another scheme", "SMTPCredential", hook("{url: 'ftp://mail-events.shop.svc/hooks'}"),
				"spec.events.webhook.url", "events.webhook.url must use the scheme http or https"},
			{"url with a password", "SMTPCredential", hook("{url: 'https://shop:hunter2@mail-events.shop.svc/hooks'}"),
				"spec.events.webhook.url", "events.webhook.url must not carry a user name or password"},
			{"url missing", "SMTPCredential", hook("{types: [delivered]}"),
				"spec.events.webhook.url", "Required value"},
			{"unknown event type", "SMTPCredential", hook("{url: 'http://mail-events.shop.svc', types: [delivered, opened]}"),
				"spec.events.webhook.types[1]", `supported values: "queued", "delivered", "deferred", "bounced", "suppressed", "expired", "dsn_sent"`},
			{"event type twice", "SMTPCredential", hook("{url: 'http://mail-events.shop.svc', types: [bounced, bounced]}"),
				"spec.events.webhook.types[1]", "Duplicate value"},
			{"secret name not a name", "SMTPCredential", hook("{url: 'http://mail-events.shop.svc', secretRef: {name: Shop_Hook}}"),
				"spec.events.webhook.secretRef.name", "events.webhook.secretRef.name must be a Secret name"},
			{"secret key with a slash", "SMTPCredential", hook("{url: 'http://mail-events.shop.svc', secretRef: {name: shop-hook, key: 'a/b'}}"),
				"spec.events.webhook.secretRef.key", "events.webhook.secretRef.key must be a Secret key"},
			{"secret name missing", "SMTPCredential", hook("{url: 'http://mail-events.shop.svc', secretRef: {key: secret}}"),
				"spec.events.webhook.secretRef.name", "Required value"},
		})
	})
	t.Run("PoolAllowedTargets", func(t *testing.T) {
		targets := func(s string) string { return validPool + "events: {allowedTargets: [" + s + "]}" }
		checkRefusals(t, []refusal{
			{"a wildcard", "RelayPool", targets("hooks.example.com, '*.example.net'"),
				"spec.events.allowedTargets[1]", "events.allowedTargets entries are not patterns: write .example.net for every name under example.net"},
			{"a URL", "RelayPool", targets("'https://hooks.example.com/mail'"),
				"spec.events.allowedTargets[0]", "events.allowedTargets entries are hosts, not URLs or paths"},
			{"a trailing dot", "RelayPool", targets("hooks.example.com."),
				"spec.events.allowedTargets[0]", "events.allowedTargets entries are written without a trailing dot"},
			{"capitals", "RelayPool", targets("Hooks.example.com"),
				"spec.events.allowedTargets[0]", "events.allowedTargets entries must be lowercase"},
			{"a space", "RelayPool", targets("'hooks example'"),
				"spec.events.allowedTargets[0]", "events.allowedTargets entries must be host names (hooks.example.com), .suffixes (.shop.svc) or CIDRs"},
			{"an IPv4 address", "RelayPool", targets("10.0.0.5"),
				"spec.events.allowedTargets[0]", "events.allowedTargets entries name addresses as CIDRs: write 10.0.0.5/32"},
			{"an IPv6 address", "RelayPool", targets("'fd00::5'"),
				"spec.events.allowedTargets[0]", "events.allowedTargets entries name addresses as CIDRs: write fd00::5/128"},
			{"host and port", "RelayPool", targets("'hooks.example.com:8080'"),
				"spec.events.allowedTargets[0]", "events.allowedTargets entries must be host names"},
		})
	})
	t.Run("PoolAPI", func(t *testing.T) {
		checkRefusals(t, []refusal{
			{"port 0", "RelayPool", validPool + "api: {port: 0}",
				"spec.api.port", "api.port must be a port between 1 and 65535"},
			{"port of STARTTLS submission", "RelayPool", validPool + "api: {port: 587}",
				"spec.api.port", "api.port (443 unless set) must differ from submission.starttlsPort and submission.implicitTLSPort"},
			{"port of a moved implicit TLS listener", "RelayPool", validPool + "submission: {implicitTLSPort: 443}",
				"spec.api.port", "api.port (443 unless set) must differ from submission.starttlsPort and submission.implicitTLSPort"},
			{"enabled as a string", "RelayPool", validPool + "api: {enabled: 'yes'}",
				"spec.api.enabled", "must be of type boolean"},
		})
	})
}

func TestWebhookAndAPIAccepted(t *testing.T) {
	checkAccepted(t, []acceptance{
		{"webhook with every field", "SMTPCredential", validCredential + "events: {webhook: {url: 'https://mail-events.shop.svc:8443/hooks/mail?src=relay', secretRef: {name: shop-webhook, key: signing.key}, types: [delivered, bounced, dsn_sent]}}"},
		{"webhook with a generated secret and every type", "SMTPCredential", validCredential + "events: {webhook: {url: 'http://10.20.0.5:8080/'}}"},
		{"webhook on an IPv6 literal", "SMTPCredential", validCredential + "events: {webhook: {url: 'http://[fd00::5]:8080/hooks'}}"},
		{"no webhook", "SMTPCredential", validCredential + "events: {}"},
		{"targets of every form", "RelayPool", validPool + "events: {allowedTargets: [hooks.example.com, .shop.svc, .svc.cluster.local, 10.20.0.0/16, 10.0.0.5/32, 'fd00::/64', localhost]}"},
		{"API off", "RelayPool", validPool + "api: {enabled: false}"},
		{"API on another port", "RelayPool", validPool + "api: {port: 8443}"},
		{"API on 587 with STARTTLS moved", "RelayPool", validPool + "submission: {starttlsPort: 2525}\napi: {port: 587}"},
	})
}

func TestWebhookSecretKeyDefaults(t *testing.T) {
	ns := newNamespace(t)
	u := object(t, "SMTPCredential", ns, validCredential+"events: {webhook: {url: 'http://mail-events.shop.svc', secretRef: {name: shop-webhook}}}")
	if err := create(u); err != nil {
		t.Fatal(err)
	}
	var c v1.SMTPCredential
	get(t, ns, u.GetName(), &c)
	expect(t, "events.webhook.secretRef.key", c.Spec.Events.Webhook.SecretRef.Key, "secret")
	expect(t, "events.webhook.types", len(c.Spec.Events.Webhook.Types), 0)
}
