package dnsrecord

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// This file compares records by meaning, the way receivers read them, not
// by bytes: a DNS provider may re-split strings, change spacing around
// tag separators or the case of SPF mechanisms, and none of that matters to
// a verifier.

// parseTags parses a DKIM/DMARC tag list ("v=DKIM1; k=rsa; p=…",
// RFC 6376 §3.2, RFC 7489 §6.4). Tag names are lower-cased (DMARC's are
// case-insensitive; DKIM's are lower-case in practice); surrounding
// whitespace is dropped. A tag given twice makes the record invalid.
func parseTags(s string) (map[string]string, error) {
	tags := map[string]string{}
	for part := range strings.SplitSeq(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue // a trailing ";" is allowed
		}
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not tag=value", part)
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if _, dup := tags[name]; dup {
			return nil, fmt.Errorf("tag %s= appears twice", name)
		}
		tags[name] = strings.TrimSpace(value)
	}
	return tags, nil
}

// sameDKIM compares a DKIM key record. v= must be DKIM1 if present, k=
// defaults to rsa, and p= is compared without whitespace (RFC 6376 allows
// folding whitespace inside it). Other tags change how verifiers treat the
// key (t=y marks it testing, s= and h= restrict its use), so any the wanted
// record does not have is a difference; n= (notes) is ignored.
func sameDKIM(want, got string) (bool, string) {
	w, err := parseTags(want)
	if err != nil {
		return false, "wanted record invalid: " + err.Error()
	}
	g, err := parseTags(got)
	if err != nil {
		return false, "not a DKIM key record: " + err.Error()
	}
	if v, ok := g["v"]; ok && v != "DKIM1" {
		return false, fmt.Sprintf("v=%s, want DKIM1", v)
	}
	for _, m := range []map[string]string{w, g} {
		if _, ok := m["k"]; !ok {
			m["k"] = "rsa"
		}
		m["p"] = strings.Join(strings.Fields(m["p"]), "")
		delete(m, "n")
		delete(m, "v")
	}
	if g["p"] == "" {
		return false, "p= is empty (the key is revoked)"
	}
	if w["p"] != g["p"] {
		return false, "p= holds another public key"
	}
	return sameTags(w, g)
}

// sameDMARC compares a DMARC policy record tag by tag, with the defaults of
// RFC 7489 §6.3 (pct=100, adkim=r, aspf=r) applied to both sides. Tag
// values are case-insensitive except the rua= URIs' local parts, which are
// compared as a set.
func sameDMARC(want, got string) (bool, string) {
	w, err := parseTags(want)
	if err != nil {
		return false, "wanted record invalid: " + err.Error()
	}
	g, err := parseTags(got)
	if err != nil {
		return false, "not a DMARC record: " + err.Error()
	}
	for _, m := range []map[string]string{w, g} {
		for tag, def := range map[string]string{"pct": "100", "adkim": "r", "aspf": "r"} {
			if _, ok := m[tag]; !ok {
				m[tag] = def
			}
		}
		for tag, v := range m {
			if tag != "rua" && tag != "ruf" {
				m[tag] = strings.ToLower(v)
			}
		}
		if pct, err := strconv.Atoi(m["pct"]); err == nil {
			m["pct"] = strconv.Itoa(pct)
		}
		if rua, ok := m["rua"]; ok {
			m["rua"] = uriSet(rua)
		}
	}
	return sameTags(w, g)
}

// uriSet normalises a comma-separated URI list: order and the case of the
// scheme do not matter.
func uriSet(s string) string {
	var uris []string
	for u := range strings.SplitSeq(s, ",") {
		u = strings.TrimSpace(u)
		if scheme, rest, ok := strings.Cut(u, ":"); ok {
			u = strings.ToLower(scheme) + ":" + rest
		}
		if u != "" {
			uris = append(uris, u)
		}
	}
	slices.Sort(uris)
	return strings.Join(slices.Compact(uris), ",")
}

func sameTags(w, g map[string]string) (bool, string) {
	var diffs []string
	for _, tag := range slices.Sorted(maps.Keys(w)) {
		gv, ok := g[tag]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s= missing, want %s", tag, w[tag]))
		case gv != w[tag]:
			diffs = append(diffs, fmt.Sprintf("%s=%s, want %s", tag, gv, w[tag]))
		}
	}
	for _, tag := range slices.Sorted(maps.Keys(g)) {
		if _, ok := w[tag]; !ok {
			diffs = append(diffs, fmt.Sprintf("unexpected %s=%s", tag, g[tag]))
		}
	}
	if len(diffs) > 0 {
		return false, strings.Join(diffs, "; ")
	}
	return true, ""
}

// sameSPF compares SPF records as sets of terms. Mechanism names are
// case-insensitive, a "+" qualifier is the default, and addresses are
// compared as addresses (ip6:2001:DB8::0:1 is ip6:2001:db8::1). The order
// of the terms before "all" does not change which hosts pass, so it is not
// compared; the "all" term itself must match.
func sameSPF(want, got string) (bool, string) {
	w, err := spfTerms(want)
	if err != nil {
		return false, "wanted record invalid: " + err.Error()
	}
	g, err := spfTerms(got)
	if err != nil {
		return false, err.Error()
	}
	var diffs []string
	for _, t := range w {
		if !slices.Contains(g, t) {
			diffs = append(diffs, "missing "+t)
		}
	}
	for _, t := range g {
		if !slices.Contains(w, t) {
			diffs = append(diffs, "unexpected "+t)
		}
	}
	if len(diffs) > 0 {
		return false, strings.Join(diffs, ", ")
	}
	return true, ""
}

func spfTerms(s string) ([]string, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 || !strings.EqualFold(fields[0], "v=spf1") {
		return nil, fmt.Errorf("does not start with v=spf1")
	}
	var terms []string
	for _, f := range fields[1:] {
		t := strings.ToLower(f)
		t = strings.TrimPrefix(t, "+")
		name, arg, hasArg := strings.Cut(t, ":")
		if hasArg && (name == "ip4" || name == "ip6") {
			if norm, err := ipTerm(arg); err == nil {
				t = norm
			}
		}
		terms = append(terms, t)
	}
	return terms, nil
}
