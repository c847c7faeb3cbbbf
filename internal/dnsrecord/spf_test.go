package dnsrecord_test

import (
	"testing"

	"mailroom.io/mailroom/internal/dnsrecord"
)

func TestSPFTextListsThePoolAndIncludes(t *testing.T) {
	for _, tc := range []struct {
		name string
		spf  dnsrecord.SPF
		want string
	}{
		{"nothing but the policy", dnsrecord.SPF{All: dnsrecord.SPFFail}, "v=spf1 -all"},
		{"addresses and ranges", dnsrecord.SPF{
			IPs: []string{"203.0.113.10", "2001:DB8::0:1", "198.51.100.0/24", "2001:db8:1::/48", "192.0.2.7/32"},
			All: dnsrecord.SPFSoftFail,
		}, "v=spf1 ip4:203.0.113.10 ip6:2001:db8::1 ip4:198.51.100.0/24 ip6:2001:db8:1::/48 ip4:192.0.2.7 ~all"},
		{"a range written with host bits is the network", dnsrecord.SPF{IPs: []string{"198.51.100.77/24"}, All: dnsrecord.SPFNeutral}, "v=spf1 ip4:198.51.100.0/24 ?all"},
		{"IPv4-mapped IPv6 is IPv4", dnsrecord.SPF{IPs: []string{"::ffff:192.0.2.1"}, All: dnsrecord.SPFFail}, "v=spf1 ip4:192.0.2.1 -all"},
		{"includes after addresses, duplicates dropped", dnsrecord.SPF{
			IPs:      []string{"192.0.2.1", "192.0.2.1"},
			Includes: []string{"_spf.google.com", "_SPF.Google.com.", "spf.protection.outlook.com"},
			All:      dnsrecord.SPFSoftFail,
		}, "v=spf1 ip4:192.0.2.1 include:_spf.google.com include:spf.protection.outlook.com ~all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.spf.Text()
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestSPFTextRefusesWhatIsNotAnAddress(t *testing.T) {
	for _, spf := range []dnsrecord.SPF{
		{IPs: []string{"relay.example.com"}, All: dnsrecord.SPFFail},
		{IPs: []string{"192.0.2.0/33"}, All: dnsrecord.SPFFail},
		{Includes: []string{"include:_spf.google.com"}, All: dnsrecord.SPFFail},
		{All: "+"},
	} {
		if got, err := spf.Text(); err == nil {
			t.Errorf("%+v: got %q, want an error", spf, got)
		}
	}
}

func TestSPFLookupsCountsEachDistinctInclude(t *testing.T) {
	spf := dnsrecord.SPF{IPs: []string{"192.0.2.1"}, Includes: []string{"a.example", "b.example", "A.example."}}
	if got := spf.Lookups(); got != 2 {
		t.Fatalf("Lookups() = %d, want 2 (addresses cost nothing, duplicates once)", got)
	}
}
