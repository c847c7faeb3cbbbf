package attachment

import (
	"strings"
	"testing"
)

func TestTargetAllowed(t *testing.T) {
	cases := []struct {
		targets []string
		host    string
		want    bool
	}{
		{DefaultTargets, "mail-events.shop.svc", true},
		{DefaultTargets, "mail-events.shop.svc.cluster.local", true},
		{DefaultTargets, "svc", false},
		{DefaultTargets, "hooks.example.com", false},
		{DefaultTargets, "10.0.0.5", false},
		{DefaultTargets, "evil-svc", false},
		{[]string{"hooks.example.com"}, "hooks.example.com", true},
		{[]string{"hooks.example.com"}, "a.hooks.example.com", false},
		{[]string{".example.com"}, "hooks.example.com", true},
		{[]string{".example.com"}, "example.com", false},
		{[]string{".example.com"}, "hooksexample.com", false},
		{[]string{"10.20.0.0/16"}, "10.20.3.4", true},
		{[]string{"10.20.0.0/16"}, "10.21.3.4", false},
		{[]string{"10.20.0.0/16"}, "10-20-3-4.example.com", false},
		{[]string{"10.0.0.5"}, "10.0.0.5", true},
		{[]string{"10.0.0.5"}, "10.0.0.6", false},
		{[]string{"fd00::/64"}, "fd00::5", true},
		{[]string{"10.0.0.0/8"}, "::ffff:10.0.0.5", true},
		{[]string{".svc"}, "10.0.0.5", false},
	}
	for _, c := range cases {
		if got := TargetAllowed(c.targets, c.host); got != c.want {
			t.Errorf("TargetAllowed(%v, %q) = %v, want %v", c.targets, c.host, got, c.want)
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
