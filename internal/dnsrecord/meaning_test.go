package dnsrecord

import (
	"strings"
	"testing"
)

func TestMeaningComparison(t *testing.T) {
	const key = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwF0Xbbofu7Tf3QEe"
	for _, tc := range []struct {
		name      string
		kind      Kind
		want, got string
		same      bool
		why       string // part of the reason when not the same
	}{
		{"DKIM: identical", KindDKIM, "v=DKIM1; k=rsa; p=" + key, "v=DKIM1; k=rsa; p=" + key, true, ""},
		{"DKIM: spacing, no v=, default k=rsa, folded p=", KindDKIM, "v=DKIM1; k=rsa; p=" + key, "p=" + key[:20] + " " + key[20:] + ";", true, ""},
		{"DKIM: notes do not matter", KindDKIM, "v=DKIM1; k=rsa; p=" + key, "v=DKIM1; n=hello; k=rsa; p=" + key, true, ""},
		{"DKIM: another key", KindDKIM, "v=DKIM1; k=rsa; p=" + key, "v=DKIM1; k=rsa; p=" + strings.ToLower(key), false, "another public key"},
		{"DKIM: revoked", KindDKIM, "v=DKIM1; k=rsa; p=" + key, "v=DKIM1; k=rsa; p=", false, "revoked"},
		{"DKIM: testing flag", KindDKIM, "v=DKIM1; k=rsa; p=" + key, "v=DKIM1; k=rsa; t=y; p=" + key, false, "unexpected t=y"},
		{"DKIM: wrong key type", KindDKIM, "v=DKIM1; k=ed25519; p=" + key, "v=DKIM1; k=rsa; p=" + key, false, "k=rsa, want ed25519"},
		{"DKIM: wrong version", KindDKIM, "v=DKIM1; p=" + key, "v=DKIM2; p=" + key, false, "v=DKIM2"},

		{"SPF: identical", KindSPF, "v=spf1 ip4:192.0.2.1 ~all", "v=spf1 ip4:192.0.2.1 ~all", true, ""},
		{"SPF: case, order, + and address forms", KindSPF,
			"v=spf1 ip4:192.0.2.1 ip6:2001:db8::1 include:_spf.example.net ~all",
			"V=SPF1 +include:_SPF.example.net ip6:2001:DB8:0::1 ip4:192.0.2.1/32   ~all", true, ""},
		{"SPF: other qualifier", KindSPF, "v=spf1 ip4:192.0.2.1 ~all", "v=spf1 ip4:192.0.2.1 -all", false, "missing ~all, unexpected -all"},
		{"SPF: missing address", KindSPF, "v=spf1 ip4:192.0.2.1 ip4:192.0.2.2 ~all", "v=spf1 ip4:192.0.2.1 ~all", false, "missing ip4:192.0.2.2"},

		{"DMARC: identical", KindDMARC, "v=DMARC1; p=none; pct=100; adkim=r; aspf=r", "v=DMARC1; p=none; pct=100; adkim=r; aspf=r", true, ""},
		{"DMARC: defaults and case", KindDMARC, "v=DMARC1; p=reject; pct=100; adkim=r; aspf=r", "v=DMARC1;p=Reject", true, ""},
		{"DMARC: report URIs as a set", KindDMARC,
			"v=DMARC1; p=none; rua=mailto:a@example.com,mailto:b@example.com",
			"v=DMARC1; p=none; rua=MAILTO:b@example.com, mailto:a@example.com", true, ""},
		{"DMARC: weaker policy", KindDMARC, "v=DMARC1; p=reject", "v=DMARC1; p=none", false, "p=none, want reject"},
		{"DMARC: missing reports", KindDMARC, "v=DMARC1; p=none; rua=mailto:a@example.com", "v=DMARC1; p=none", false, "rua= missing"},
		{"DMARC: extra tag", KindDMARC, "v=DMARC1; p=none", "v=DMARC1; p=none; sp=reject", false, "unexpected sp=reject"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			same, why := judge(Record{Kind: tc.kind, Value: tc.want}, []string{tc.got})
			if same != tc.same {
				t.Fatalf("same = %v (%s), want %v", same, why, tc.same)
			}
			if !same && !strings.Contains(why, tc.why) {
				t.Fatalf("reason %q does not say %q", why, tc.why)
			}
		})
	}
}

func TestJudgeLooksAtTheRightRecordsAtAName(t *testing.T) {
	spf := Record{Kind: KindSPF, Value: "v=spf1 -all"}
	if ok, why := judge(spf, []string{"google-site-verification=abc", "v=spf1 -all"}); !ok {
		t.Errorf("other TXT records beside SPF: %s", why)
	}
	if ok, why := judge(spf, []string{"v=spf1 -all", "v=spf1 ~all"}); ok || !strings.Contains(why, "2 v=spf1 records") {
		t.Errorf("two SPF records: ok=%v %q", ok, why)
	}
	if ok, why := judge(spf, []string{"v=spf10 -all"}); ok || why != "no v=spf1 record" {
		t.Errorf("v=spf10 is not SPF: ok=%v %q", ok, why)
	}
	dmarc := Record{Kind: KindDMARC, Value: "v=DMARC1; p=none"}
	if ok, why := judge(dmarc, []string{"p=none; v=DMARC1"}); ok || why != "no v=DMARC1 record" {
		t.Errorf("v=DMARC1 must come first: ok=%v %q", ok, why)
	}
	dkim := Record{Kind: KindDKIM, Value: "v=DKIM1; p=AAAA"}
	if ok, why := judge(dkim, []string{"v=DKIM1; p=AAAA", "v=DKIM1; p=BBBB"}); ok || !strings.Contains(why, "2 TXT records") {
		t.Errorf("two key records: ok=%v %q", ok, why)
	}
	if ok, why := judge(dkim, nil); ok || why != "no key record" {
		t.Errorf("no record: ok=%v %q", ok, why)
	}
}

func TestUnescapeTXTUndoesPresentationEscapes(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:        "plain",
		`a\"b`:         `a"b`,
		`a\\b`:         `a\b`,
		`tab\009here`:  "tab\there",
		`end\`:         `end\`,
		`\255\000\065`: "\xff\x00A",
	} {
		if got := unescapeTXT(in); got != want {
			t.Errorf("unescapeTXT(%q) = %q, want %q", in, got, want)
		}
	}
}
