package events

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"strings"
	"time"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/queue"
)

// Type is an event type.
type Type string

// Event types; config.EventTypes lists the same names.
const (
	Queued     Type = "queued"
	Delivered  Type = "delivered"
	Deferred   Type = "deferred"
	Bounced    Type = "bounced"
	Suppressed Type = "suppressed"
	Expired    Type = "expired"
	DSNSent    Type = "dsn_sent"
)

// Types are all event types.
var Types = []Type{Queued, Delivered, Deferred, Bounced, Suppressed, Expired, DSNSent}

// Bounce types of a bounced or expired recipient.
const (
	Hard = "hard"
	Soft = "soft"
)

// Event is one thing that happened to one recipient of a message. Its
// JSON is the webhook's body and the stored form.
type Event struct {
	// ID is made when the event is recorded and never changes: a resent
	// event has the same id (webhook-id), which receivers deduplicate on.
	ID        string    `json:"id"`
	Type      Type      `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	QueueID   string    `json:"queueId"`
	MessageID string    `json:"messageId,omitempty"`
	Recipient string    `json:"recipient,omitempty"`
	// EnhancedStatus is the RFC 3463 code reported for the recipient.
	EnhancedStatus string `json:"enhancedStatus,omitempty"`
	// Reply is the remote server's full reply (its lines joined by "\n"),
	// or what went wrong without one.
	Reply     string `json:"reply,omitempty"`
	RemoteMTA string `json:"remoteMta,omitempty"`
	// Attempt is the recipient's delivery attempts so far.
	Attempt int `json:"attempt,omitempty"`
	// BounceClass is why a recipient bounced (package bounce's class);
	// BounceType "hard" (permanent) or "soft" (gave up on a temporary
	// failure, or a class that may pass).
	BounceClass string            `json:"bounceClass,omitempty"`
	BounceType  string            `json:"bounceType,omitempty"`
	Tags        []string          `json:"tags,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// Credential is the SMTPCredential username that submitted the
	// message; "" for trusted networks and DSNs.
	Credential string `json:"credential,omitempty"`
}

// NewID returns a new event id: "evt_" then 26 characters of base32hex
// over 48 bits of milliseconds and 80 random bits, so ids sort by time.
func NewID(at time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(max(at.UnixMilli(), 0))<<16)
	_, _ = rand.Read(b[6:])
	return "evt_" + strings.ToLower(base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// CredentialOf is the credential username of a message's origin
// ("user:<name>"), or "".
func CredentialOf(origin string) string {
	name, _ := strings.CutPrefix(origin, "user:")
	if name == origin {
		return ""
	}
	return name
}

// ForMessage is an event of type t about m (no recipient yet).
func ForMessage(t Type, m *queue.Message, at time.Time) Event {
	return Event{ID: NewID(at), Type: t, Timestamp: at.UTC(), QueueID: m.ID, MessageID: m.MessageID,
		Tags: m.Tags, Metadata: m.Metadata, Credential: CredentialOf(m.Origin)}
}

// ForResult is the event of one recipient's outcome r after attempt
// attempts: delivered, deferred, bounced, suppressed (refused by the
// suppression list) or expired (given up at maxAge).
func ForResult(m *queue.Message, r delivery.Result, attempt int, at time.Time) Event {
	t := Deferred
	switch {
	case r.Status == delivery.Delivered:
		t = Delivered
	case r.Reason == delivery.ReasonExpired:
		t = Expired
	case r.Reason == delivery.ReasonSuppressed:
		t = Suppressed
	case r.Status == delivery.Failed:
		t = Bounced
	}
	e := ForMessage(t, m, at)
	e.Recipient, e.EnhancedStatus, e.Reply, e.Attempt = r.Recipient, r.Code, r.Diagnostic(), attempt
	e.RemoteMTA = r.RemoteHost
	if e.RemoteMTA == "" {
		e.RemoteMTA = r.RemoteIP
	}
	e.BounceClass = r.Class.String()
	switch t {
	case Bounced:
		// A 5xx "mailbox full" or "throttled" is permanent for this
		// message but says nothing final about the address.
		e.BounceType = r.Class.Severity()
	case Suppressed:
		e.BounceType = Hard
	case Expired:
		e.BounceType = Soft
	}
	return e
}
