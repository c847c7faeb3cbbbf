package delivery

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

// ResolverOptions configure a Resolver.
type ResolverOptions struct {
	// Servers are the DNS servers to ask, "host" or "host:port" (port 53
	// by default), in order. Empty: the nameservers of ResolvConf.
	Servers []string
	// ResolvConf is read when Servers is empty; default /etc/resolv.conf.
	ResolvConf string
	// Timeout is how long to wait for one server's answer to one query;
	// default resolv.conf's "timeout" option, or 5s.
	Timeout time.Duration
	// Attempts is how many times the server list is tried; default
	// resolv.conf's "attempts" option, or 2.
	Attempts int
	// MaxTTL caps how long any answer is cached; default 1 hour.
	MaxTTL time.Duration
	// FailureTTL is how long a failed lookup (SERVFAIL, REFUSED, no answer)
	// is remembered, so that mail for a domain whose DNS is broken does not
	// query again for every message (RFC 2308 §7 allows up to 5 minutes);
	// default 30s.
	FailureTTL time.Duration
	// Now is the clock used for cache expiry; default time.Now.
	Now func() time.Time
}

// Resolver looks up mail routes (MX, A, AAAA) and TXT records with
// github.com/miekg/dns against configured recursive resolvers, and caches
// the answers within their TTL (negative answers for the SOA minimum, RFC
// 2308). Concurrent lookups of the same name share one query. It is safe
// for concurrent use.
type Resolver struct {
	servers  []string
	timeout  time.Duration
	attempts int
	maxTTL   time.Duration
	failTTL  time.Duration
	now      func() time.Time
	udp, tcp *dns.Client

	flight singleflight.Group
	// cache is bounded in entries and in age (an expiring LRU); each
	// answer also carries its own expiry from its TTL.
	cache *expirable.LRU[cacheKey, *answer]
}

// resolverCacheEntries bounds the cached answers.
const resolverCacheEntries = 20000

type cacheKey struct {
	name  string
	qtype uint16
}

// answer is a cached query result: records of the asked type (CNAMEs the
// resolver followed are left out), or NXDOMAIN, or a failure.
type answer struct {
	rrs      []dns.RR
	nxdomain bool
	err      error // temporary failure
	expires  time.Time
}

// DNSError is a lookup that failed. Temporary errors (SERVFAIL, timeouts)
// are delivery deferrals; NotFound (NXDOMAIN) is permanent.
type DNSError struct {
	Name      string
	Type      string
	NotFound  bool
	Temporary bool
	Err       string
}

func (e *DNSError) Error() string {
	switch {
	case e.NotFound:
		return fmt.Sprintf("%s %s: no such domain", e.Name, e.Type)
	default:
		return fmt.Sprintf("%s %s: %s", e.Name, e.Type, e.Err)
	}
}

// ErrNullMX is returned by LookupMX for a domain that publishes a null MX
// (RFC 7505): it accepts no mail.
var ErrNullMX = errors.New("domain publishes a null MX (RFC 7505): it accepts no mail")

