package delivery

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"mailroom.io/mailroom/internal/mtasts"
)

// plan is how to reach one destination: the hosts in the order to try,
// the port, and the TLS that a connection must have.
type plan struct {
	key      string
	hosts    []MX
	implicit bool
	port     int
	tls      tlsPolicy
	smart    bool
	// enforce is the destination's MTA-STS policy in enforce mode:
	// only hosts it lists, only over verified TLS.
	enforce *mtasts.Policy
	// testing is a policy in testing mode: delivery is unaffected, but
	// what enforce would have refused is logged.
	testing *mtasts.Policy
}

// usable says whether an idle session may carry mail for the plan.
func (p *plan) usable(s *session) bool {
	if p.enforce != nil {
		return s.tlsVersion != "" && s.verified && p.enforce.Matches(s.host)
	}
	return true
}

// failure is why a destination could not be reached or a session not set
// up; it becomes the result of every recipient concerned.
type failure struct {
	status    Status
	reason    Reason
	notBefore time.Time // ReasonHostDown: when the servers may be tried again
	code      string    // enhanced status code, before class adjustment
	reply     Reply
	detail    string
	host, ip  string
	markDown  bool // the server is unreachable: remember it
	// noService: the server refused the session with a 5xx greeting or
	// EHLO reply (RFC 5321 §3.8: 554 at the greeting means no service).
	noService bool
}

func (f *failure) result(rcpt string) Result {
	code := f.reply.Enhanced // the server's own code, when it sent one
	if code == "" {
		code = f.code
	}
	return Result{
		Recipient: rcpt, Status: f.status, Reason: f.reason, Code: statusCode(f.status, code),
		Reply: f.reply, Detail: f.detail, RemoteHost: f.host, RemoteIP: f.ip, NotBefore: f.notBefore,
	}
}

func deferred(reason Reason, code, detail string) *failure {
	return &failure{status: Deferred, reason: reason, code: code, detail: detail}
}

// plan routes a destination: the smarthost, or the domain's MX hosts and
// MTA-STS policy.
func (d *Deliverer) plan(ctx context.Context, key string) (*plan, *failure) {
	if d.opts.Mode == Smarthost {
		sh := d.opts.Smarthost
		return &plan{key: key, hosts: []MX{{Host: strings.ToLower(sh.Host)}}, port: sh.Port, tls: sh.TLS.policy(), smart: true}, nil
	}
	route, err := d.resolver.LookupMX(ctx, key)
	if err != nil {
		var de *DNSError
		switch {
		case errors.Is(err, ErrNullMX):
			return nil, &failure{status: Failed, reason: ReasonNullMX, code: "5.1.10",
				detail: key + " does not accept mail: it publishes a null MX (RFC 7505)"}
		case errors.As(err, &de) && de.NotFound:
			return nil, &failure{status: Failed, reason: ReasonNoRoute, code: "5.1.2",
				detail: "domain " + key + " does not exist (" + err.Error() + ")"}
		default:
			return nil, deferred(ReasonDNS, "4.4.3", "MX lookup: "+err.Error())
		}
	}
	p := &plan{key: key, hosts: route.Hosts, implicit: route.Implicit, port: d.opts.Port, tls: tlsOpportunistic}
	if d.sts != nil {
		policy, err := d.sts.Get(ctx, key)
		if err != nil {
			d.log.Debug("MTA-STS", "domain", key, "error", err, "cachedPolicy", policy != nil)
		}
		if policy != nil {
			switch policy.Mode {
			case mtasts.Enforce:
				p.enforce, p.tls = policy, tlsRequired
			case mtasts.Testing:
				p.testing = policy
			}
		}
	}
	return p, nil
}

// acquire returns a session for the plan: an idle one kept from an
// earlier delivery, or a new one, waiting while the destination has its
// maximum of connections open.
func (d *Deliverer) acquire(ctx context.Context, p *plan) (*session, *failure) {
	s, err := d.pool.get(ctx, p.key, p.usable)
	if err != nil {
		return nil, deferred(ReasonLocal, "4.3.0", "waiting for a connection to "+p.key+": "+err.Error())
	}
	if s != nil {
		s.conn.bind(ctx)
		return s, nil
	}
	s, f := d.connect(ctx, p)
	if f != nil {
		d.pool.release(p.key)
		return nil, f
	}
	return s, nil
}

