package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SMTPCredentialSpec declares a login for one application.
type SMTPCredentialSpec struct {
	// poolRef is the RelayPool this login is valid on. The pool must allow
	// this namespace.
	// +required
	PoolRef PoolReference `json:"poolRef"`

	// allowedSenders lists who this login may send as, checked against
	// both the envelope sender and the From header: a domain
	// ("example.com", any address at it) or one address
	// ("noreply@shop.example.com"). Entries are literal: no patterns
	// ("*@example.com"), no URIs ("mailto:"). Domains are lowercase ASCII
	// (an internationalized domain in its xn-- form) and must be
	// SendingDomains of the pool.
	// +required
	// +listType=set
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=320
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="allowedSenders needs at least one domain (example.com) or address (noreply@example.com)"
	// +kubebuilder:validation:items:XValidation:rule="!self.contains('*') && !self.startsWith('mailto:') && self.matches('^([-a-zA-Z0-9!#$%&+/=?^_{|}~]+([.][-a-zA-Z0-9!#$%&+/=?^_{|}~]+)*@)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?[.])+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')",message="allowedSenders entries must be lowercase domains (example.com) or addresses (noreply@example.com)",messageExpression="self.contains('*') ? 'allowedSenders entries are literal, not patterns: list the domain (example.com) to allow every address at it' : self.startsWith('mailto:') ? 'allowedSenders entries are addresses, not URIs: write noreply@example.com without mailto:' : self.matches('[[:^ascii:]]') ? 'allowedSenders entries must be ASCII: write an internationalized domain in its xn-- (punycode) form, e.g. noreply@xn--mnchen-3ya.de' : 'allowedSenders entries must be lowercase domains (example.com) or addresses (noreply@example.com)'"
	AllowedSenders []string `json:"allowedSenders"`

	// secretName is the Secret written in this namespace with the keys
	// host, port, username, password and url, api-key and api-url for the
	// HTTP API, and webhook-secret when events.webhook is set. Empty:
	// "<name>-smtp".
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == '' || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="secretName must be a Secret name: lowercase letters, digits, '-' and '.', e.g. shop-smtp"
	SecretName string `json:"secretName,omitempty"`

	// limits caps what this login may send, each an integer (not quoted);
	// 0 means the pool's default.
	// +optional
	// +kubebuilder:default={}
	Limits CredentialLimits `json:"limits,omitempty"`

	// suspended stops this login from sending: AUTH still succeeds, but
	// MAIL FROM gets a temporary (4xx) refusal, so well-behaved clients
	// keep their mail and retry later.
	// +optional
	// +kubebuilder:default=false
	Suspended bool `json:"suspended,omitempty"`

	// passwordRotation configures password (and API key) changes, which
	// are requested by setting the annotation mailroom.io/rotate-password
	// to a new value.
	// +optional
	// +kubebuilder:default={}
	PasswordRotation PasswordRotation `json:"passwordRotation,omitempty"`

	// events configures delivery events for the mail this login sends.
	// +optional
	Events *CredentialEvents `json:"events,omitempty"`
}

// CredentialEvents configures where a login's delivery events go.
type CredentialEvents struct {
	// webhook receives this login's delivery events, signed as Standard
	// Webhooks describes. Its host must be allowed by the pool's
	// spec.events.allowedTargets.
	// +optional
	Webhook *Webhook `json:"webhook,omitempty"`
}

// Webhook is an HTTP endpoint the relays POST delivery events to.
type Webhook struct {
	// url the events are posted to: http or https, such as
	// "http://mail-events.shop.svc:8080/hooks/mail". Its host must be
	// allowed by the pool's spec.events.allowedTargets (by default
	// in-cluster Service names only).
	// +required
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != '' && !self.matches('^[a-zA-Z]+://[^/?#]*@')",message="events.webhook.url must be an http or https URL with a host, such as http://mail-events.shop.svc:8080/hooks/mail",messageExpression="!isURL(self) || url(self).getHostname() == '' ? 'events.webhook.url must be an absolute http or https URL with a host, such as http://mail-events.shop.svc:8080/hooks/mail' : !(url(self).getScheme() in ['http', 'https']) ? 'events.webhook.url must use the scheme http or https, e.g. https://mail-events.shop.svc/hooks/mail' : 'events.webhook.url must not carry a user name or password: the relays sign every event with the webhook secret; remove the part before @'"
	URL string `json:"url"`

	// secretRef names the Secret (in this namespace) holding the signing
	// secret, in the Standard Webhooks form "whsec_" followed by the
	// base64 of 24 to 64 random bytes. Omitted: the operator generates one
	// and writes it into this credential's Secret as webhook-secret. Either
	// way the credential's Secret carries the secret in effect as
	// webhook-secret, for the receiving application to verify with.
	// +optional
	SecretRef *WebhookSecretReference `json:"secretRef,omitempty"`

	// types are the event types wanted: queued, delivered, deferred,
	// bounced, suppressed, expired, dsn_sent. Empty: all of them.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=7
	Types []EventType `json:"types,omitempty"`
}

