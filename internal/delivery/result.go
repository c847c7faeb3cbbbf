package delivery

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"mailroom.io/mailroom/internal/bounce"
	"mailroom.io/mailroom/internal/dsn"
)

// Status is a recipient's outcome after one delivery attempt.
type Status int

const (
	// Delivered: the remote server accepted responsibility (2xx after
	// DATA).
	Delivered Status = iota + 1
	// Deferred: a temporary failure (4xx, network, DNS, TLS policy); try
	// again later.
	Deferred
	// Failed: a permanent failure (5xx, null MX, no such domain); bounce.
	Failed
)

func (s Status) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Deferred:
		return "deferred"
	case Failed:
		return "bounced"
	}
	return "unknown"
}

// Reason classifies why a recipient was deferred or failed. It is a metric
// label, so the set is small and fixed.
type Reason string

// Reasons.
const (
	ReasonNone        Reason = ""             // delivered
	ReasonUnknownUser Reason = "unknown_user" // "no such user" class RCPT reply
	ReasonRecipient   Reason = "recipient"    // another RCPT refusal
	ReasonMessage     Reason = "message"      // MAIL or DATA refused
	ReasonConnection  Reason = "connection"   // connect, greeting, timeout, dropped connection
	ReasonHostDown    Reason = "host_down"    // every host recently unreachable; not tried
	ReasonDNS         Reason = "dns"          // temporary DNS failure
	ReasonNoRoute     Reason = "no_route"     // no such domain, or MX hosts without addresses
	ReasonNullMX      Reason = "null_mx"      // RFC 7505
	ReasonTLS         Reason = "tls"          // TLS required but not possible
	ReasonMTASTS      Reason = "mta_sts"      // RFC 8461 policy could not be met
	ReasonSize        Reason = "size"         // larger than the server's SIZE
	ReasonUnsupported Reason = "unsupported"  // SMTPUTF8 or 8BITMIME needed but not offered
	ReasonAuth        Reason = "auth"         // smarthost refused our credentials
	ReasonSuppressed  Reason = "suppressed"   // on the suppression list
	ReasonLocal       Reason = "local"        // the message could not be read, or shutdown
	// ReasonExpired is for the scheduler: the message outlived maxAge.
	ReasonExpired Reason = "expired"
)

// Reply is an SMTP reply.
type Reply struct {
	// Code is the reply code; 0 when there was no reply.
	Code int
	// Enhanced is the RFC 3463 status code as sent ("5.1.1"); "" if none.
	Enhanced string
	// Text is the reply text without code and enhanced code, its lines
	// separated by "\n".
	Text string
}

// String renders the reply as the server sent it, one line per reply
// line: "550-5.1.1 first line\n550 5.1.1 last line".
func (r Reply) String() string {
	if r.Code == 0 {
		return ""
	}
	lines := strings.Split(r.Text, "\n")
	var b strings.Builder
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(strconv.Itoa(r.Code) + sep)
		if r.Enhanced != "" {
			b.WriteString(r.Enhanced + " ")
		}
		b.WriteString(l)
	}
	return b.String()
}

// replyOf returns the SMTP reply carried by err, if it is one.
func replyOf(err error) (Reply, bool) {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return Reply{}, false
	}
	r := Reply{Code: se.Code, Text: se.Message}
	if ec := se.EnhancedCode; ec != (smtp.EnhancedCode{}) && ec != smtp.NoEnhancedCode {
		r.Enhanced = fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2])
	}
	return r, true
}

// Result is one recipient's outcome.
type Result struct {
	Recipient string
	Status    Status
	Reason    Reason
	// Code is the enhanced status code to report (RFC 3463), always set
	// and always of Status's class: the server's own when it sent one.
	Code string
	// Reply is the remote server's reply for this recipient: the RCPT
	// refusal, or the reply to MAIL or to the end of DATA. Code 0 when no
	// server answered.
	Reply Reply
	// Detail describes a failure without a reply (DNS, connection, TLS
	// policy) or adds context to one.
	Detail string
	// RemoteHost and RemoteIP identify the server that gave the outcome
	// (the last one tried, when all failed).
	RemoteHost string
	RemoteIP   string
	// TLSVersion is the session's TLS version ("TLS 1.3"); "" in
	// cleartext or without a session.
	TLSVersion string
	// Duration is how long the attempt for this recipient's domain took.
	Duration time.Duration
	// SuppressionCandidate is set for permanent "no such user" class
	// refusals: the address should go on the suppression list.
	SuppressionCandidate bool
	// Class is the failure's bounce class (see ClassOf); zero when
	// delivered. Deliver sets it on every result.
	Class bounce.Class
	// NotBefore is set with ReasonHostDown: no server was tried because
	// all failed recently, and none will be tried again before this time.
	// Such a result is not an attempt; the scheduler retries then.
	NotBefore time.Time
}

// Diagnostic is the reply as sent, or the detail when there was none.
func (r Result) Diagnostic() string {
	if r.Reply.Code != 0 {
		if r.Detail != "" {
			return r.Reply.String() + " (" + r.Detail + ")"
		}
		return r.Reply.String()
	}
	return r.Detail
}

