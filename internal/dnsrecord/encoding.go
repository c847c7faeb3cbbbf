package dnsrecord

import (
	"fmt"
	"strings"
)

// Encoding says how a TXT value is written as a DNSEndpoint target.
type Encoding string

const (
	// Split writes RFC 1035 presentation form: the value cut into
	// character-strings of at most 255 bytes, each in double quotes,
	// separated by one space: "v=DKIM1; k=rsa; p=MIIB…" "…IDAQAB". This is
	// what external-dns' rfc2136 provider needs (it pastes the target into
	// "<name> <ttl> TXT <target>" and parses that with miekg/dns) and what
	// any provider taking zone-file syntax accepts.
	Split Encoding = "Split"
	// Single writes the value as it is, one raw string, for providers whose
	// API takes the text and splits it itself.
	Single Encoding = "Single"
)

// maxStringLen is the longest TXT character-string (RFC 1035 §3.3: a
// length octet followed by that many bytes).
const maxStringLen = 255

// EncodeTXT turns a record value into a DNSEndpoint target.
func EncodeTXT(value string, enc Encoding) (string, error) {
	switch enc {
	case Single:
		return value, nil
	case Split:
		return strings.Join(quotedStrings(value), " "), nil
	default:
		return "", fmt.Errorf("unknown TXT encoding %q", enc)
	}
}

// quotedStrings cuts value into character-strings of at most 255 bytes on
// the wire and quotes each. Cutting happens before escaping, so an escape
// sequence is never split and every string stays within 255 bytes once the
// escapes are undone.
func quotedStrings(value string) []string {
	if value == "" {
		return []string{`""`}
	}
	var out []string
	for len(value) > 0 {
		n := min(maxStringLen, len(value))
		out = append(out, `"`+escapeTXT(value[:n])+`"`)
		value = value[n:]
	}
	return out
}

// escapeTXT escapes a character-string for presentation form the way
// miekg/dns prints it back: \" and \\ for the two characters that would end
// or escape the string, \DDD for bytes outside printable ASCII. Producing
// the same form miekg/dns reads back is what lets a provider that compares
// targets as text see no difference on the next sync.
func escapeTXT(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			fmt.Fprintf(&b, `\%03d`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
