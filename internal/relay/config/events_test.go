package config

import (
	"strings"
	"testing"
)

// withWebhook is a valid configuration whose one credential posts its
// events to webhook (a YAML flow mapping), under events (another).
func withWebhook(events, webhook string) string {
	return minimal + `
domains: [{name: example.com, keys: [{selector: s1, algorithm: Ed25519, privateKeyFile: /k}]}]
events: ` + events + `
credentials: [{username: u, passwordHash: "$2a$10$px0zTPYlw26dgyZYlGwb4.ClsLZiSnEqx3vW/M/JRTtkIq2CMBrIi", allowedSenders: [example.com], webhook: ` + webhook + `}]
`
}

// A 32-byte key, as the operator generates.
const goodSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestWebhooksWithinTheAllowedTargetsAreAccepted(t *testing.T) {
	for _, tc := range []struct{ name, events, url string }{
		{"an in-cluster Service by default", "{}", "http://hooks.shop.svc:8080/mail"},
		{"a fully qualified Service name by default", "{}", "https://hooks.shop.svc.cluster.local/mail"},
		{"an exact host", "{allowedTargets: [hooks.example.net]}", "https://hooks.example.net/mail"},
		{"a name under a suffix", "{allowedTargets: [.example.net]}", "https://a.b.example.net/mail"},
		{"an address inside a CIDR", "{allowedTargets: [10.96.0.0/12]}", "http://10.96.4.2:8080/mail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse([]byte(withWebhook(tc.events, "{url: "+tc.url+", secret: "+goodSecret+"}"))); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAWebhookOutsideTheAllowedTargetsIsRefusedNamingItsURL(t *testing.T) {
	for _, tc := range []struct{ name, events, url, want string }{
		{"a public name by default", "{}", "https://hooks.example.net/mail",
			"credentials[0].webhook.url: Invalid value: \"https://hooks.example.net/mail\": host hooks.example.net is not in events.allowedTargets (.svc, .svc.cluster.local)"},
		{"the cloud metadata address by default", "{}", "http://169.254.169.254/latest",
			"host 169.254.169.254 is not in events.allowedTargets"},
		{"a name beside the listed one", "{allowedTargets: [hooks.example.net]}", "https://evil.example.net/",
			"host evil.example.net is not in events.allowedTargets (hooks.example.net)"},
		{"the suffix itself", "{allowedTargets: [.example.net]}", "https://example.net/",
			"host example.net is not in events.allowedTargets"},
		{"a name ending like the suffix", "{allowedTargets: [.example.net]}", "https://badexample.net/",
			"host badexample.net is not in events.allowedTargets"},
		{"an address outside the CIDR", "{allowedTargets: [10.96.0.0/12]}", "http://10.0.0.1/",
			"host 10.0.0.1 is not in events.allowedTargets"},
		{"an in-cluster Service once targets are listed", "{allowedTargets: [hooks.example.net]}", "http://hooks.shop.svc/",
			"host hooks.shop.svc is not in events.allowedTargets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(withWebhook(tc.events, "{url: "+tc.url+", secret: "+goodSecret+"}")))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestAnInvalidWebhookIsRefusedNamingTheField(t *testing.T) {
	for _, tc := range []struct{ name, events, webhook, want string }{
		{"no url", "{}", "{secret: " + goodSecret + "}", "credentials[0].webhook.url: Required"},
		{"not http", "{}", "{url: 'ftp://hooks.shop.svc/', secret: " + goodSecret + "}", "credentials[0].webhook.url: Invalid value"},
		{"credentials in the url", "{}", "{url: 'https://u:p@hooks.shop.svc/', secret: " + goodSecret + "}", "must not carry credentials"},
		{"a secret without the prefix", "{}", "{url: 'https://hooks.shop.svc/', secret: MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}", "credentials[0].webhook.secret"},
		{"a secret that is not base64", "{}", "{url: 'https://hooks.shop.svc/', secret: 'whsec_!!!'}", "not base64"},
		{"a short key", "{}", "{url: 'https://hooks.shop.svc/', secret: whsec_c2hvcnQ=}", "24 to 64 bytes"},
		{"an unknown event type", "{}", "{url: 'https://hooks.shop.svc/', secret: " + goodSecret + ", types: [opened]}", "credentials[0].webhook.types[0]"},
		{"a target that is a URL", "{allowedTargets: ['https://hooks.example.net/']}", "{url: 'https://hooks.shop.svc/', secret: " + goodSecret + "}", "events.allowedTargets[0]"},
		{"a bad CIDR", "{allowedTargets: [10.96.0.0/33]}", "{url: 'https://hooks.shop.svc/', secret: " + goodSecret + "}", "events.allowedTargets[0]"},
		{"no retention", "{retention: 0s}", "{url: 'https://hooks.shop.svc/', secret: " + goodSecret + "}", "events.retention"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(withWebhook(tc.events, tc.webhook)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to name %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") {
				t.Errorf("the signing secret appears in the error: %v", err)
			}
		})
	}
}
