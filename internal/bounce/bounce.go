// Package bounce owns the classification of delivery failures: from an SMTP
// reply's code, its RFC 3463 enhanced status code and its text, it tells
// what kind of failure it was (Kind) and whether the address should be
// given up on (Class.Hard). Events, DSNs, metrics and the suppression list
// all read the same classification, so they never disagree.
//
// # Rules
//
// The enhanced code decides first when it is specific (X.1.1 "bad
// destination mailbox", X.2.2 "mailbox full", X.7.10 "encryption
// needed"...). Providers put the real meaning in the text when their code
// is generic (X.0.0, X.7.0, X.7.1) or when they use a code loosely
// (Microsoft's 5.4.1 "Recipient address rejected: Access denied" is its
// directory check: no such recipient), so the text decides then. A policy
// code (X.7.x) whose text says TLS or rate limiting is refined into tls or
// throttled.
//
// # Hard and soft
//
// A class is hard when the failure is permanent (a 5xx reply, or an
// enhanced code of class 5) and its kind is not mailbox_full or throttled.
// A full mailbox and a rate limit are conditions that pass even when the
// server says 5xx (Gmail answers 552 5.2.2 for an over-quota mailbox);
// Postmark, SendGrid and Mailgun count both as soft bounces, and so does
// mailroom: the message still bounces, but the address is not suppressed.
package bounce

import (
	"regexp"
	"strconv"
	"strings"
)

// Kind is what a failure was about. Its String is a metric label and an
// event field, so the set is small and fixed.
type Kind uint8

// Kinds. None is the zero value: no failure (delivered, or not classified).
const (
	None Kind = iota
	InvalidRecipient
	MailboxFull
	Policy
	Domain
	TLS
	Throttled
	Other
)

var kindNames = [...]string{
	None:             "",
	InvalidRecipient: "invalid_recipient",
	MailboxFull:      "mailbox_full",
	Policy:           "policy",
	Domain:           "domain",
	TLS:              "tls",
	Throttled:        "throttled",
	Other:            "other",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "other"
}

// Kinds lists every kind but None, in a fixed order (metric
// initialisation, documentation).
func Kinds() []Kind {
	return []Kind{InvalidRecipient, MailboxFull, Policy, Domain, TLS, Throttled, Other}
}

// ParseKind is the inverse of Kind.String; "" is None.
func ParseKind(s string) (Kind, bool) {
	for k, n := range kindNames {
		if n == s {
			return Kind(k), true
		}
	}
	return None, false
}

// Class is a classified failure: its kind and whether the server said it
// was permanent. The zero Class is "no failure".
type Class struct {
	Kind Kind `json:"kind"`
	// Permanent: the reply was 5xx (or the enhanced code's class 5).
	Permanent bool `json:"permanent"`
}

// Hard reports whether the address should be given up on: a permanent
// failure of a kind that does not pass by itself (see the package doc).
func (c Class) Hard() bool {
	return c.Kind != None && c.Permanent && c.Kind != MailboxFull && c.Kind != Throttled
}

// Soft reports a failure that is not hard.
func (c Class) Soft() bool { return c.Kind != None && !c.Hard() }

// String is the kind's name ("invalid_recipient"); "" for no failure.
func (c Class) String() string { return c.Kind.String() }

// Severity is "hard" or "soft" ("" for no failure): the bounce type events
// carry.
func (c Class) Severity() string {
	switch {
	case c.Kind == None:
		return ""
	case c.Hard():
		return "hard"
	}
	return "soft"
}

var sentences = [...]string{
	InvalidRecipient: "The recipient's mailbox does not exist (invalid recipient).",
	MailboxFull:      "The recipient's mailbox is full (mailbox full).",
	Policy:           "The receiving server refused the message by its policy, for example as spam, because the sender is blocklisted or because sender authentication (SPF, DKIM, DMARC) failed (policy).",
	Domain:           "The recipient's domain does not exist or does not accept mail, or its mail servers could not be found in DNS (domain).",
	TLS:              "A secure (TLS) connection that the recipient's domain requires could not be made (TLS or security).",
	Throttled:        "The receiving server is limiting how much mail it accepts from this relay at the moment (throttled).",
	Other:            "The delivery failed for another reason; the server's reply or the detail below says which (other).",
}

// Sentence is one human sentence for the class, for the human-readable
// part of a DSN; "" for no failure.
func (c Class) Sentence() string {
	if c.Kind == None || int(c.Kind) >= len(sentences) {
		return ""
	}
	return sentences[c.Kind]
}

// Classify classifies a failure from the SMTP reply code (0 when there was
// none), the enhanced status code as sent ("5.1.1"; "" if none) and the
// reply text. A 2xx reply is no failure. See the package doc for the rules.
func Classify(code int, enhanced, text string) Class {
	class, subject, detail, ok := parseEnhanced(enhanced)
	if code/100 == 2 || (code == 0 && class == 2) {
		return Class{}
	}
	permanent := code/100 == 5
	if code == 0 {
		permanent = class == 5
	}
	k, specific := Other, false
	if ok {
		k, specific = byEnhanced(subject, detail)
	}
	t := byText(text, subject)
	switch {
	case specific && k == Policy && (t == TLS || t == Throttled):
		k = t
	case specific:
	case t != Other:
		k = t
	}
	return Class{Kind: k, Permanent: permanent}
}

