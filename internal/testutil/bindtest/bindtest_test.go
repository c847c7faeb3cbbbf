package bindtest_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"mailroom.io/mailroom/internal/testutil/bindtest"
)

func TestServerServesAndAcceptsSignedUpdates(t *testing.T) {
	s := bindtest.Start(t, "Example.Test")

	if s.Zone != "example.test." {
		t.Fatalf("Zone = %q, want normalised %q", s.Zone, "example.test.")
	}
	if soa := s.Lookup(t, "@", dns.TypeSOA); len(soa) != 1 {
		t.Fatalf("apex SOA: got %v", soa)
	}

	// A 2048-bit DKIM key needs more than one 255-byte string: the server must
	// keep the strings apart and in order.
	long := strings.Repeat("a", 255)
	s.SetTXT(t, "sel._domainkey", "v=DKIM1; k=rsa; p=", long, "tail")
	got := s.LookupTXT(t, "sel._domainkey.example.test.")
	want := [][]string{{"v=DKIM1; k=rsa; p=", long, "tail"}}
	if !equalTXT(got, want) {
		t.Fatalf("after SetTXT: got %q, want %q", got, want)
	}

	// SetTXT replaces the RRset rather than adding to it.
	s.SetTXT(t, "sel._domainkey", "replaced")
	if got := s.LookupTXT(t, "sel._domainkey"); !equalTXT(got, [][]string{{"replaced"}}) {
		t.Fatalf("after second SetTXT: got %q", got)
	}

	s.Add(t, `@ 300 IN TXT "v=spf1 -all"`)
	s.Add(t, `@ 300 IN TXT "other" "record"`)
	if got := s.LookupTXT(t, "@"); len(got) != 2 {
		t.Fatalf("after two Adds at the apex: got %q, want two records", got)
	}

	s.Delete(t, "@", dns.TypeTXT)
	if got := s.LookupTXT(t, "@"); len(got) != 0 {
		t.Fatalf("after Delete: got %q", got)
	}
	if got := s.LookupTXT(t, "sel._domainkey"); len(got) != 1 {
		t.Fatalf("Delete at the apex touched another name: %q", got)
	}
}

func TestServerRefusesUnsignedUpdates(t *testing.T) {
	s := bindtest.Start(t, "example.test")
	m := new(dns.Msg)
	m.SetUpdate(s.Zone)
	m.Insert([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: "x." + s.Zone, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"x"}}})
	r, err := dns.Exchange(m, s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeRefused {
		t.Fatalf("unsigned update: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
}

func TestServerAllowsSignedZoneTransfer(t *testing.T) {
	s := bindtest.Start(t, "example.test")
	s.SetTXT(t, "a", "one")

	m := new(dns.Msg)
	m.SetAxfr(s.Zone)
	m.SetTsig(s.TSIGKeyName, dns.Fqdn(s.TSIGAlgorithm), 300, time.Now().Unix())
	tr := &dns.Transfer{TsigSecret: map[string]string{s.TSIGKeyName: s.TSIGSecret}}
	env, err := tr.In(m, s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for e := range env {
		if e.Error != nil {
			t.Fatalf("AXFR: %v", e.Error)
		}
		for _, rr := range e.RR {
			if rr.Header().Rrtype == dns.TypeTXT {
				names = append(names, rr.Header().Name)
			}
		}
	}
	if !slices.Equal(names, []string{"a.example.test."}) {
		t.Fatalf("AXFR TXT names = %q", names)
	}
}

func TestTwoServersRunSideBySide(t *testing.T) {
	a := bindtest.Start(t, "a.test")
	b := bindtest.Start(t, "b.test")
	if a.Addr == b.Addr {
		t.Fatalf("both servers on %s", a.Addr)
	}
	a.SetTXT(t, "x", "from-a")
	if got := a.LookupTXT(t, "x"); !equalTXT(got, [][]string{{"from-a"}}) {
		t.Fatalf("a: got %q", got)
	}
	m := new(dns.Msg)
	m.SetQuestion("x.a.test.", dns.TypeTXT)
	r, err := dns.Exchange(m, b.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 0 {
		t.Fatalf("b answered for a's zone: %v", r.Answer)
	}
}

func TestNameResolvesRelativeAndAbsoluteNames(t *testing.T) {
	s := &bindtest.Server{Zone: "example.test."}
	for in, want := range map[string]string{
		"":                     "example.test.",
		"@":                    "example.test.",
		"sel._domainkey":       "sel._domainkey.example.test.",
		"Sel.Example.Test":     "sel.example.test.",
		"other.test.":          "other.test.",
		"_dmarc.example.test.": "_dmarc.example.test.",
	} {
		if got := s.Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}

func equalTXT(a, b [][]string) bool {
	return slices.EqualFunc(a, b, func(x, y []string) bool { return slices.Equal(x, y) })
}
