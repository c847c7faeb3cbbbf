package dnsrecord_test

import (
	"strings"
	"testing"

	"github.com/miekg/dns"

	"mailroom.io/mailroom/internal/dnsrecord"
)

// parseTarget reads a target the way external-dns' rfc2136 provider does:
// pasted after "<name> <ttl> TXT " and parsed by miekg/dns.
func parseTarget(t *testing.T, target string) *dns.TXT {
	t.Helper()
	rr, err := dns.NewRR("x.example.test. 300 TXT " + target)
	if err != nil {
		t.Fatalf("miekg/dns cannot parse target %q: %v", target, err)
	}
	return rr.(*dns.TXT)
}

// wireStrings packs and unpacks the record, giving the strings exactly as a
// resolver returns them.
func wireStrings(t *testing.T, rr *dns.TXT) []string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := dns.PackRR(rr, buf, 0, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	back, _, err := dns.UnpackRR(buf[:n], 0)
	if err != nil {
		t.Fatal(err)
	}
	return back.(*dns.TXT).Txt
}

func TestSplitTargetsParseBackToTheValue(t *testing.T) {
	dkim := "v=DKIM1; k=rsa; p=" + strings.Repeat("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA", 12)
	for name, value := range map[string]string{
		"short SPF":               "v=spf1 ip4:192.0.2.1 ~all",
		"DMARC with semicolons":   "v=DMARC1; p=none; pct=100",
		"2048-bit DKIM key":       dkim,
		"exactly 255 bytes":       strings.Repeat("x", 255),
		"256 bytes":               strings.Repeat("x", 256),
		"quotes and backslashes":  `say "hi" \ bye`,
		"escapes at a 255 border": strings.Repeat("a", 254) + `"\` + strings.Repeat("b", 10),
	} {
		t.Run(name, func(t *testing.T) {
			target, err := dnsrecord.EncodeTXT(value, dnsrecord.Split)
			if err != nil {
				t.Fatal(err)
			}
			rr := parseTarget(t, target)
			strs := wireStrings(t, rr)
			var joined strings.Builder
			for _, s := range strs {
				// Unpacked strings keep presentation escapes; undo the two
				// this test uses.
				s = strings.ReplaceAll(strings.ReplaceAll(s, `\"`, `"`), `\\`, `\`)
				if len(s) > 255 {
					t.Fatalf("a string of %d bytes", len(s))
				}
				joined.WriteString(s)
			}
			if joined.String() != value {
				t.Fatalf("joined strings\n%q\nwant\n%q", joined.String(), value)
			}
			wantStrings := (len(value) + 254) / 255
			if len(strs) != wantStrings {
				t.Fatalf("%d strings, want %d", len(strs), wantStrings)
			}
		})
	}
}

// The Split target is exactly the presentation form miekg/dns prints for
// the record it parses to, so a provider that compares the target with the
// record it reads back as text sees no difference.
func TestSplitTargetIsTheCanonicalPresentationForm(t *testing.T) {
	value := "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 400)
	target, _ := dnsrecord.EncodeTXT(value, dnsrecord.Split)
	rr := parseTarget(t, target)
	printed := strings.TrimPrefix(rr.String(), "x.example.test.\t300\tIN\tTXT\t")
	if printed != target {
		t.Fatalf("miekg/dns prints\n%s\nfor target\n%s", printed, target)
	}
}

func TestSingleTargetIsTheRawValue(t *testing.T) {
	value := "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 400)
	got, err := dnsrecord.EncodeTXT(value, dnsrecord.Single)
	if err != nil || got != value {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := dnsrecord.EncodeTXT(value, "Chunked"); err == nil {
		t.Fatal("unknown encoding accepted")
	}
}

func TestEndpointsGroupRecordsByName(t *testing.T) {
	records := []dnsrecord.Record{
		{Kind: dnsrecord.KindDKIM, Name: "a._domainkey.example.test", Value: "v=DKIM1; k=ed25519; p=AAAA"},
		{Kind: dnsrecord.KindSPF, Name: "example.test", Value: "v=spf1 -all"},
		{Kind: dnsrecord.KindDKIM, Name: "b._domainkey.example.test", Value: "v=DKIM1; k=ed25519; p=BBBB"},
		{Kind: dnsrecord.KindDMARC, Name: "example.test", Value: "v=DMARC1; p=none"},
	}
	eps, err := dnsrecord.Endpoints(records, 300, dnsrecord.Split)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ep := range eps {
		if ep.RecordType != "TXT" || ep.RecordTTL != 300 {
			t.Errorf("%s: type %s ttl %d", ep.DNSName, ep.RecordType, ep.RecordTTL)
		}
		got = append(got, ep.DNSName+"="+strings.Join(ep.Targets, "|"))
	}
	want := []string{
		`a._domainkey.example.test="v=DKIM1; k=ed25519; p=AAAA"`,
		`example.test="v=spf1 -all"|"v=DMARC1; p=none"`,
		`b._domainkey.example.test="v=DKIM1; k=ed25519; p=BBBB"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
