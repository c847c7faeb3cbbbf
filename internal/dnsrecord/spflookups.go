package dnsrecord

import (
	"context"
	"fmt"
	"strings"
)

// SPFLookupCount is what counting an SPF record's DNS lookups found.
type SPFLookupCount struct {
	// Lookups counted, nested includes and redirects followed. Counting
	// stops once the limit is passed.
	Lookups int
	// Incomplete names terms whose own lookups could not be counted (an
	// include without an SPF record, a macro that depends on the message);
	// each counted as one. Lookups is then a lower bound.
	Incomplete []string
}

// Exceeded reports whether the count is over RFC 7208's limit.
func (c SPFLookupCount) Exceeded() bool { return c.Lookups > SPFLookupLimit }

// CountSPFLookups counts the DNS-querying terms an evaluation of the SPF
// record text would use (RFC 7208 §4.6.4: include, a, mx, ptr, exists and
// redirect, nested records included), looking included records up at the
// first resolver. The record mailroom publishes spends one lookup per
// include, but what an include costs depends on the other sender's record,
// which changes without notice; that is why this is looked up, not
// computed. An error means the resolver did not answer.
func (v Verifier) CountSPFLookups(ctx context.Context, text string) (SPFLookupCount, error) {
	var c SPFLookupCount
	if len(v.Resolvers) == 0 {
		return c, fmt.Errorf("%w: no resolvers", errUnreachable)
	}
	err := v.countSPF(ctx, text, map[string]bool{}, &c)
	return c, err
}

// countSPF adds the lookups of one record. path holds the records being
// evaluated above this one, to catch include loops.
func (v Verifier) countSPF(ctx context.Context, text string, path map[string]bool, c *SPFLookupCount) error {
	terms, err := spfTerms(text)
	if err != nil {
		return nil // not an SPF record: nothing more to count
	}
	for _, t := range terms {
		if c.Exceeded() {
			return nil
		}
		name, arg, _ := strings.Cut(strings.TrimLeft(t, "+-~?"), ":")
		if n, a, ok := strings.Cut(t, "="); ok && n == "redirect" {
			name, arg = "redirect", a
		}
		name, _, _ = strings.Cut(name, "/") // a/24, mx/24
		switch name {
		case "a", "mx", "ptr", "exists":
			c.Lookups++
		case "include", "redirect":
			c.Lookups++
			if err := v.follow(ctx, arg, path, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// follow counts the lookups of the SPF record at domain. The same record
// included twice costs twice, as in a real evaluation.
func (v Verifier) follow(ctx context.Context, domain string, path map[string]bool, c *SPFLookupCount) error {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if strings.Contains(domain, "%") {
		c.Incomplete = append(c.Incomplete, domain+" (macro)")
		return nil
	}
	if path[domain] {
		// An include loop: a real evaluation recurses until it runs out of
		// lookups.
		c.Incomplete = append(c.Incomplete, domain+" (includes itself)")
		c.Lookups = max(c.Lookups, SPFLookupLimit+1)
		return nil
	}
	txts, err := v.lookupTXT(ctx, v.Resolvers[0], domain)
	if err != nil {
		return err
	}
	var spf []string
	for _, t := range txts {
		if f := strings.Fields(t); len(f) > 0 && strings.EqualFold(f[0], "v=spf1") {
			spf = append(spf, t)
		}
	}
	if len(spf) != 1 {
		c.Incomplete = append(c.Incomplete, fmt.Sprintf("%s (%d SPF records)", domain, len(spf)))
		return nil
	}
	path[domain] = true
	defer delete(path, domain)
	return v.countSPF(ctx, spf[0], path, c)
}
