package dnsrecord

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// DefaultQueryTimeout bounds one DNS query. A resolver that does not answer
// within it is reported as unreachable, not as a missing record.
const DefaultQueryTimeout = 5 * time.Second

// Verifier looks records up at a set of resolvers and compares their meaning
// with what should be published.
type Verifier struct {
	// Resolvers are "host:port" addresses (see ResolverAddrs). A record is
	// verified only when every resolver serves it.
	Resolvers []string
	// QueryTimeout bounds each query; zero means DefaultQueryTimeout.
	QueryTimeout time.Duration
}

// Check is the result of verifying one record.
type Check struct {
	Record   Record
	Verified bool
	// Reason says why the record is not verified, naming the record and the
	// resolver.
	Reason string
	// Unreachable: a resolver did not answer (timeout, refused connection,
	// SERVFAIL), so nothing is known about the record. Callers retry these
	// with backoff rather than reporting the record as wrong.
	Unreachable bool
	// Missing: the resolver answered, with no record of this kind at the
	// name (typically not published yet), as opposed to a wrong one.
	Missing bool
}

// ResolverAddrs turns the spec's resolver list ("ip", "ip:port",
// "[ipv6]:port") into dialable addresses, port 53 by default. An empty list
// means the system's resolvers from resolvConf (normally /etc/resolv.conf).
func ResolverAddrs(spec []string, resolvConf string) ([]string, error) {
	if len(spec) == 0 {
		cfg, err := dns.ClientConfigFromFile(resolvConf)
		if err != nil {
			return nil, fmt.Errorf("no resolvers given and %s unreadable: %w", resolvConf, err)
		}
		if len(cfg.Servers) == 0 {
			return nil, fmt.Errorf("no resolvers given and none in %s", resolvConf)
		}
		spec = nil
		for _, s := range cfg.Servers {
			spec = append(spec, net.JoinHostPort(s, cfg.Port))
		}
	}
	out := make([]string, 0, len(spec))
	for _, r := range spec {
		if ip := net.ParseIP(r); ip != nil {
			out = append(out, net.JoinHostPort(r, "53"))
			continue
		}
		host, port, err := net.SplitHostPort(r)
		if err != nil || net.ParseIP(host) == nil || port == "" {
			return nil, fmt.Errorf("resolver %q is not an IP address with an optional port", r)
		}
		out = append(out, r)
	}
	return out, nil
}

// Verify checks every record at every resolver, concurrently, and returns
// one Check per record in the order given.
func (v Verifier) Verify(ctx context.Context, records []Record) []Check {
	checks := make([]Check, len(records))
	if len(v.Resolvers) == 0 {
		for i, r := range records {
			checks[i] = Check{Record: r, Reason: "no resolvers to check " + r.Name + " at", Unreachable: true}
		}
		return checks
	}
	var wg sync.WaitGroup
	per := make([][]Check, len(records))
	for i, r := range records {
		per[i] = make([]Check, len(v.Resolvers))
		for j, resolver := range v.Resolvers {
			wg.Go(func() { per[i][j] = v.check(ctx, resolver, r) })
		}
	}
	wg.Wait()
	for i, r := range records {
		checks[i] = Check{Record: r, Verified: true}
		// The first failure decides, with an unreachable resolver reported
		// after a wrong record: a wrong answer is something to fix.
		for _, c := range per[i] {
			if !c.Verified && !c.Unreachable {
				checks[i] = c
				break
			}
		}
		if checks[i].Verified {
			for _, c := range per[i] {
				if !c.Verified {
					checks[i] = c
					break
				}
			}
		}
	}
	return checks
}

// errUnreachable marks lookups that got no usable answer from the resolver.
var errUnreachable = errors.New("resolver unreachable")

func (v Verifier) check(ctx context.Context, resolver string, r Record) Check {
	txts, err := v.lookupTXT(ctx, resolver, r.Name)
	if err != nil {
		return Check{Record: r, Reason: err.Error(), Unreachable: errors.Is(err, errUnreachable)}
	}
	ok, why := judge(r, txts)
	if ok {
		return Check{Record: r, Verified: true}
	}
	return Check{Record: r, Reason: fmt.Sprintf("%s TXT %s at %s: %s", r.Kind, r.Name, resolver, why), Missing: why == noSPF || why == noDMARC || why == noDKIM}
}

