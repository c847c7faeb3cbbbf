// Package mtasts implements the sending side of SMTP MTA Strict Transport
// Security (RFC 8461): discovering a recipient domain's policy through its
// "_mta-sts" TXT record and "https://mta-sts.<domain>/.well-known/mta-sts.txt",
// caching it for its max_age, and matching MX host names against it.
//
// What a policy means for delivery is decided by the caller: in "enforce"
// mode mail goes only to MX hosts the policy lists, over TLS with a
// certificate that is valid for the MX host name, and a failure to meet
// that is a temporary delivery failure, never a reason to send in
// cleartext. "testing" and "none" change nothing about delivery.
//
// Following RFC 8461 §3.3 and §5.1, an unusable answer never makes things
// worse than the last good one: when the TXT lookup fails, the TXT record
// disappears or the policy cannot be fetched, a cached, unexpired policy
// keeps applying; without one the domain is treated as having no policy.
package mtasts

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode is a policy's mode.
type Mode string

// The modes of RFC 8461 §3.2.
const (
	Enforce Mode = "enforce"
	Testing Mode = "testing"
	None    Mode = "none"
)

// MaxMaxAge is the largest max_age a policy may have (RFC 8461 §3.2: about
// one year).
const MaxMaxAge = 31557600 * time.Second

// Policy is a parsed MTA-STS policy.
type Policy struct {
	Mode Mode
	// MX are the allowed MX host patterns, lower-case: "mx.example.com"
	// or "*.example.com" (exactly one more label).
	MX     []string
	MaxAge time.Duration
	// ID is the id of the TXT record the policy was fetched under.
	ID string
}

// Matches reports whether host (an MX host name) is allowed by the policy
// (RFC 8461 §4.1).
func (p *Policy) Matches(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range p.MX {
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			_, parent, found := strings.Cut(host, ".")
			if found && parent == rest {
				return true
			}
		} else if host == pat {
			return true
		}
	}
	return false
}

// ParsePolicy parses the body served at the well-known URL (RFC 8461
// §3.2). Fields other than "mx" keep their first value; unknown fields are
// ignored; version, mode and max_age are required, and mx unless the mode
// is "none".
func ParsePolicy(text string) (*Policy, error) {
	p := &Policy{}
	seen := map[string]bool{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok || !validKey(key) {
			return nil, fmt.Errorf("mtasts: policy line %d: not \"key: value\": %q", i+1, line)
		}
		value = strings.Trim(value, " \t")
		first := !seen[key]
		seen[key] = true
		switch key {
		case "version":
			if value != "STSv1" {
				return nil, fmt.Errorf("mtasts: policy version %q, want STSv1", value)
			}
		case "mode":
			m := Mode(value)
			if m != Enforce && m != Testing && m != None {
				return nil, fmt.Errorf("mtasts: policy mode %q", value)
			}
			if first {
				p.Mode = m
			}
		case "max_age":
			n, err := strconv.ParseUint(value, 10, 64)
			if err != nil || len(value) > 10 || time.Duration(n)*time.Second > MaxMaxAge {
				return nil, fmt.Errorf("mtasts: policy max_age %q", value)
			}
			if first {
				p.MaxAge = time.Duration(n) * time.Second
			}
		case "mx":
			pat := strings.ToLower(value)
			if !validMXPattern(pat) {
				return nil, fmt.Errorf("mtasts: policy mx %q", value)
			}
			p.MX = append(p.MX, pat)
		}
	}
	for _, k := range []string{"version", "mode", "max_age"} {
		if !seen[k] {
			return nil, fmt.Errorf("mtasts: policy has no %s", k)
		}
	}
	if p.Mode != None && len(p.MX) == 0 {
		return nil, fmt.Errorf("mtasts: %s policy lists no mx", p.Mode)
	}
	return p, nil
}

// ErrNotSTS is returned by ParseRecord for a TXT record that is not an
// MTA-STS record at all (it does not start with "v=STSv1;").
var ErrNotSTS = errors.New("mtasts: not an MTA-STS record")

// ParseRecord parses a "_mta-sts" TXT record such as
// "v=STSv1; id=20160831085700Z;" and returns its id (RFC 8461 §3.1).
func ParseRecord(txt string) (id string, err error) {
	fields := strings.Split(txt, ";")
	if strings.TrimRight(fields[0], " \t") != "v=STSv1" {
		return "", ErrNotSTS
	}
	for _, f := range fields[1:] {
		f = strings.Trim(f, " \t")
		if f == "" {
			continue
		}
		k, v, ok := strings.Cut(f, "=")
		if !ok || !validKey(k) || v == "" {
			return "", fmt.Errorf("mtasts: record field %q", f)
		}
		if k == "id" && id == "" {
			if len(v) > 32 || strings.Trim(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
				return "", fmt.Errorf("mtasts: record id %q", v)
			}
			id = v
		}
	}
	if id == "" {
		return "", errors.New("mtasts: record has no id")
	}
	return id, nil
}

func validKey(k string) bool {
	if k == "" || len(k) > 32 {
		return false
	}
	for i, r := range k {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || r != '_' && r != '-' && r != '.') {
			return false
		}
	}
	return true
}

func validMXPattern(p string) bool {
	p = strings.TrimPrefix(p, "*.")
	if p == "" || len(p) > 253 {
		return false
	}
	for _, label := range strings.Split(p, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
