package sendingdomain

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/dnsrecord"
)

func testSendingDomain() *v1alpha1.SendingDomain {
	return &v1alpha1.SendingDomain{
		ObjectMeta: metav1.ObjectMeta{Namespace: "mail", Name: "example-com"},
		Spec: v1alpha1.SendingDomainSpec{
			Domain:  "example.com",
			PoolRef: v1alpha1.PoolReference{Name: "transactional"},
			SPF:     v1alpha1.SPFSpec{Include: []string{"_spf.google.com"}, Policy: v1alpha1.SPFPolicyFail},
			DMARC: v1alpha1.DMARCSpec{
				Policy: v1alpha1.DMARCPolicyQuarantine, Percent: ptr.To[int32](50),
				AggregateReportsTo: []string{"mailto:dmarc@example.com"},
				Alignment:          v1alpha1.DMARCAlignment{DKIM: v1alpha1.DMARCAlignmentStrict},
			},
			DNS: v1alpha1.DNSSpec{TTL: 600},
		},
	}
}

func TestSendingDomainRecordsFollowTheSpec(t *testing.T) {
	sd := testSendingDomain()
	keys := []dkim.PublishedKey{
		{Selector: "mr-20261125", Record: "v=DKIM1; k=ed25519; p=AAAA", Role: dkim.RoleActive},
		{Selector: "mr-20261125-2", Record: "v=DKIM1; k=ed25519; p=BBBB", Role: dkim.RoleNext},
	}
	records, err := renderRecords(sd, []string{"203.0.113.10", "2001:db8::10"}, keys)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range records {
		got = append(got, string(r.Kind)+" "+r.Name+" "+r.Value)
	}
	want := []string{
		"DKIM mr-20261125._domainkey.example.com v=DKIM1; k=ed25519; p=AAAA",
		"DKIM mr-20261125-2._domainkey.example.com v=DKIM1; k=ed25519; p=BBBB",
		"SPF example.com v=spf1 ip4:203.0.113.10 ip6:2001:db8::10 include:_spf.google.com -all",
		"DMARC _dmarc.example.com v=DMARC1; p=quarantine; pct=50; rua=mailto:dmarc@example.com; adkim=s; aspf=r",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	spec, err := endpointSpec(sd, records)
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Endpoints) != 4 || spec.Endpoints[0].RecordTTL != 600 || spec.Endpoints[2].Targets[0] != `"v=spf1 ip4:203.0.113.10 ip6:2001:db8::10 include:_spf.google.com -all"` {
		t.Fatalf("endpoints: %v", spec.Endpoints)
	}
}

