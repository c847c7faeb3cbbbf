package attachment

import (
	"strings"
	"testing"

	"mailroom.io/mailroom/api/v1alpha1"
)

// The operator and the relay must agree on what a pool allows: this
// checks the operator's view of a pool against the relay's matcher's
// documented behaviour.
func TestTargetAllowed(t *testing.T) {
	pool := func(targets ...string) *v1alpha1.RelayPool {
		p := &v1alpha1.RelayPool{}
		p.Spec.Events.AllowedTargets = targets
		return p
	}
	cases := []struct {
		pool *v1alpha1.RelayPool
		host string
		want bool
	}{
		{pool(), "mail-events.shop.svc", true},
		{pool(), "mail-events.shop.svc.cluster.local", true},
		{pool(), "svc", false},
		{pool(), "hooks.example.com", false},
		{pool(), "10.0.0.5", false},
		{pool(), "evil-svc", false},
		{pool("hooks.example.com"), "hooks.example.com", true},
		{pool("hooks.example.com"), "a.hooks.example.com", false},
		{pool("hooks.example.com"), "mail-events.shop.svc", false},
		{pool(".example.com"), "hooks.example.com", true},
		{pool(".example.com"), "example.com", false},
		{pool(".example.com"), "hooksexample.com", false},
		{pool("10.20.0.0/16"), "10.20.3.4", true},
		{pool("10.20.0.0/16"), "10.21.3.4", false},
		{pool("10.20.0.0/16"), "10-20-3-4.example.com", false},
		{pool("fd00::/64"), "fd00::5", true},
		{pool("10.0.0.0/8"), "::ffff:10.0.0.5", true},
		{pool(".svc"), "10.0.0.5", false},
	}
	for _, c := range cases {
		if got := TargetAllowed(c.pool, c.host); got != c.want {
			t.Errorf("TargetAllowed(%v, %q) = %v, want %v", c.pool.Spec.Events.AllowedTargets, c.host, got, c.want)
		}
	}
}

func TestWebhookHost(t *testing.T) {
	for raw, want := range map[string]string{
		"http://Mail-Events.shop.svc:8080/x": "mail-events.shop.svc",
		"https://hooks.example.com./x":       "hooks.example.com",
		"http://[fd00::5]:8080/":             "fd00::5",
		"http://10.0.0.5/":                   "10.0.0.5",
	} {
		if got, err := WebhookHost(raw); err != nil || got != want {
			t.Errorf("WebhookHost(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
	if _, err := WebhookHost("http:///x"); err == nil {
		t.Error("a URL without a host has a host")
	}
}

func TestCheckWebhookSecret(t *testing.T) {
	if err := CheckWebhookSecret(NewWebhookSecret([32]byte{1, 2, 3})); err != nil {
		t.Errorf("a generated secret is refused: %v", err)
	}
	for s, want := range map[string]string{
		"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw":                       "must start with whsec_",
		"whsec_not base64!":                                      "must be standard base64",
		"whsec_c2hvcnQ=":                                         "decodes to 5 bytes",
		"whsec_" + strings.Repeat("QUFB", 30):                    "decodes to 90 bytes",
		"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw-_-_-_-_-_-_-_-_": "must be standard base64",
	} {
		err := CheckWebhookSecret(s)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckWebhookSecret(%q) = %v, want %q", s, err, want)
		}
	}
}
