package relay

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
	"golang.org/x/net/idna"
)

// addressError is why an envelope address is refused.
type addressError struct {
	why string
	// needsUTF8: the address is valid only with SMTPUTF8 (RFC 6531).
	needsUTF8 bool
}

// reply is the refusal of the address in MAIL FROM (sender) or RCPT TO:
// 553 with 5.1.7 or 5.1.3 (RFC 3463), or 5.6.7 for a non-ASCII address
// without SMTPUTF8 (RFC 6531 §3.5).
func (e *addressError) reply(sender bool, addr string) *smtp.SMTPError {
	what, enh := "Recipient", smtp.EnhancedCode{5, 1, 3}
	if sender {
		what, enh = "Sender", smtp.EnhancedCode{5, 1, 7}
	}
	if e.needsUTF8 {
		return smtpErr(553, smtp.EnhancedCode{5, 6, 7},
			fmt.Sprintf("%s address %+q is not ASCII: send MAIL FROM with SMTPUTF8 (RFC 6531)", what, addr))
	}
	return smtpErr(553, enh, fmt.Sprintf("%s address %+q is not a valid mailbox (RFC 5321 section 4.1.2): %s", what, addr, e.why))
}

// envelopeAddress checks an address as go-smtp parsed it from MAIL FROM or
// RCPT TO (a quoted local part comes unquoted) and returns it in the form
// RFC 5321 §4.1.2 prefers: the local part as a dot-string where it can be
// one, else quoted, so a quoted local part reaches the next hop with its
// quotes. UTF-8 is allowed only with SMTPUTF8.
func envelopeAddress(addr string, smtputf8 bool) (string, *addressError) {
	if !utf8.ValidString(addr) {
		return "", &addressError{why: "not valid UTF-8"}
	}
	for _, r := range addr {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "", &addressError{why: fmt.Sprintf("control character %U", r)}
		}
	}
	if !smtputf8 && !isASCII(addr) {
		return "", &addressError{why: "not ASCII", needsUTF8: true}
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", &addressError{why: "not an address local@domain"}
	}
	local, domain := addr[:at], addr[at+1:]
	if len(local) > 64 {
		return "", &addressError{why: "local part longer than 64 octets (RFC 5321 section 4.5.3.1.1)"}
	}
	if why := checkDomain(domain); why != "" {
		return "", &addressError{why: why}
	}
	if !isDotString(local) {
		local = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(local) + `"`
	}
	out := local + "@" + domain
	if len(out) > 254 {
		return "", &addressError{why: "longer than 254 octets (RFC 5321 section 4.5.3.1.3)"}
	}
	return out, nil
}

// checkDomain accepts a host name: LDH labels (RFC 5321 §4.1.2), or with
// SMTPUTF8 U-labels that IDNA accepts. Address literals are refused: mail
// is delivered by MX lookup.
func checkDomain(d string) string {
	if len(d) > 253 {
		return "domain longer than 253 octets"
	}
	if strings.HasPrefix(d, "[") {
		return "address literals are not accepted; use a domain name"
	}
	if !isASCII(d) {
		if _, err := idna.Lookup.ToASCII(d); err != nil {
			return "domain is not a valid internationalized domain name: " + err.Error()
		}
		return ""
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return "domain has an empty label or one longer than 63 octets"
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "domain label starts or ends with a hyphen"
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Sprintf("domain has the character %q", c)
			}
		}
	}
	return ""
}

// isDotString reports whether s is an RFC 5321 Dot-string (atext, and with
// SMTPUTF8 non-ASCII, between single dots).
func isDotString(s string) bool {
	for _, atom := range strings.Split(s, ".") {
		if atom == "" {
			return false
		}
		for _, r := range atom {
			if r < 0x80 && !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~", r) {
				return false
			}
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
