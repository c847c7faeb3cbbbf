package dnsrecord_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"mailroom.io/mailroom/internal/dnsrecord"
	"mailroom.io/mailroom/internal/testutil/bindtest"
)

const longKey = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwF0Xbbofu7Tf3QEe4rY8s6Ok+Vb9nc2abmXc6XwXcBAY0o97XFEXvlkI21kZYWTjA02WdOB2iqSJ9reQQZKmS9WOOH3Jp28MU7e1t04Q/ly9Y+97wuPq6jVRnI7bNrfXUEsoyOJxKlUFwwa33j7Kk6GFuZ2v+Kn/jEAn2gAGXCF7UzxlY3rtd+BONRXlTfyRB9gJ5WAePpAYAtzH3vvB/N3uPG8l6loDgYOQ82vUurshOegax0GwWolo91cXIW07yqI7kguO2xbkUonPp8F+qpCAp3zVV5+JPswx1PKrMswngB8wEBMQNMlSufHaDITpYIqQo/ZYy6ToTOnPOR8UcwIDAQAB"

var (
	dkimRecord  = dnsrecord.Record{Kind: dnsrecord.KindDKIM, Name: "mr-20261125._domainkey.example.test", Value: "v=DKIM1; k=rsa; p=" + longKey}
	spfRecord   = dnsrecord.Record{Kind: dnsrecord.KindSPF, Name: "example.test", Value: "v=spf1 ip4:192.0.2.1 include:_spf.example.net ~all"}
	dmarcRecord = dnsrecord.Record{Kind: dnsrecord.KindDMARC, Name: "_dmarc.example.test", Value: "v=DMARC1; p=none; pct=100; rua=mailto:dmarc@example.test; adkim=r; aspf=r"}
	allRecords  = []dnsrecord.Record{dkimRecord, spfRecord, dmarcRecord}
)

// publish writes the records into BIND cut into 255-byte strings at other
// places than mailroom would, as a DNS provider that re-splits values does.
func publish(t *testing.T, s *bindtest.Server, rs ...dnsrecord.Record) {
	t.Helper()
	for _, r := range rs {
		var strs []string
		for v := r.Value; v != ""; {
			n := min(200, len(v))
			strs = append(strs, v[:n])
			v = v[n:]
		}
		s.SetTXT(t, r.Name+".", strs...)
	}
}

func verifier(s *bindtest.Server) dnsrecord.Verifier {
	return dnsrecord.Verifier{Resolvers: []string{s.Addr}, QueryTimeout: 5 * time.Second}
}

func TestVerifyPassesWhenTheMeaningMatches(t *testing.T) {
	s := bindtest.Start(t, "example.test")
	publish(t, s, allRecords...)
	// A verification record of some other service beside SPF changes nothing.
	s.Add(t, `@ IN TXT "google-site-verification=abc"`)

	for _, c := range verifier(s).Verify(context.Background(), allRecords) {
		if !c.Verified {
			t.Errorf("%s not verified: %s", c.Record.Name, c.Reason)
		}
	}
}

func TestVerifyNamesTheRecordThatDiffers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		break_  func(*testing.T, *bindtest.Server)
		record  dnsrecord.Record
		reason  string
		missing bool // no record of the kind at all, rather than a wrong one
	}{
		{"DKIM key replaced by hand", func(t *testing.T, s *bindtest.Server) {
			s.SetTXT(t, dkimRecord.Name+".", "v=DKIM1; k=rsa; p=AAAA")
		}, dkimRecord, "p= holds another public key", false},
		{"DKIM record deleted", func(t *testing.T, s *bindtest.Server) {
			s.Delete(t, dkimRecord.Name+".", dns.TypeTXT)
		}, dkimRecord, "no key record", true},
		{"SPF record replaced by another service's TXT", func(t *testing.T, s *bindtest.Server) {
			s.SetTXT(t, "@", "google-site-verification=abc")
		}, spfRecord, "no v=spf1 record", true},
		{"second SPF record added", func(t *testing.T, s *bindtest.Server) {
			s.Add(t, `@ IN TXT "v=spf1 -all"`)
		}, spfRecord, "2 v=spf1 records", false},
		{"DMARC policy changed", func(t *testing.T, s *bindtest.Server) {
			s.SetTXT(t, dmarcRecord.Name+".", "v=DMARC1; p=reject; pct=100; rua=mailto:dmarc@example.test")
		}, dmarcRecord, "p=reject, want none", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := bindtest.Start(t, "example.test")
			publish(t, s, allRecords...)
			tc.break_(t, s)
			for _, c := range verifier(s).Verify(context.Background(), allRecords) {
				if c.Record != tc.record {
					if !c.Verified {
						t.Errorf("untouched %s not verified: %s", c.Record.Name, c.Reason)
					}
					continue
				}
				if c.Verified || c.Unreachable || c.Missing != tc.missing {
					t.Fatalf("%s: verified=%v unreachable=%v missing=%v", c.Record.Name, c.Verified, c.Unreachable, c.Missing)
				}
				if !strings.Contains(c.Reason, tc.record.Name) || !strings.Contains(c.Reason, tc.reason) || !strings.Contains(c.Reason, s.Addr) {
					t.Fatalf("reason %q should name %s, the resolver and say %q", c.Reason, tc.record.Name, tc.reason)
				}
			}
		})
	}
}

