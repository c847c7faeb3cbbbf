package attachment

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"mailroom.io/mailroom/api/v1alpha1"
)

// DefaultTargets are the webhook hosts a pool allows when its
// spec.events.allowedTargets is empty: in-cluster Service names.
var DefaultTargets = []string{".svc", ".svc.cluster.local"}

// Targets is the pool's effective allowedTargets.
func Targets(pool *v1alpha1.RelayPool) []string {
	if t := pool.Spec.Events.AllowedTargets; len(t) > 0 {
		return t
	}
	return DefaultTargets
}

// WebhookHost is the host of a webhook URL, lowercase, without brackets or
// a trailing dot.
func WebhookHost(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	h := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if h == "" {
		return "", errors.New("no host")
	}
	return h, nil
}

// TargetAllowed applies allowedTargets to a webhook host: an entry is an
// exact name, ".suffix" (every name under it, not the suffix itself), an IP
// address, or a CIDR; names never match addresses and vice versa, so a
// name cannot be used to reach an address range the pool did not list.
func TargetAllowed(targets []string, host string) bool {
	addr, err := netip.ParseAddr(host)
	isAddr := err == nil
	for _, t := range targets {
		switch {
		case strings.Contains(t, "/"):
			if p, err := netip.ParsePrefix(t); err == nil && isAddr && p.Contains(addr.Unmap()) {
				return true
			}
		case isAddr:
			if a, err := netip.ParseAddr(t); err == nil && a == addr.Unmap() {
				return true
			}
		case strings.HasPrefix(t, "."):
			if strings.HasSuffix(host, t) && len(host) > len(t) {
				return true
			}
		case host == t:
			return true
		}
	}
	return false
}

// Webhook signing secrets are in the Standard Webhooks form: "whsec_" and
// the standard base64 of the key bytes; the spec asks for 24 to 64 bytes.
const (
	WebhookSecretPrefix = "whsec_"
	webhookKeyMin       = 24
	webhookKeyMax       = 64
)

// CheckWebhookSecret says what is wrong with a signing secret, or nil.
func CheckWebhookSecret(s string) error {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), WebhookSecretPrefix)
	if !ok {
		return fmt.Errorf("must start with %s (the Standard Webhooks form %s<base64 of 24 to 64 random bytes>)", WebhookSecretPrefix, WebhookSecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return fmt.Errorf("the part after %s must be standard base64: %v", WebhookSecretPrefix, err)
	}
	if len(key) < webhookKeyMin || len(key) > webhookKeyMax {
		return fmt.Errorf("decodes to %d bytes; Standard Webhooks asks for %d to %d", len(key), webhookKeyMin, webhookKeyMax)
	}
	return nil
}

// NewWebhookSecret formats 32 key bytes as a signing secret.
func NewWebhookSecret(key [32]byte) string {
	return WebhookSecretPrefix + base64.StdEncoding.EncodeToString(key[:])
}
