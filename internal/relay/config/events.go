package config

import (
	"encoding/base64"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// EventTypes are the delivery event types a webhook may ask for (package
// events defines them; listed here so the configuration can be checked
// without importing it).
var EventTypes = []string{"queued", "delivered", "deferred", "bounced", "suppressed", "expired", "dsn_sent"}

// WebhookSecretPrefix starts a Standard Webhooks signing secret.
const WebhookSecretPrefix = "whsec_"

// defaultTargets are the allowed targets when events.allowedTargets is
// empty: in-cluster Service names only.
var defaultTargets = []string{".svc", ".svc.cluster.local"}

// AllowsHost reports whether a webhook URL's host (a name or an IP
// literal, without port) is allowed by allowedTargets: a name equal to an
// exact entry or under a ".suffix" entry, an address inside a CIDR entry.
func (e Events) AllowsHost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return e.ListsAddr(ip)
	}
	targets := e.AllowedTargets
	if len(targets) == 0 {
		targets = defaultTargets
	}
	for _, t := range targets {
		t = strings.ToLower(strings.TrimSuffix(t, "."))
		switch {
		case strings.Contains(t, "/"):
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

// ListsAddr reports whether ip is inside a CIDR of allowedTargets: the
// only way to allow an IP literal, or a link-local address a name
// resolves to.
func (e Events) ListsAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, t := range e.AllowedTargets {
		if p, err := netip.ParsePrefix(t); err == nil && p.Contains(ip) {
			return true
		}
	}
	return false
}

// DecodeWebhookSecret returns the HMAC key of a "whsec_<base64>" secret.
func DecodeWebhookSecret(s string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(strings.TrimPrefix(s, WebhookSecretPrefix))
}

// validateEvents checks events and every credential's webhook; a webhook
// whose host the allowed targets do not cover is an error naming its url.
func (c *Config) validateEvents() field.ErrorList {
	var errs field.ErrorList
	ep := field.NewPath("events")
	for i, t := range c.Events.AllowedTargets {
		tp := ep.Child("allowedTargets").Index(i)
		switch {
		case strings.Contains(t, "/"):
			if _, err := netip.ParsePrefix(t); err != nil {
				errs = append(errs, field.Invalid(tp, t, "must be a CIDR such as 10.96.0.0/12"))
			}
		case strings.HasPrefix(t, "."):
			if !isDomainName(t[1:]) {
				errs = append(errs, field.Invalid(tp, t, `must be ".suffix" of a DNS name, such as ".svc.cluster.local"`))
			}
		case t == "" || !isDomainName(t):
			errs = append(errs, field.Invalid(tp, t, "must be a host name, a .suffix or a CIDR"))
		}
	}
	if r := c.Events.Retention; r != nil && r.Duration <= 0 {
		errs = append(errs, field.Invalid(ep.Child("retention"), r.Duration.String(), "must be positive"))
	}
	for i, cr := range c.Credentials {
		if cr.Webhook == nil {
			continue
		}
		wp := c.origins.path("credentials", i).Child("webhook")
		errs = append(errs, c.validateWebhook(wp, cr.Webhook)...)
	}
	return errs
}

func (c *Config) validateWebhook(wp *field.Path, w *Webhook) field.ErrorList {
	var errs field.ErrorList
	up := wp.Child("url")
	u, err := url.Parse(w.URL)
	switch {
	case w.URL == "":
		errs = append(errs, field.Required(up, "an http or https URL"))
	case err != nil:
		errs = append(errs, field.Invalid(up, w.URL, err.Error()))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, field.Invalid(up, w.URL, "must be an http or https URL"))
	case u.Hostname() == "":
		errs = append(errs, field.Invalid(up, w.URL, "must name a host"))
	case u.User != nil:
		errs = append(errs, field.Invalid(up, field.OmitValueType{}, "must not carry credentials; the signature authenticates the relay"))
	case !c.Events.AllowsHost(u.Hostname()):
		allowed := c.Events.AllowedTargets
		if len(allowed) == 0 {
			allowed = defaultTargets
		}
		errs = append(errs, field.Invalid(up, w.URL, "host "+u.Hostname()+" is not in events.allowedTargets ("+strings.Join(allowed, ", ")+")"))
	default:
		if port := u.Port(); port != "" {
			if _, err := net.LookupPort("tcp", port); err != nil {
				errs = append(errs, field.Invalid(up, w.URL, "bad port"))
			}
		}
	}
	sp := wp.Child("secret")
	if !strings.HasPrefix(w.Secret, WebhookSecretPrefix) {
		errs = append(errs, field.Invalid(sp, field.OmitValueType{}, `must be "whsec_" followed by base64`))
	} else if key, err := DecodeWebhookSecret(w.Secret); err != nil {
		errs = append(errs, field.Invalid(sp, field.OmitValueType{}, "the part after whsec_ is not base64"))
	} else if len(key) < 24 || len(key) > 64 {
		errs = append(errs, field.Invalid(sp, field.OmitValueType{}, "the key must be 24 to 64 bytes (Standard Webhooks)"))
	}
	for j, t := range w.Types {
		if !contains(EventTypes, t) {
			errs = append(errs, field.NotSupported(wp.Child("types").Index(j), t, EventTypes))
		}
	}
	return errs
}