func TestSendingDomainRecordsLeaveOutWhatIsNotPublished(t *testing.T) {
	sd := testSendingDomain()
	sd.Spec.SPF.Publish = ptr.To(false)
	sd.Spec.DMARC.Publish = ptr.To(false)
	records, err := renderRecords(sd, nil, []dkim.PublishedKey{{Selector: "s", Record: "v=DKIM1; p=A"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(records) != 1 || records[0].Kind != dnsrecord.KindDKIM {
		t.Fatalf("got %v, want only the DKIM record", records)
	}
}

func TestSendingDomainSPFGoesWhereTheSpecSays(t *testing.T) {
	sd := testSendingDomain()
	sd.Spec.SPF.RecordName = "Bounces.Example.com"
	_, name, ok := spfRecord(sd, nil)
	if !ok || name != "bounces.example.com" {
		t.Fatalf("SPF at %q (published %v), want bounces.example.com", name, ok)
	}
}

func TestSendingDomainDefaultsMatchTheSchema(t *testing.T) {
	sd := &v1alpha1.SendingDomain{Spec: v1alpha1.SendingDomainSpec{Domain: "example.com"}}
	records, err := renderRecords(sd, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if records[0].Value != "v=spf1 ~all" || records[1].Value != "v=DMARC1; p=none; pct=100; adkim=r; aspf=r" {
		t.Fatalf("defaults: %v", records)
	}
	if ttl(sd.Spec.DNS) != 300 || encoding(sd.Spec.DNS) != dnsrecord.Split ||
		verifyInterval(sd.Spec.DNS) != 10*time.Minute || algorithm(sd.Spec.DKIM) != dkim.RSA2048 {
		t.Fatal("defaults differ from the CRD schema's")
	}
	if p := rotationPolicy(sd.Spec.DKIM); p.Interval != 0 || p.Overlap != dkim.DefaultOverlap {
		t.Fatalf("no rotation spec: policy %+v", p)
	}
}

func TestSendingDomainVerifiedConditionTellsMissingFromWrong(t *testing.T) {
	dmarcRec := dnsrecord.Record{Kind: dnsrecord.KindDMARC, Name: "_dmarc.example.com"}
	_, reason, msg := verifiedCondition([]dnsrecord.Check{
		{Record: dmarcRec, Reason: "DMARC TXT _dmarc.example.com at 10.0.0.2:53: no v=DMARC1 record", Missing: true},
	})
	if reason != "DMARCRecordMissing" || !strings.Contains(msg, "_dmarc.example.com") {
		t.Fatalf("got %s %q, want DMARCRecordMissing naming the record", reason, msg)
	}
}

func TestSendingDomainVerifiedConditionNamesTheRecord(t *testing.T) {
	dkimRec := dnsrecord.Record{Kind: dnsrecord.KindDKIM, Name: "s._domainkey.example.com"}
	spfRec := dnsrecord.Record{Kind: dnsrecord.KindSPF, Name: "example.com"}
	status, reason, msg := verifiedCondition([]dnsrecord.Check{
		{Record: dkimRec, Reason: "resolver 10.0.0.1:53 did not answer", Unreachable: true},
		{Record: spfRec, Reason: "SPF TXT example.com at 10.0.0.2:53: missing ip4:192.0.2.1"},
	})
	if status != metav1.ConditionFalse || reason != "SPFRecordMismatch" || !strings.HasPrefix(msg, "SPF TXT example.com") || !strings.Contains(msg, "1 more") {
		t.Fatalf("got %s %s %q; a wrong record outranks an unreachable resolver", status, reason, msg)
	}
	_, reason, _ = verifiedCondition([]dnsrecord.Check{{Record: dkimRec, Unreachable: true, Reason: "x"}, {Record: spfRec, Verified: true}})
	if reason != "ResolverUnreachable" {
		t.Fatalf("reason %s, want ResolverUnreachable", reason)
	}
	if status, reason, _ := verifiedCondition([]dnsrecord.Check{{Record: spfRec, Verified: true}}); status != metav1.ConditionTrue || reason != "RecordsVerified" {
		t.Fatalf("all verified: %s %s", status, reason)
	}
}

func TestSendingDomainVerifyDelayBacksOffUpToTheInterval(t *testing.T) {
	const interval, minBackoff = 10 * time.Minute, 5 * time.Second
	for _, tc := range []struct {
		verified   bool
		failingFor time.Duration
		want       time.Duration
	}{
		{true, 0, interval},
		{false, 0, minBackoff},
		{false, 3 * time.Second, minBackoff},
		{false, 40 * time.Second, 40 * time.Second},
		{false, time.Hour, interval},
	} {
		if got := verifyDelay(interval, minBackoff, tc.verified, tc.failingFor, -1); got != tc.want {
			t.Errorf("verified=%v failing for %v: delay %v, want %v", tc.verified, tc.failingFor, got, tc.want)
		}
	}
	// While external-dns publishes, failed checks retry at a tenth of the
	// time since it read the records, however long they have failed.
	for _, tc := range []struct{ sinceRead, want time.Duration }{
		{0, minBackoff},
		{20 * time.Second, minBackoff},
		{2 * time.Minute, 12 * time.Second},
		{publishWindow, interval}, // past the window: the backoff
	} {
		if got := verifyDelay(interval, minBackoff, false, time.Hour, tc.sinceRead); got != tc.want {
			t.Errorf("read %v ago: delay %v, want %v", tc.sinceRead, got, tc.want)
		}
	}
	if got := verifyDelay(interval, minBackoff, true, 0, time.Second); got != interval {
		t.Errorf("verified while publishing: delay %v, want %v", got, interval)
	}
}

func TestSendingDomainOlderIsATotalOrder(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC))
	a := &v1alpha1.SendingDomain{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "x", CreationTimestamp: t0}}
	b := &v1alpha1.SendingDomain{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "x", CreationTimestamp: t0}}
	c := &v1alpha1.SendingDomain{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "x", CreationTimestamp: metav1.NewTime(t0.Add(-time.Second))}}
	if !older(a, b) || older(b, a) || !older(c, a) || older(a, c) {
		t.Fatal("order is not by creation time, then namespace/name")
	}
}
