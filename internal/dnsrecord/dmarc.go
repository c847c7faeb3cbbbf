package dnsrecord

import (
	"fmt"
	"strconv"
	"strings"
)

// DMARC is the content of a domain's DMARC record (RFC 7489 §6.3).
type DMARC struct {
	// Policy is the p= tag: none, quarantine or reject.
	Policy string
	// Percent is the pct= tag, 0-100.
	Percent int
	// AggregateReportsTo are the rua= URIs ("mailto:dmarc@example.com").
	AggregateReportsTo []string
	// StrictDKIM and StrictSPF set adkim=s and aspf=s instead of r.
	StrictDKIM, StrictSPF bool
}

// Text renders "v=DMARC1; p=none; pct=100; rua=mailto:…; adkim=r; aspf=r".
// pct, adkim and aspf are written even at their defaults so the record
// says what the spec says to anyone reading it.
func (d DMARC) Text() (string, error) {
	switch d.Policy {
	case "none", "quarantine", "reject":
	default:
		return "", fmt.Errorf("DMARC policy %q is not none, quarantine or reject", d.Policy)
	}
	if d.Percent < 0 || d.Percent > 100 {
		return "", fmt.Errorf("DMARC percent %d is not in 0-100", d.Percent)
	}
	tags := []string{"v=DMARC1", "p=" + d.Policy, "pct=" + strconv.Itoa(d.Percent)}
	if len(d.AggregateReportsTo) > 0 {
		for _, u := range d.AggregateReportsTo {
			// "," separates URIs and ";" ends the tag (RFC 7489 §6.4); "!"
			// starts a size limit.
			if !strings.HasPrefix(strings.ToLower(u), "mailto:") || strings.ContainsAny(u, ",;! ") {
				return "", fmt.Errorf("DMARC report address %q is not a mailto: URI", u)
			}
		}
		tags = append(tags, "rua="+strings.Join(d.AggregateReportsTo, ","))
	}
	tags = append(tags, "adkim="+alignment(d.StrictDKIM), "aspf="+alignment(d.StrictSPF))
	return strings.Join(tags, "; "), nil
}

func alignment(strict bool) string {
	if strict {
		return "s"
	}
	return "r"
}
