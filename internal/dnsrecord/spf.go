package dnsrecord

import (
	"fmt"
	"net/netip"
	"strings"
)

// SPFQualifier is the qualifier of the final "all" mechanism (RFC 7208
// §4.6.2): what receivers do with mail from hosts the record does not list.
type SPFQualifier string

const (
	SPFSoftFail SPFQualifier = "~"
	SPFFail     SPFQualifier = "-"
	SPFNeutral  SPFQualifier = "?"
)

// SPFLookupLimit is the number of DNS-querying terms (include, a, mx, ptr,
// exists, redirect) an SPF evaluation may use, nested includes counted
// (RFC 7208 §4.6.4). Past it receivers return permerror: SPF fails for all
// mail of the domain.
const SPFLookupLimit = 10

// SPF is the content of a domain's SPF record.
type SPF struct {
	// IPs are the relay pool's sending addresses, single addresses or CIDR
	// ranges (IPv4 or IPv6).
	IPs []string
	// Includes are other senders' SPF records, as domain names.
	Includes []string
	All      SPFQualifier
}

// Text renders the record: "v=spf1 ip4:… ip6:… include:… ~all". Addresses
// are normalised (IPv4-mapped IPv6 as IPv4, a full-length prefix as a bare
// address) and duplicates dropped, so equal pools render equal text.
func (s SPF) Text() (string, error) {
	terms := []string{"v=spf1"}
	seen := map[string]bool{}
	add := func(term string) {
		if !seen[term] {
			seen[term] = true
			terms = append(terms, term)
		}
	}
	for _, ip := range s.IPs {
		term, err := ipTerm(ip)
		if err != nil {
			return "", err
		}
		add(term)
	}
	for _, inc := range s.Includes {
		inc = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(inc)), ".")
		if inc == "" || strings.ContainsAny(inc, " \t:") {
			return "", fmt.Errorf("SPF include %q is not a domain name", inc)
		}
		add("include:" + inc)
	}
	switch s.All {
	case SPFSoftFail, SPFFail, SPFNeutral:
	default:
		return "", fmt.Errorf("SPF qualifier %q is not one of ~ - ?", s.All)
	}
	terms = append(terms, string(s.All)+"all")
	return strings.Join(terms, " "), nil
}

func ipTerm(s string) (string, error) {
	s = strings.TrimSpace(s)
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return "", fmt.Errorf("sending IP %q: %w", s, err)
		}
		p = p.Masked()
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return "", fmt.Errorf("sending IP %q: %w", s, err)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	addr := p.Addr()
	bits := p.Bits()
	if addr.Is4In6() && bits >= 96 {
		addr, bits = addr.Unmap(), bits-96
	}
	mech := "ip4:"
	if addr.Is6() {
		mech = "ip6:"
	}
	if bits == addr.BitLen() {
		return mech + addr.String(), nil
	}
	return fmt.Sprintf("%s%s/%d", mech, addr, bits), nil
}

// Lookups is the number of DNS-querying terms in the record itself: one per
// include. Each included record may use more; CountSPFLookups follows them
// in DNS to find the real total.
func (s SPF) Lookups() int {
	seen := map[string]bool{}
	for _, inc := range s.Includes {
		seen[strings.TrimSuffix(strings.ToLower(strings.TrimSpace(inc)), ".")] = true
	}
	return len(seen)
}