// parseEnhanced splits "5.1.1" into its numbers.
func parseEnhanced(s string) (class, subject, detail int, ok bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return 0, 0, 0, false
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 || len(p) > 3 {
			return 0, 0, 0, false
		}
		n[i] = v
	}
	if n[0] != 2 && n[0] != 4 && n[0] != 5 {
		return 0, 0, 0, false
	}
	return n[0], n[1], n[2], true
}

// byEnhanced maps subject.detail (RFC 3463 and its IANA registry) to a
// kind; specific is false for the generic codes whose text matters more.
func byEnhanced(subject, detail int) (Kind, bool) {
	switch subject {
	case 1: // addressing
		switch detail {
		case 1, 3, 4, 6, 10: // bad mailbox, bad syntax, ambiguous, moved, null MX (Microsoft: RecipientNotFound)
			return InvalidRecipient, true
		case 2: // bad destination system
			return Domain, true
		case 7, 8: // the sender's address or domain
			return Policy, true
		}
	case 2: // mailbox
		switch detail {
		case 1: // mailbox disabled; but Gmail's 4.2.1 is "receiving mail too quickly"
			return InvalidRecipient, false
		case 2:
			return MailboxFull, true
		}
	case 4: // network and routing
		switch detail {
		case 3: // directory (DNS) server failure
			return Domain, true
		case 4: // unable to route
			return Domain, true
		case 1: // Microsoft uses 5.4.1 for its directory check; the text tells
			return Other, false
		case 310: // Microsoft: DNS domain does not exist
			return Domain, true
		}
		return Other, false
	case 7: // security and policy
		switch detail {
		case 4, 5, 6, 10, 11: // security features, cryptographic failure, algorithm, encryption needed
			return TLS, true
		case 13: // user account disabled
			return InvalidRecipient, true
		case 0, 1: // generic: providers explain in the text
			return Policy, false
		}
		return Policy, true
	}
	return Other, false
}

// The text patterns, from the providers' documented replies (see the
// test). Checked in this order; the first match wins.
var (
	reInvalid  = regexp.MustCompile(`(?i)(no such (user|mailbox|recipient|address)|user unknown|unknown (user|recipient|mailbox|address)|mailbox (not found|does not exist|doesn't exist|unavailable: no such|is disabled|disabled)|recipient (not found|does not exist|unknown|address rejected: access denied)|address (not found|does not exist)|invalid (recipient|mailbox)|(doesn't|does not) have an? [^ ]+ account|account (that you tried to reach )?(does not exist|is disabled|has been disabled)|recipientnotfound|unrouteable address|not our customer|user (not found|doesn't exist|does not exist)|no mailbox here)`)
	reFull     = regexp.MustCompile(`(?i)(mailbox (is )?full|over ?quota|quota exceeded|exceeded (the )?(storage|quota)|out of storage|mailbox size limit)`)
	reTLS      = regexp.MustCompile(`(?i)(starttls|\btls\b|must issue a starttls|encryption (is )?(required|needed)|certificate|\bdane\b|tlsa|mta-sts|secure connection)`)
	reDomain   = regexp.MustCompile(`(?i)(null mx|no mx|nxdomain|host (or domain name )?not found|domain (not found|does not exist|doesn't exist)|unknown (host|domain)|no such domain|name service error|unrouteable mail domain|dns domain|domain name not found|relay access denied|relaying denied|relay not permitted)`)
	reThrottle = regexp.MustCompile(`(?i)(rate.?limit|too (many|much) (connections|messages|mail|recipients|concurrent)|too quickly|too fast|greylist|graylist|try again in \d|deferred due to (unexpected )?volume|temporarily deferred|unusual rate|(rate|relay|sending|daily|hourly|connection) limits? (exceeded|reached)|throttl|slow down|resources temporarily unavailable|max(imum)? (message|connection)s? per)`)
	rePolicy   = regexp.MustCompile(`(?i)(spam|blocked|block ?list|black ?list|blacklisted|listed (at|in|on|by)|spamhaus|barracuda|spamcop|\[bl\d+\]|\bdmarc\b|\bspf\b|\bdkim\b|unauthenticated|not authenticated|authentication|reputation|policy|content|suspicious|virus|malware|phish|prohibit|access denied|not accepted from this ip|\(s3150\)|not allowed|refused|rejected for policy|\brbl\b|dnsbl|poor reputation|complaint)`)
	reLater    = regexp.MustCompile(`(?i)(try again later|please try again|temporar(il)?y)`)
)

// byText classifies by the reply text; Other when nothing matched.
// subject is the enhanced code's subject (0 when none): "try again later"
// means throttled only with a policy code (X.7.x), the way Yahoo and
// Microsoft defer senders they are limiting.
func byText(text string, subject int) Kind {
	switch {
	case text == "":
		return Other
	case reInvalid.MatchString(text):
		return InvalidRecipient
	case reFull.MatchString(text):
		return MailboxFull
	case reThrottle.MatchString(text):
		return Throttled
	case reTLS.MatchString(text):
		return TLS
	case reDomain.MatchString(text):
		return Domain
	case subject == 7 && reLater.MatchString(text):
		return Throttled
	case rePolicy.MatchString(text):
		return Policy
	}
	return Other
}
