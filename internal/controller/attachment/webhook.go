package attachment

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/relay/config"
)

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

// TargetAllowed applies the pool's spec.events.allowedTargets to a webhook
// host with the relay's own matcher, so the operator never renders a
// webhook the relays would refuse (which would refuse the whole
// configuration).
func TargetAllowed(pool *v1alpha1.RelayPool, host string) bool {
	return config.Events{AllowedTargets: pool.Spec.Events.AllowedTargets}.AllowsHost(host)
}

// DescribeTargets says what a pool's allowedTargets admit, for messages.
func DescribeTargets(pool *v1alpha1.RelayPool) string {
	if t := pool.Spec.Events.AllowedTargets; len(t) > 0 {
		return "[" + strings.Join(t, ", ") + "]"
	}
	return "empty, so in-cluster Service names only (.svc, .svc.cluster.local)"
}

// Webhook signing secrets are in the Standard Webhooks form: "whsec_" and
// the standard base64 of the key bytes; the spec asks for 24 to 64 bytes.
const (
	webhookKeyMin = 24
	webhookKeyMax = 64
)

// CheckWebhookSecret says what is wrong with a signing secret, or nil.
func CheckWebhookSecret(s string) error {
	p := config.WebhookSecretPrefix
	if !strings.HasPrefix(s, p) {
		return fmt.Errorf("must start with %s (the Standard Webhooks form %s<base64 of 24 to 64 random bytes>)", p, p)
	}
	key, err := config.DecodeWebhookSecret(s)
	if err != nil {
		return fmt.Errorf("the part after %s must be standard base64: %v", p, err)
	}
	if len(key) < webhookKeyMin || len(key) > webhookKeyMax {
		return fmt.Errorf("decodes to %d bytes; Standard Webhooks asks for %d to %d", len(key), webhookKeyMin, webhookKeyMax)
	}
	return nil
}

// NewWebhookSecret formats 32 key bytes as a signing secret.
func NewWebhookSecret(key [32]byte) string {
	return config.WebhookSecretPrefix + base64.StdEncoding.EncodeToString(key[:])
}