// connect tries the plan's hosts in order, and each host's addresses in
// order, until a session is set up. A server that cannot be reached, or
// greets with an error, is remembered as down for a while and skipped by
// later deliveries (RFC 5321 §5.1: try the next MX on connection failure
// or a 4xx greeting).
func (d *Deliverer) connect(ctx context.Context, p *plan) (*session, *failure) {
	var (
		last      *failure
		skipped   int
		downUntil time.Time
		downWhy   string
		noMatch   []string
		dnsErr    error
		notFound  []string
		// A destination whose every server refuses service with 5xx fails
		// permanently; a single temporary failure anywhere keeps it a
		// deferral, since that server might accept later.
		noService, temporary int
		lastDown             *failure
	)
	for _, mx := range p.hosts {
		if p.enforce != nil && !p.enforce.Matches(mx.Host) {
			noMatch = append(noMatch, mx.Host)
			continue
		}
		ips, err := d.resolver.LookupIP(ctx, mx.Host, d.opts.PreferIPv6)
		if err != nil {
			var de *DNSError
			if errors.As(err, &de) && de.NotFound {
				notFound = append(notFound, mx.Host)
			} else {
				dnsErr = err
			}
			continue
		}
		for _, ip := range ips {
			addr := netip.AddrPortFrom(ip, uint16(p.port)).String()
			if why, until, down := d.hostDown.Down(addr); down {
				skipped++
				// The earliest a server may be tried again.
				if downUntil.IsZero() || until.Before(downUntil) {
					downUntil = until
				}
				downWhy = why
				d.metrics.hostDownSkips.Inc()
				if rep, ok := parseReply(why); ok && rep.Code/100 == 5 {
					noService++
					lastDown = &failure{status: Failed, reason: ReasonConnection, reply: rep, host: mx.Host, ip: ip.String(),
						detail: fmt.Sprintf("%s [%s] refused the session recently and is not retried before %s", mx.Host, addr, until.UTC().Format(time.RFC3339))}
				} else {
					temporary++
				}
				continue
			}
			t := target{host: mx.Host, ip: ip, port: p.port, tls: p.tls, sts: p.enforce != nil, smart: p.smart}
			s, f := d.open(ctx, t)
			if f == nil {
				d.hostDown.Clear(addr)
				if p.testing != nil && !(s.verified && p.testing.Matches(mx.Host)) {
					d.log.Warn("MTA-STS testing policy would refuse this server", "domain", p.key, "remoteHost", mx.Host,
						"remoteIP", ip.String(), "tls", s.tlsVersion, "verified", s.verified, "policyMX", p.testing.MX)
				}
				return s, nil
			}
			d.log.Warn("connection failed", "destination", p.key, "remoteHost", mx.Host, "remoteIP", ip.String(),
				"port", p.port, "reason", string(f.reason), "reply", f.reply.String(), "detail", f.detail)
			if f.markDown {
				why := f.detail
				if f.reply.Code != 0 {
					why = f.reply.String()
				}
				d.hostDown.Mark(addr, why)
			}
			if f.noService {
				noService++
			} else {
				temporary++
			}
			last = f
			if ctx.Err() != nil {
				return nil, last
			}
		}
	}
	if dnsErr != nil || len(notFound) > 0 || len(noMatch) > 0 {
		temporary++
	}
	switch {
	case noService > 0 && temporary == 0:
		f := last
		if f == nil || !f.noService {
			f = lastDown
		}
		out := *f
		out.status = Failed
		return nil, &out
	case last != nil:
		return nil, last
	case skipped > 0:
		f := deferred(ReasonHostDown, "4.4.1", fmt.Sprintf(
			"not attempted: every server for %s failed recently and is not retried before %s (last: %s)",
			p.key, downUntil.UTC().Format(time.RFC3339), downWhy))
		f.notBefore = downUntil
		return nil, f
	case p.enforce != nil && len(noMatch) == len(p.hosts):
		return nil, deferred(ReasonMTASTS, "4.7.5", fmt.Sprintf(
			"MTA-STS policy of %s (enforce) allows mx %s, but the MX hosts are %s",
			p.key, strings.Join(p.enforce.MX, ", "), strings.Join(noMatch, ", ")))
	case dnsErr != nil:
		return nil, deferred(ReasonDNS, "4.4.3", "address lookup: "+dnsErr.Error())
	case p.implicit:
		return nil, &failure{status: Failed, reason: ReasonNoRoute, code: "5.1.2",
			detail: p.key + " has no MX records and no address records"}
	case p.smart:
		return nil, deferred(ReasonNoRoute, "4.4.4", "smarthost "+p.hosts[0].Host+" has no address records")
	}
	return nil, &failure{status: Failed, reason: ReasonNoRoute, code: "5.4.4",
		detail: "no MX host of " + p.key + " has an address (" + strings.Join(notFound, ", ") + ")"}
}

// deliverGroup delivers to the recipients of one destination: as few
// transactions as the server allows, on sessions from the pool.
func (d *Deliverer) deliverGroup(ctx context.Context, msg Message, key string, rcpts []Recipient) []Result {
	start := d.opts.Now()
	results := make([]Result, len(rcpts))
	defer func() {
		for i := range results {
			results[i].Duration = d.opts.Now().Sub(start)
		}
	}()
	p, f := d.plan(ctx, key)
	if f != nil {
		for i, r := range rcpts {
			results[i] = f.result(r.Address)
		}
		return results
	}
	pending := make([]int, len(rcpts))
	for i := range pending {
		pending[i] = i
	}
	// Each transaction finishes at least one recipient, unless its
	// connection was a stale idle one; there can be no more of those than
	// the destination may have connections.
	stale := 0
	for len(pending) > 0 {
		s, f := d.acquire(ctx, p)
		if f != nil {
			for _, i := range pending {
				results[i] = f.result(rcpts[i].Address)
			}
			return results
		}
		sub := make([]Recipient, len(pending))
		for j, i := range pending {
			sub[j] = rcpts[i]
		}
		tx := d.transact(ctx, s, msg, sub)
		s.conn.unbind()
		s.broken = tx.broken
		d.pool.put(p.key, s, !tx.broken)
		if tx.stale {
			if stale++; stale > d.opts.MaxConnectionsPerDomain {
				for _, i := range pending {
					results[i] = local(rcpts[i].Address, Deferred, ReasonConnection, "4.4.2", "every connection to "+p.key+" was lost before the server answered")
				}
				return results
			}
			continue
		}
		var next []int
		for j, i := range pending {
			if tx.again[j] {
				next = append(next, i)
			} else {
				results[i] = tx.results[j]
			}
		}
		if len(next) == len(pending) {
			// Cannot happen: "again" needs an accepted recipient.
			for _, i := range next {
				results[i] = local(rcpts[i].Address, Deferred, ReasonRecipient, "4.5.3", "too many recipients")
			}
			return results
		}
		pending = next
	}
	return results
}