// silentResolver accepts queries over UDP and never answers.
func silentResolver(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

func TestVerifyReportsAResolverThatDoesNotAnswer(t *testing.T) {
	s := bindtest.Start(t, "example.test")
	publish(t, s, allRecords...)
	silent := silentResolver(t)
	v := dnsrecord.Verifier{Resolvers: []string{s.Addr, silent}, QueryTimeout: 300 * time.Millisecond}

	for _, c := range v.Verify(context.Background(), allRecords) {
		if c.Verified || !c.Unreachable {
			t.Fatalf("%s: verified=%v unreachable=%v, want an unreachable resolver", c.Record.Name, c.Verified, c.Unreachable)
		}
		if !strings.Contains(c.Reason, silent) || !strings.Contains(c.Reason, "did not answer") || !strings.Contains(c.Reason, "no reply within 300ms") {
			t.Fatalf("reason %q does not name the silent resolver", c.Reason)
		}
	}
}

func TestVerifyPrefersAWrongRecordOverAnUnreachableResolver(t *testing.T) {
	s := bindtest.Start(t, "example.test")
	publish(t, s, spfRecord)
	s.SetTXT(t, "@", "v=spf1 -all")
	v := dnsrecord.Verifier{Resolvers: []string{silentResolver(t), s.Addr}, QueryTimeout: 300 * time.Millisecond}
	c := v.Verify(context.Background(), []dnsrecord.Record{spfRecord})[0]
	if c.Unreachable || !strings.Contains(c.Reason, "missing ip4:192.0.2.1") {
		t.Fatalf("got unreachable=%v %q; a wrong answer is the thing to fix first", c.Unreachable, c.Reason)
	}
}

func TestResolverAddrs(t *testing.T) {
	got, err := dnsrecord.ResolverAddrs([]string{"10.0.0.10", "10.0.0.11:5353", "fd00::10", "[fd00::11]:53"}, "")
	if err != nil {
		t.Fatal(err)
	}
	want := "10.0.0.10:53 10.0.0.11:5353 [fd00::10]:53 [fd00::11]:53"
	if strings.Join(got, " ") != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, err := dnsrecord.ResolverAddrs([]string{"dns.example.com:53"}, ""); err == nil {
		t.Fatal("a host name was accepted as a resolver")
	}
}

func TestCountSPFLookupsFollowsIncludes(t *testing.T) {
	s := bindtest.Start(t, "example.test")
	// a: 2 lookups of its own (mx, a) and an include of b
	// b: redirect to c; c: 3 exists
	s.SetTXT(t, "a", "v=spf1 mx a/24 include:b.example.test -all")
	s.SetTXT(t, "b", "v=spf1 redirect=c.example.test")
	s.SetTXT(t, "c", "v=spf1 exists:x.example.test exists:y.example.test ptr ~all")
	s.SetTXT(t, "loop", "v=spf1 include:loop.example.test -all")
	v := verifier(s)

	c, err := v.CountSPFLookups(context.Background(), "v=spf1 ip4:192.0.2.1 include:a.example.test include:missing.example.test -all")
	if err != nil {
		t.Fatal(err)
	}
	// include:a(1) + mx(1) + a(1) + include:b(1) + redirect(1) + 3 in c + include:missing(1)
	if c.Lookups != 9 || c.Exceeded() {
		t.Fatalf("Lookups = %d (exceeded %v), want 9", c.Lookups, c.Exceeded())
	}
	if len(c.Incomplete) != 1 || !strings.Contains(c.Incomplete[0], "missing.example.test") {
		t.Fatalf("Incomplete = %q, want the include without a record", c.Incomplete)
	}

	// The same record included twice costs twice: 8 for a, then 1+3 for c
	// again, and counting stops as soon as the limit is passed.
	c, err = v.CountSPFLookups(context.Background(), "v=spf1 include:a.example.test include:c.example.test -all")
	if err != nil {
		t.Fatal(err)
	}
	if c.Lookups != dnsrecord.SPFLookupLimit+1 || !c.Exceeded() {
		t.Fatalf("Lookups = %d (exceeded %v), want %d", c.Lookups, c.Exceeded(), dnsrecord.SPFLookupLimit+1)
	}

	c, err = v.CountSPFLookups(context.Background(), "v=spf1 include:loop.example.test -all")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Exceeded() {
		t.Fatalf("an include loop: Lookups = %d, want over the limit", c.Lookups)
	}
}
