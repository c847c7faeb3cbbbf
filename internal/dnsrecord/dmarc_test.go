package dnsrecord_test

import (
	"testing"

	"mailroom.io/mailroom/internal/dnsrecord"
)

func TestDMARCTextSaysWhatTheSpecSays(t *testing.T) {
	for _, tc := range []struct {
		d    dnsrecord.DMARC
		want string
	}{
		{dnsrecord.DMARC{Policy: "none", Percent: 100}, "v=DMARC1; p=none; pct=100; adkim=r; aspf=r"},
		{dnsrecord.DMARC{
			Policy: "reject", Percent: 25,
			AggregateReportsTo: []string{"mailto:dmarc@example.com", "mailto:agg@vendor.example"},
			StrictDKIM:         true,
		}, "v=DMARC1; p=reject; pct=25; rua=mailto:dmarc@example.com,mailto:agg@vendor.example; adkim=s; aspf=r"},
	} {
		got, err := tc.d.Text()
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

func TestDMARCTextRefusesInvalidTags(t *testing.T) {
	for _, d := range []dnsrecord.DMARC{
		{Policy: "monitor", Percent: 100},
		{Policy: "none", Percent: 101},
		{Policy: "none", Percent: 100, AggregateReportsTo: []string{"dmarc@example.com"}},
		{Policy: "none", Percent: 100, AggregateReportsTo: []string{"mailto:a@example.com,mailto:b@example.com"}},
	} {
		if got, err := d.Text(); err == nil {
			t.Errorf("%+v: got %q, want an error", d, got)
		}
	}
}
