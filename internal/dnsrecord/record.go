package dnsrecord

import "strings"

// Kind is what a record is for; it decides how its meaning is compared.
type Kind string

const (
	KindDKIM  Kind = "DKIM"
	KindSPF   Kind = "SPF"
	KindDMARC Kind = "DMARC"
)

// Record is one TXT record a sending domain needs.
type Record struct {
	Kind Kind
	// Name is the fully qualified owner name, lower case, without the
	// trailing dot ("mr-20261125._domainkey.example.com").
	Name string
	// Value is the text receivers see once the TXT strings are joined.
	Value string
}

// Type is the DNS record type: always TXT for mail authentication records.
func (Record) Type() string { return "TXT" }

// DKIMName is where a DKIM key record lives (RFC 6376 §3.6.2.1).
func DKIMName(selector, domain string) string {
	return selector + "._domainkey." + normName(domain)
}

// DMARCName is where a domain's DMARC record lives (RFC 7489 §6.1).
func DMARCName(domain string) string {
	return "_dmarc." + normName(domain)
}

func normName(name string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
}
