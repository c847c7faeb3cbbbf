package dnstest_test

import (
	"testing"
	"time"

	"github.com/miekg/dns"

	"mailroom.io/mailroom/internal/testutil/dnstest"
)

func ask(t *testing.T, s *dnstest.Server, net, name string, qtype uint16) (*dns.Msg, error) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Net: net, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, s.Addr)
	return r, err
}

func TestAnswersNXDOMAINAndNODATAWithAnSOA(t *testing.T) {
	s := dnstest.Start(t)
	s.Add(t, "mx.example.test. 300 IN A 127.0.0.2")
	s.SetNegativeTTL(42)

	r, err := ask(t, s, "udp", "mx.example.test.", dns.TypeA)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || !r.Authoritative {
		t.Fatalf("A: %v %v", r, err)
	}
	r, _ = ask(t, s, "tcp", "mx.example.test.", dns.TypeAAAA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 || r.Ns[0].(*dns.SOA).Minttl != 42 {
		t.Errorf("NODATA: %v", r)
	}
	r, _ = ask(t, s, "udp", "nothing.example.test.", dns.TypeA)
	if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
		t.Errorf("NXDOMAIN: %v", r)
	}
	if n := s.Queries("MX.example.test", dns.TypeAAAA); n != 1 {
		t.Errorf("AAAA queries = %d", n)
	}
}

func TestFollowsCNAMEs(t *testing.T) {
	s := dnstest.Start(t)
	s.Add(t, "alias.example.test. 300 IN CNAME mx.example.test.", "mx.example.test. 300 IN A 127.0.0.2")
	r, _ := ask(t, s, "udp", "alias.example.test.", dns.TypeA)
	if len(r.Answer) != 2 || r.Answer[1].(*dns.A).A.String() != "127.0.0.2" {
		t.Errorf("answer %v", r.Answer)
	}
}

func TestFaults(t *testing.T) {
	s := dnstest.Start(t)
	s.Add(t, "example.test. 300 IN MX 10 mx.example.test.")

	s.SetFault("example.test", dns.TypeMX, dnstest.ServFail)
	if r, _ := ask(t, s, "udp", "example.test.", dns.TypeMX); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("ServFail: %v", r)
	}
	s.SetFault("example.test", dnstest.AnyType, dnstest.Refused)
	if r, _ := ask(t, s, "udp", "example.test.", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("Refused for any type: %v", r)
	}
	s.ClearFault("example.test", dns.TypeMX)
	s.ClearFault("example.test", dnstest.AnyType)
	s.SetFault("example.test", dns.TypeMX, dnstest.Truncate)
	if r, _ := ask(t, s, "udp", "example.test.", dns.TypeMX); !r.Truncated || len(r.Answer) != 0 {
		t.Errorf("Truncate over UDP: %v", r)
	}
	if r, _ := ask(t, s, "tcp", "example.test.", dns.TypeMX); r.Truncated || len(r.Answer) != 1 {
		t.Errorf("Truncate over TCP: %v", r)
	}
	s.SetFault("example.test", dns.TypeMX, dnstest.Drop)
	m := new(dns.Msg)
	m.SetQuestion("example.test.", dns.TypeMX)
	if _, _, err := (&dns.Client{Timeout: 200 * time.Millisecond}).Exchange(m, s.Addr); err == nil {
		t.Error("Drop answered")
	}
}

func TestRemove(t *testing.T) {
	s := dnstest.Start(t)
	s.Add(t, "example.test. 300 IN MX 10 mx.example.test.", "example.test. 300 IN A 127.0.0.2")
	s.Remove("example.test", dns.TypeMX)
	if r, _ := ask(t, s, "udp", "example.test.", dns.TypeMX); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("after removing MX: %v", r)
	}
	s.Remove("example.test", dnstest.AnyType)
	if r, _ := ask(t, s, "udp", "example.test.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("after removing everything: %v", r)
	}
}