// What judge says when a name holds no record of the kind at all.
const (
	noSPF   = "no v=spf1 record"
	noDMARC = "no v=DMARC1 record"
	noDKIM  = "no key record"
)

// judge decides whether the TXT records found at a name (each its strings
// joined) publish r with the same meaning.
func judge(r Record, found []string) (bool, string) {
	switch r.Kind {
	case KindSPF:
		var spf []string
		for _, t := range found {
			if f := strings.Fields(t); len(f) > 0 && strings.EqualFold(f[0], "v=spf1") {
				spf = append(spf, t)
			}
		}
		switch len(spf) {
		case 0:
			return false, noSPF
		case 1:
			return sameSPF(r.Value, spf[0])
		default:
			return false, fmt.Sprintf("%d v=spf1 records; RFC 7208 allows one (receivers return permerror)", len(spf))
		}
	case KindDMARC:
		var dmarc []string
		for _, t := range found {
			if tags, err := parseTags(t); err == nil && tags["v"] == "DMARC1" && strings.HasPrefix(strings.TrimSpace(t), "v") {
				dmarc = append(dmarc, t)
			}
		}
		switch len(dmarc) {
		case 0:
			return false, noDMARC
		case 1:
			return sameDMARC(r.Value, dmarc[0])
		default:
			return false, fmt.Sprintf("%d v=DMARC1 records; RFC 7489 ignores them all", len(dmarc))
		}
	case KindDKIM:
		switch len(found) {
		case 0:
			return false, noDKIM
		case 1:
			return sameDKIM(r.Value, found[0])
		default:
			return false, fmt.Sprintf("%d TXT records; verifiers may use any of them (RFC 6376 §3.6.2.2)", len(found))
		}
	default:
		return false, fmt.Sprintf("unknown record kind %q", r.Kind)
	}
}

// lookupTXT asks resolver for the TXT records at name and returns each
// record's strings joined, as receivers read them (RFC 7208 §3.3,
// RFC 6376 §3.6.2.2). NXDOMAIN and NODATA are no records, not errors.
func (v Verifier) lookupTXT(ctx context.Context, resolver, name string) ([]string, error) {
	timeout := v.QueryTimeout
	if timeout == 0 {
		timeout = DefaultQueryTimeout
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	// Large enough for a 4096-bit key and an SPF record beside it; a
	// truncated answer is retried over TCP anyway.
	m.SetEdns0(4096, false)

	var in *dns.Msg
	for _, network := range []string{"udp", "tcp"} {
		qctx, cancel := context.WithTimeout(ctx, timeout)
		c := &dns.Client{Net: network, Timeout: timeout}
		var err error
		in, _, err = c.ExchangeContext(qctx, m, resolver)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%w: resolver %s did not answer for TXT %s (%s)", errUnreachable, resolver, name, describeNetError(err, timeout))
		}
		if !in.Truncated {
			break
		}
	}
	switch in.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return nil, fmt.Errorf("%w: resolver %s answered %s for TXT %s", errUnreachable, resolver, dns.RcodeToString[in.Rcode], name)
	}
	var out []string
	for _, rr := range in.Answer {
		// Answers may follow a CNAME (a delegated DKIM selector): the TXT
		// records at the end of the chain are the ones receivers use.
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, joinTXT(txt.Txt))
		}
	}
	return out, nil
}

// describeNetError says why a query failed without the local address and
// port, which change with every query: the text ends up in status, and a
// reason that changes each time would rewrite status at each retry.
func describeNetError(err error, timeout time.Duration) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Sprintf("no reply within %s", timeout)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return "connection refused"
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Op + ": " + op.Err.Error()
	}
	return err.Error()
}

// joinTXT joins a TXT record's strings as receivers do, undoing the
// presentation-form escapes miekg/dns keeps in dns.TXT.Txt (\" \\ \DDD).
func joinTXT(strs []string) string {
	var b strings.Builder
	for _, s := range strs {
		b.WriteString(unescapeTXT(s))
	}
	return b.String()
}

func unescapeTXT(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			b.WriteByte(byte((int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0'))))
			i += 3
			continue
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