// DSNRecipient describes the result for a delivery status notification:
// action Failed for a failed result, Delayed otherwise (with
// willRetryUntil), at the time of the attempt.
func (r Result) DSNRecipient(originalRecipient string, attempt, willRetryUntil time.Time) dsn.Recipient {
	action := dsn.Delayed
	switch r.Status {
	case Failed:
		action = dsn.Failed
	case Delivered:
		action = dsn.Relayed
	}
	d := dsn.Recipient{
		FinalRecipient:    r.Recipient,
		OriginalRecipient: originalRecipient,
		Action:            action,
		Status:            r.Code,
		RemoteMTA:         r.RemoteHost,
		SMTPReply:         r.Reply.String(),
		Detail:            r.Detail,
		LastAttemptDate:   attempt,
		Class:             r.Class,
	}
	if action == dsn.Delayed {
		d.WillRetryUntil = willRetryUntil
	}
	return d
}

// outcome builds a result from a reply, classifying it: 2xx delivered,
// 4xx deferred, 5xx failed.
func outcome(rcpt string, rep Reply, reason Reason) Result {
	st := Deferred
	switch rep.Code / 100 {
	case 2:
		st, reason = Delivered, ReasonNone
	case 5:
		st = Failed
	}
	return Result{Recipient: rcpt, Status: st, Reason: reason, Reply: rep, Code: statusCode(st, rep.Enhanced)}
}

// local builds a result without a reply.
func local(rcpt string, st Status, reason Reason, code, detail string) Result {
	return Result{Recipient: rcpt, Status: st, Reason: reason, Code: statusCode(st, code), Detail: detail}
}

// statusCode returns enhanced (or a generic code) with the class digit
// matching st: a 5xx greeting that only made us try elsewhere is still a
// deferral.
func statusCode(st Status, enhanced string) string {
	class := map[Status]string{Delivered: "2", Deferred: "4", Failed: "5"}[st]
	if _, rest, ok := strings.Cut(enhanced, "."); ok && enhanced != "" {
		return class + "." + rest
	}
	return class + ".0.0"
}

// ClassOf classifies r's failure. Failures the relay finds itself keep
// the kind their reason implies (a suppressed address is an invalid
// recipient, a null MX or missing domain a domain problem, a TLS or
// MTA-STS failure a TLS problem), even when a server's reply came with
// them; otherwise the server's reply decides, and without one the
// enhanced code. The class is permanent when the recipient
// failed (Status Failed): a 5xx greeting that only made the relay try the
// next host is not.
func ClassOf(r Result) bounce.Class {
	if r.Status == Delivered || r.Status == 0 {
		return bounce.Class{}
	}
	c := bounce.Class{Kind: bounce.Other, Permanent: r.Status == Failed}
	switch r.Reason {
	case ReasonSuppressed:
		c.Kind = bounce.InvalidRecipient
	case ReasonNoRoute, ReasonNullMX, ReasonDNS:
		c.Kind = bounce.Domain
		if r.Code == "5.1.3" { // the address itself is malformed
			c.Kind = bounce.InvalidRecipient
		}
	case ReasonTLS, ReasonMTASTS:
		c.Kind = bounce.TLS
	default:
		if r.Reply.Code != 0 {
			c.Kind = bounce.Classify(r.Reply.Code, r.Reply.Enhanced, r.Reply.Text).Kind
		} else if k := bounce.Classify(0, r.Code, "").Kind; k != bounce.None {
			// The detail is the relay's own wording, not a server's: only
			// the code counts.
			c.Kind = k
		}
	}
	return c
}

// IsUnknownUser reports whether a permanent RCPT refusal says the mailbox
// does not exist: its bounce class is a hard invalid_recipient. Without an
// enhanced code only 550, 551 and 553 count: a bare 554 is "transaction
// failed", which servers also send for refusals whose text only looks
// like a missing user.
func IsUnknownUser(r Reply) bool {
	c := bounce.Classify(r.Code, r.Enhanced, r.Text)
	if c.Kind != bounce.InvalidRecipient || !c.Hard() {
		return false
	}
	return r.Enhanced != "" || r.Code == 550 || r.Code == 551 || r.Code == 553
}

// parseReply reads back a reply rendered by Reply.String (the host-down
// memory keeps replies as text).
func parseReply(s string) (Reply, bool) {
	var rep Reply
	var texts []string
	for _, line := range strings.Split(s, "\n") {
		if len(line) < 4 || (line[3] != ' ' && line[3] != '-') {
			return Reply{}, false
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code < 200 || code > 599 {
			return Reply{}, false
		}
		rep.Code = code
		text := line[4:]
		if ec, rest, ok := strings.Cut(text, " "); ok && validEnhanced(ec) {
			rep.Enhanced, text = ec, rest
		}
		texts = append(texts, text)
	}
	rep.Text = strings.Join(texts, "\n")
	return rep, rep.Code != 0
}