// WebhookSecretReference names a key of a Secret in the credential's
// namespace.
type WebhookSecretReference struct {
	// name of the Secret, such as "shop-webhook".
	// +required
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="events.webhook.secretRef.name must be a Secret name: lowercase letters, digits, '-' and '.', e.g. shop-webhook"
	Name string `json:"name"`

	// key in the Secret holding the signing secret.
	// +optional
	// +kubebuilder:default=secret
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[-._a-zA-Z0-9]+$')",message="events.webhook.secretRef.key must be a Secret key: letters, digits, '-', '_' and '.', e.g. secret"
	Key string `json:"key,omitempty"`
}

// EventType is a kind of delivery event.
// +kubebuilder:validation:Enum=queued;delivered;deferred;bounced;suppressed;expired;dsn_sent
type EventType string

const (
	EventQueued     EventType = "queued"
	EventDelivered  EventType = "delivered"
	EventDeferred   EventType = "deferred"
	EventBounced    EventType = "bounced"
	EventSuppressed EventType = "suppressed"
	EventExpired    EventType = "expired"
	EventDSNSent    EventType = "dsn_sent"
)

// PasswordRotation configures how a password is replaced.
type PasswordRotation struct {
	// gracePeriod is how long the previous password keeps working after a
	// rotation, so applications can pick up the new Secret, as a Go
	// duration string such as "24h" (units h, m, s; no d); "0" (quoted)
	// stops the old password at once.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self == '0' || self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')",message="passwordRotation.gracePeriod must be a duration such as 24h, or 0 to stop the old password at once"
	GracePeriod *metav1.Duration `json:"gracePeriod,omitempty"`
}

// CredentialLimits caps one login's sending, each an integer (not quoted).
// 0 means the pool's default (unlimited unless the pool sets one).
type CredentialLimits struct {
	// messagesPerMinute; more get 451 4.7.1 until the minute passes.
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:XValidation:rule="self >= 0",message="limits.messagesPerMinute must be 0 (no limit) or more"
	MessagesPerMinute int32 `json:"messagesPerMinute,omitempty"`

	// messagesPerDay; more get 451 4.7.1 until the day passes.
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:XValidation:rule="self >= 0",message="limits.messagesPerDay must be 0 (no limit) or more"
	MessagesPerDay int32 `json:"messagesPerDay,omitempty"`

	// recipientsPerMessage; more get 452 4.5.3. Capped by the pool's
	// submission.maxRecipients.
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:XValidation:rule="self >= 0",message="limits.recipientsPerMessage must be 0 (pool default) or more"
	RecipientsPerMessage int32 `json:"recipientsPerMessage,omitempty"`
}

// SMTPCredentialStatus is the observed state of an SMTPCredential.
type SMTPCredentialStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// username to log in with ("<name>.<namespace>").
	// +optional
	Username string `json:"username,omitempty"`

	// secretName is the Secret holding the connection settings.
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// passwordRotatedAt is when the current password was issued.
	// +optional
	PasswordRotatedAt *metav1.Time `json:"passwordRotatedAt,omitempty"`

	// previousPasswordExpires is when the password (and API key) replaced
	// by the last rotation stops working; empty when no previous one works.
	// +optional
	PreviousPasswordExpires *metav1.Time `json:"previousPasswordExpires,omitempty"`

	// conditions: Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// SMTPCredential is a login for one application on a RelayPool. The
// operator generates a strong password and writes a ready-to-use Secret
// (host, port, username, password, url) into this namespace; the relay
// only ever sees a hash of the password.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=smtpcred,categories=mailroom
// +kubebuilder:printcolumn:name="Username",type=string,JSONPath=`.status.username`
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.poolRef.name`
// +kubebuilder:printcolumn:name="Secret",type=string,JSONPath=`.status.secretName`
// +kubebuilder:printcolumn:name="Suspended",type=boolean,JSONPath=`.spec.suspended`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SMTPCredential struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state.
	// +required
	Spec SMTPCredentialSpec `json:"spec"`

	// status is the observed state.
	// +optional
	Status SMTPCredentialStatus `json:"status,omitempty"`
}

// SMTPCredentialList is a list of SMTPCredentials.
// +kubebuilder:object:root=true
type SMTPCredentialList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SMTPCredential `json:"items"`
}

func init() {
	SchemeBuilder.Register(&SMTPCredential{}, &SMTPCredentialList{})
}
