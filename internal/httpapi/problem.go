package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"mailroom.io/mailroom/internal/relay"
)

// problemBase prefixes the problem types; the part after it is the
// relay's refusal reason (the mailroom_relay_rejected_total label), which
// docs/http-api.md lists.
const problemBase = "https://mailroom.io/problems/"

// problem is an RFC 9457 problem document with the SMTP reply the same
// refusal gets on 587/465.
type problem struct {
	Type           string `json:"type"`
	Title          string `json:"title"`
	Status         int    `json:"status"`
	Detail         string `json:"detail,omitempty"`
	SMTPCode       int    `json:"smtpCode,omitempty"`
	EnhancedStatus string `json:"enhancedStatus,omitempty"`
	// Field names the request member at fault (bad JSON).
	Field string `json:"field,omitempty"`
}

// titles are short, fixed summaries by reason.
var titles = map[string]string{
	"auth_required":             "Authentication required",
	"bad_credentials":           "Authentication failed",
	"credential_removed":        "Credential no longer valid",
	"auth_throttled":            "Too many failed authentication attempts",
	"rate_limited":              "Rate limit exceeded",
	"suspended":                 "Credential suspended",
	"sender_not_allowed":        "Sender not allowed",
	"from_header_not_allowed":   "From: address not allowed",
	"sender_header_not_allowed": "Sender: address not allowed",
	"bad_sender":                "Invalid sender address",
	"bad_recipient":             "Invalid recipient address",
	"too_many_recipients":       "Too many recipients",
	"bad_from_header":           "Invalid From: field",
	"bad_sender_header":         "Invalid Sender: field",
	"malformed":                 "Malformed message",
	"bare_line_ending":          "Bare CR or LF in the message",
	"line_too_long":             "Line too long",
	"message_too_large":         "Message too large",
	"no_space":                  "Insufficient storage",
	"shutting_down":             "Relay shutting down",
	"no_signing_key":            "No DKIM key for the From: domain",
	"signing_error":             "Signing failed",
	"queue_error":               "Local error",
	"bad_request":               "Invalid request",
	"idempotency_key_reused":    "Idempotency-Key reused with another request",
	"idempotency_key_in_use":    "A request with this Idempotency-Key is in progress",
	"not_found":                 "Not found",
	"unsupported_media_type":    "Unsupported media type",
}

func writeProblem(w http.ResponseWriter, p problem) {
	if !strings.HasPrefix(p.Type, "https://") {
		p.Type = problemBase + p.Type
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// refusalProblem is the problem document for a relay refusal: the HTTP
// status from the relay's table, the SMTP reply's code, enhanced status
// and text.
func refusalProblem(w http.ResponseWriter, ref *relay.Refusal) {
	reason := ref.Reason
	if reason == "" {
		reason = "queue_error"
	}
	st := ref.HTTPStatus()
	switch reason {
	case "rate_limited":
		// The per-minute budget refills within a minute.
		w.Header().Set("Retry-After", "60")
	case "auth_throttled", "no_space", "shutting_down":
		w.Header().Set("Retry-After", "300")
	}
	if st == http.StatusUnauthorized {
		challenge(w)
	}
	title := titles[reason]
	if title == "" {
		title = http.StatusText(st)
	}
	e := ref.Reply.EnhancedCode
	writeProblem(w, problem{Type: strings.ReplaceAll(reason, "_", "-"), Title: title, Status: st, Detail: ref.Reply.Message,
		SMTPCode: ref.Reply.Code, EnhancedStatus: fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2])})
}

func badRequest(w http.ResponseWriter, field, detail string) {
	writeProblem(w, problem{Type: "bad-request", Title: titles["bad_request"], Status: http.StatusBadRequest,
		Detail: detail, Field: field})
}

func challenge(w http.ResponseWriter) {
	w.Header().Add("WWW-Authenticate", `Basic realm="mailroom", charset="UTF-8"`)
	w.Header().Add("WWW-Authenticate", `Bearer realm="mailroom"`)
}

type principalKey struct{}

// authenticated runs h for a request that authenticates with HTTP Basic
// (the credential's username and password) or a bearer API key.
func (s *Server) authenticated(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ip := clientIP(r)
		var (
			pr  relay.Principal
			ref *relay.Refusal
		)
		auth := r.Header.Get("Authorization")
		if user, pw, ok := r.BasicAuth(); ok {
			pr, ref = s.opts.Relay.AuthenticatePassword(ip, user, pw)
		} else if scheme, key, ok := strings.Cut(auth, " "); ok && strings.EqualFold(scheme, "Bearer") {
			pr, ref = s.opts.Relay.AuthenticateAPIKey(ip, strings.TrimSpace(key))
		} else {
			challenge(w)
			writeProblem(w, problem{Type: "auth-required", Title: titles["auth_required"], Status: http.StatusUnauthorized,
				Detail:   "Authentication required: send HTTP Basic credentials or Authorization: Bearer <api key>",
				SMTPCode: 530, EnhancedStatus: "5.7.0"})
			return
		}
		if ref != nil {
			refusalProblem(w, ref)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, pr)))
	}
}

func principalOf(r *http.Request) relay.Principal {
	return r.Context().Value(principalKey{}).(relay.Principal)
}

func clientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