// NewResolver returns a Resolver.
func NewResolver(opts ResolverOptions) (*Resolver, error) {
	servers := opts.Servers
	timeout, attempts := opts.Timeout, opts.Attempts
	if len(servers) == 0 {
		path := opts.ResolvConf
		if path == "" {
			path = "/etc/resolv.conf"
		}
		cc, err := dns.ClientConfigFromFile(path)
		if err != nil {
			return nil, fmt.Errorf("resolvers: %w", err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
		if timeout <= 0 && cc.Timeout > 0 {
			timeout = time.Duration(cc.Timeout) * time.Second
		}
		if attempts <= 0 && cc.Attempts > 0 {
			attempts = cc.Attempts
		}
		if len(servers) == 0 {
			return nil, fmt.Errorf("resolvers: %s lists no nameserver", path)
		}
	}
	var norm []string
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(strings.Trim(s, "[]"), "53")
		}
		norm = append(norm, s)
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	if attempts <= 0 {
		attempts = 2
	}
	r := &Resolver{
		servers:  norm,
		timeout:  timeout,
		attempts: attempts,
		maxTTL:   opts.MaxTTL,
		failTTL:  opts.FailureTTL,
		now:      opts.Now,
		udp:      &dns.Client{Net: "udp", Timeout: timeout},
		tcp:      &dns.Client{Net: "tcp", Timeout: timeout},
	}
	if r.maxTTL <= 0 {
		r.maxTTL = time.Hour
	}
	r.cache = expirable.NewLRU[cacheKey, *answer](resolverCacheEntries, nil, r.maxTTL)
	if r.failTTL <= 0 {
		r.failTTL = 30 * time.Second
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r, nil
}

// Servers returns the DNS servers asked, "host:port".
func (r *Resolver) Servers() []string { return slices.Clone(r.servers) }

// MX is one mail exchanger.
type MX struct {
	Host       string // without the trailing dot, lower-case
	Preference uint16
}

// Route is where mail for a domain goes.
type Route struct {
	Domain string
	// Hosts in the order to try: by preference, in random order among
	// equal preferences (RFC 5321 §5.1), so load spreads over them.
	Hosts []MX
	// Implicit is set when the domain has no MX records and the domain
	// itself is the only host (RFC 5321 §5.1 "implicit MX").
	Implicit bool
}

// LookupMX returns the route for domain. Errors: ErrNullMX, a *DNSError
// with NotFound for a domain that does not exist, or a temporary
// *DNSError.
func (r *Resolver) LookupMX(ctx context.Context, domain string) (Route, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	a, err := r.query(ctx, domain, dns.TypeMX)
	if err != nil {
		return Route{}, err
	}
	if a.nxdomain {
		return Route{}, &DNSError{Name: domain, Type: "MX", NotFound: true}
	}
	var mxs []MX
	null := false
	for _, rr := range a.rrs {
		mx := rr.(*dns.MX)
		if mx.Mx == "." {
			null = true
			continue
		}
		mxs = append(mxs, MX{Host: strings.ToLower(strings.TrimSuffix(mx.Mx, ".")), Preference: mx.Preference})
	}
	switch {
	case len(mxs) == 0 && null:
		return Route{}, ErrNullMX
	case len(mxs) == 0:
		// RFC 5321 §5.1: without MX records, the domain itself is tried.
		return Route{Domain: domain, Hosts: []MX{{Host: domain}}, Implicit: true}, nil
	}
	// A null MX beside real ones is a misconfiguration (RFC 7505 §3); the
	// real ones are used.
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	slices.SortStableFunc(mxs, func(a, b MX) int { return int(a.Preference) - int(b.Preference) })
	return Route{Domain: domain, Hosts: mxs}, nil
}

// LookupIP returns host's IPv4 and IPv6 addresses (A and AAAA, asked in
// parallel), IPv4 first unless preferIPv6. When one family fails
// temporarily and the other has addresses, the addresses are returned. A
// host without any address is a *DNSError with NotFound.
func (r *Resolver) LookupIP(ctx context.Context, host string, preferIPv6 bool) ([]netip.Addr, error) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	type res struct {
		a   *answer
		err error
	}
	var v4, v6 res
	var wg sync.WaitGroup
	wg.Go(func() { v4.a, v4.err = r.query(ctx, host, dns.TypeA) })
	wg.Go(func() { v6.a, v6.err = r.query(ctx, host, dns.TypeAAAA) })
	wg.Wait()
	var four, six []netip.Addr
	if v4.err == nil {
		for _, rr := range v4.a.rrs {
			if ip, ok := netip.AddrFromSlice(rr.(*dns.A).A.To4()); ok {
				four = append(four, ip)
			}
		}
	}
	if v6.err == nil {
		for _, rr := range v6.a.rrs {
			if ip, ok := netip.AddrFromSlice(rr.(*dns.AAAA).AAAA); ok {
				six = append(six, ip)
			}
		}
	}
	addrs := append(four, six...)
	if preferIPv6 {
		addrs = append(six, four...)
	}
	switch {
	case len(addrs) > 0:
		return addrs, nil
	case v4.err != nil:
		return nil, v4.err
	case v6.err != nil:
		return nil, v6.err
	}
	return nil, &DNSError{Name: host, Type: "A/AAAA", NotFound: true}
}

// LookupTXT returns the TXT records at name, each as the concatenation of
// its strings. A name without TXT records gives (nil, nil); an error is
// temporary. It satisfies mtasts.TXTResolver.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	a, err := r.query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range a.rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

// query answers from the cache or asks the servers. Only temporary
// failures are returned as errors.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (*answer, error) {
	k := cacheKey{name, qtype}
	a, ok := r.cache.Get(k)
	if ok && r.now().Before(a.expires) {
		return a, a.err
	}

	v, _, _ := r.flight.Do(name+"/"+strconv.Itoa(int(qtype)), func() (any, error) {
		a := r.exchange(ctx, name, qtype)
		if !a.expires.IsZero() {
			r.cache.Add(k, a)
		}
		return a, nil
	})
	a = v.(*answer)
	return a, a.err
}

// exchange asks each server in turn, up to r.attempts rounds, until one
// gives an authoritative-enough answer (NOERROR or NXDOMAIN). A truncated
// UDP answer is asked again over TCP.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) *answer {
	typ := dns.TypeToString[qtype]
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)

	var last string
	for range r.attempts {
		for _, server := range r.servers {
			if ctx.Err() != nil {
				// Not cached: the failure is ours, not the domain's.
				return &answer{err: &DNSError{Name: name, Type: typ, Temporary: true, Err: ctx.Err().Error()}}
			}
			resp, _, err := r.udp.ExchangeContext(ctx, m, server)
			if err == nil && resp.Truncated {
				resp, _, err = r.tcp.ExchangeContext(ctx, m, server)
			}
			if err != nil {
				last = fmt.Sprintf("%s: %v", server, err)
				continue
			}
			switch resp.Rcode {
			case dns.RcodeSuccess, dns.RcodeNameError:
				return r.fromResponse(resp, qtype)
			default:
				last = fmt.Sprintf("%s answered %s", server, dns.RcodeToString[resp.Rcode])
			}
		}
	}
	return &answer{
		err:     &DNSError{Name: name, Type: typ, Temporary: true, Err: last},
		expires: r.now().Add(r.failTTL),
	}
}

func (r *Resolver) fromResponse(resp *dns.Msg, qtype uint16) *answer {
	a := &answer{nxdomain: resp.Rcode == dns.RcodeNameError}
	ttl := uint32(0)
	first := true
	lower := func(v uint32) {
		if first || v < ttl {
			ttl, first = v, false
		}
	}
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype == qtype {
			a.rrs = append(a.rrs, rr)
		}
		lower(rr.Header().Ttl)
	}
	if len(a.rrs) == 0 {
		// Negative answer: cached for the SOA's minimum (RFC 2308 §5);
		// without an SOA it is not cached.
		first = true
		for _, rr := range resp.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				lower(min(soa.Hdr.Ttl, soa.Minttl))
			}
		}
	}
	if !first && ttl > 0 {
		a.expires = r.now().Add(min(time.Duration(ttl)*time.Second, r.maxTTL))
	}
	return a
}
