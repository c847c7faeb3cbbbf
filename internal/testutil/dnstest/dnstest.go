// Package dnstest runs a small authoritative DNS server on loopback for
// tests, built on github.com/miekg/dns.
//
// BIND (internal/testutil/bindtest) is the real thing for zone data that
// external-dns writes; this server exists for what BIND cannot be told to do
// on demand: answer SERVFAIL or REFUSED for one name, say nothing at all so
// the client times out, truncate UDP answers so the client must retry over
// TCP, and count the queries it received so tests can prove that answers
// were cached.
//
// Records are given in zone-file syntax with absolute names. A name that
// owns no record answers NXDOMAIN; a name that owns records but none of the
// asked type answers NOERROR with no answer (NODATA). Both negative answers
// carry an SOA in the authority section whose minimum field is NegativeTTL,
// as RFC 2308 resolvers expect. CNAMEs are followed within the server's own
// data.
package dnstest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Fault is a misbehaviour the server can be told to show for a name.
type Fault int

const (
	// ServFail answers with RCODE SERVFAIL, as a resolver does when the
	// domain's name servers are unreachable.
	ServFail Fault = iota + 1
	// Refused answers with RCODE REFUSED.
	Refused
	// Drop sends nothing: the client's query times out.
	Drop
	// Truncate answers over UDP with the TC bit set and no records; TCP
	// queries are answered normally.
	Truncate
)

// AnyType, given as the type to SetFault, applies a fault to every query
// type of a name.
const AnyType uint16 = 0

const startTimeout = 30 * time.Second

type key struct {
	name  string
	qtype uint16
}

// Server is a running DNS server. Its methods are safe for concurrent use.
type Server struct {
	// Addr is "127.0.0.1:port", served over UDP and TCP.
	Addr string

	udp, tcp *dns.Server

	mu          sync.Mutex
	records     map[string][]dns.RR // by lower-case owner name
	faults      map[key]Fault
	queries     map[key]int
	negativeTTL uint32
}

// Start runs a server for the duration of the test.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		records:     map[string][]dns.RR{},
		faults:      map[key]Fault{},
		queries:     map[key]int{},
		negativeTTL: 60,
	}
	var err error
	for range 10 {
		if err = s.listen(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	t.Cleanup(func() {
		_ = s.udp.Shutdown()
		_ = s.tcp.Shutdown()
	})
	return s
}

// listen binds UDP and TCP on the same free port and starts both servers.
func (s *Server) listen() error {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := pc.LocalAddr().String()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return err // the port is taken for TCP; the caller tries another
	}
	s.Addr = addr
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	s.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve), NotifyStartedFunc: notify}
	s.tcp = &dns.Server{Listener: l, Handler: dns.HandlerFunc(s.serve), NotifyStartedFunc: notify}
	go func() { _ = s.udp.ActivateAndServe() }()
	go func() { _ = s.tcp.ActivateAndServe() }()
	for range 2 {
		select {
		case <-started:
		case <-time.After(startTimeout):
			return fmt.Errorf("server on %s did not start", addr)
		}
	}
	return nil
}

// Add adds records given in zone-file syntax with absolute owner names, such
// as "example.test. 300 IN MX 10 mx1.example.test.".
func (s *Server) Add(t testing.TB, rrs ...string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, text := range rrs {
		rr, err := dns.NewRR(text)
		if err != nil || rr == nil {
			t.Fatalf("dnstest: bad record %q: %v", text, err)
		}
		name := strings.ToLower(rr.Header().Name)
		s.records[name] = append(s.records[name], rr)
	}
}

// Remove deletes the records of one type at a name; AnyType deletes them
// all, so the name answers NXDOMAIN.
func (s *Server) Remove(name string, qtype uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name = canonical(name)
	var keep []dns.RR
	for _, rr := range s.records[name] {
		if qtype != AnyType && rr.Header().Rrtype != qtype {
			keep = append(keep, rr)
		}
	}
	if len(keep) == 0 {
		delete(s.records, name)
	} else {
		s.records[name] = keep
	}
}

// SetFault makes queries for name and qtype (or every type, with AnyType)
// misbehave until ClearFault.
func (s *Server) SetFault(name string, qtype uint16, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[key{canonical(name), qtype}] = f
}

// ClearFault undoes SetFault.
func (s *Server) ClearFault(name string, qtype uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.faults, key{canonical(name), qtype})
}

// SetNegativeTTL sets the SOA minimum sent with NXDOMAIN and NODATA answers
// (60 seconds by default).
func (s *Server) SetNegativeTTL(ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.negativeTTL = ttl
}

// Queries returns how many queries for name and qtype arrived, over UDP and
// TCP together.
func (s *Server) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[key{canonical(name), qtype}]
}

func canonical(name string) string { return strings.ToLower(dns.Fqdn(name)) }

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := canonical(q.Name)
	_, udp := w.RemoteAddr().(*net.UDPAddr)

	s.mu.Lock()
	s.queries[key{name, q.Qtype}]++
	fault, ok := s.faults[key{name, q.Qtype}]
	if !ok {
		fault = s.faults[key{name, AnyType}]
	}
	m := s.answer(req, name, q.Qtype)
	s.mu.Unlock()

	switch fault {
	case ServFail:
		m = new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
	case Refused:
		m = new(dns.Msg)
		m.SetRcode(req, dns.RcodeRefused)
	case Drop:
		return
	case Truncate:
		if udp {
			m = new(dns.Msg)
			m.SetReply(req)
			m.Truncated = true
		}
	}
	_ = w.WriteMsg(m)
}

// answer builds the authoritative answer from the records; s.mu is held.
func (s *Server) answer(req *dns.Msg, name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	found := false
	for range 8 { // bound on CNAME chains
		rrs, exists := s.records[name]
		if !exists {
			// RFC 6604: the RCODE describes the last name of a CNAME chain.
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{s.soa(name)}
			return m
		}
		var cname *dns.CNAME
		for _, rr := range rrs {
			if rr.Header().Rrtype == qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
				found = true
			}
			if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if found || cname == nil {
			break
		}
		m.Answer = append(m.Answer, dns.Copy(cname))
		name = canonical(cname.Target)
	}
	if !found {
		m.Ns = []dns.RR{s.soa(name)}
	}
	return m
}

// soa is the SOA of the name's parent "zone": every test name is in one
// notional zone, the last label.
func (s *Server) soa(name string) dns.RR {
	labels := dns.SplitDomainName(name)
	zone := "."
	if len(labels) > 0 {
		zone = labels[len(labels)-1] + "."
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.negativeTTL},
		Ns:      "ns." + strings.TrimPrefix(zone, "."),
		Mbox:    "hostmaster." + strings.TrimPrefix(zone, "."),
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.negativeTTL,
	}
}
