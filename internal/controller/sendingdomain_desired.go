package controller

import (
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	externaldnsv1alpha1 "sigs.k8s.io/external-dns/apis/v1alpha1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/dnsrecord"
)

// This file holds the pure part of the SendingDomain reconciler: what the
// spec, the pool and the keyring imply, with no client and no clock.

// Defaults the CRD schema also applies; repeated here so objects created
// without them (older API servers, tests) still mean the same.
const (
	sendingDomainDefaultTTL            = 300
	sendingDomainDefaultVerifyInterval = 10 * time.Minute
)

// sendingDomainSecretName is the DKIM key Secret of a SendingDomain.
func sendingDomainSecretName(sd *v1alpha1.SendingDomain) string {
	return sd.Name + "-dkim"
}

// sendingDomainPoolKey is the namespace/name of the pool a domain
// references; an empty namespace means the domain's own.
func sendingDomainPoolKey(sd *v1alpha1.SendingDomain) (namespace, name string) {
	ns := sd.Spec.PoolRef.Namespace
	if ns == "" {
		ns = sd.Namespace
	}
	return ns, sd.Spec.PoolRef.Name
}

func sendingDomainRotationPolicy(spec v1alpha1.DKIMSpec) dkim.Policy {
	if spec.Rotation == nil {
		return dkim.Policy{Overlap: dkim.DefaultOverlap}
	}
	// The schema's defaults: 2160h and 168h.
	p := dkim.Policy{Interval: 2160 * time.Hour, Overlap: dkim.DefaultOverlap}
	if spec.Rotation.Interval != nil {
		p.Interval = spec.Rotation.Interval.Duration
	}
	if spec.Rotation.Overlap != nil {
		p.Overlap = spec.Rotation.Overlap.Duration
	}
	return p
}

func sendingDomainAlgorithm(spec v1alpha1.DKIMSpec) dkim.Algorithm {
	if spec.Algorithm == "" {
		return dkim.RSA2048
	}
	return dkim.Algorithm(spec.Algorithm)
}

func sendingDomainVerifyInterval(spec v1alpha1.DNSSpec) time.Duration {
	if spec.Verify.Interval == nil || spec.Verify.Interval.Duration <= 0 {
		return sendingDomainDefaultVerifyInterval
	}
	return spec.Verify.Interval.Duration
}

func sendingDomainTTL(spec v1alpha1.DNSSpec) int64 {
	if spec.TTL <= 0 {
		return sendingDomainDefaultTTL
	}
	return int64(spec.TTL)
}

func sendingDomainEncoding(spec v1alpha1.DNSSpec) dnsrecord.Encoding {
	if spec.TXTEncoding == v1alpha1.TXTEncodingSingle {
		return dnsrecord.Single
	}
	return dnsrecord.Split
}

var sendingDomainSPFQualifiers = map[v1alpha1.SPFPolicy]dnsrecord.SPFQualifier{
	"":                         dnsrecord.SPFSoftFail,
	v1alpha1.SPFPolicySoftFail: dnsrecord.SPFSoftFail,
	v1alpha1.SPFPolicyFail:     dnsrecord.SPFFail,
	v1alpha1.SPFPolicyNeutral:  dnsrecord.SPFNeutral,
}

// sendingDomainSPF is the SPF content for the domain, and where it goes;
// ok is false when SPF is not published.
func sendingDomainSPF(sd *v1alpha1.SendingDomain, sendingIPs []string) (spf dnsrecord.SPF, name string, ok bool) {
	if sd.Spec.SPF.Publish != nil && !*sd.Spec.SPF.Publish {
		return spf, "", false
	}
	name = sd.Spec.SPF.RecordName
	if name == "" {
		name = sd.Spec.Domain
	}
	return dnsrecord.SPF{
		IPs:      sendingIPs,
		Includes: sd.Spec.SPF.Include,
		All:      sendingDomainSPFQualifiers[sd.Spec.SPF.Policy],
	}, strings.ToLower(strings.TrimSuffix(name, ".")), true
}

// sendingDomainRecords lists every record the domain needs: one DKIM record
// per published key (active first), then SPF, then DMARC.
func sendingDomainRecords(sd *v1alpha1.SendingDomain, sendingIPs []string, keys []dkim.PublishedKey) ([]dnsrecord.Record, error) {
	domain := strings.ToLower(strings.TrimSuffix(sd.Spec.Domain, "."))
	var records []dnsrecord.Record
	for _, k := range keys {
		records = append(records, dnsrecord.Record{Kind: dnsrecord.KindDKIM, Name: dnsrecord.DKIMName(k.Selector, domain), Value: k.Record})
	}
	if spf, name, ok := sendingDomainSPF(sd, sendingIPs); ok {
		text, err := spf.Text()
		if err != nil {
			return nil, fmt.Errorf("SPF record: %w", err)
		}
		records = append(records, dnsrecord.Record{Kind: dnsrecord.KindSPF, Name: name, Value: text})
	}
	if d := sd.Spec.DMARC; d.Publish == nil || *d.Publish {
		policy := string(d.Policy)
		if policy == "" {
			policy = string(v1alpha1.DMARCPolicyNone)
		}
		percent := 100
		if d.Percent != nil {
			percent = int(*d.Percent)
		}
		text, err := dnsrecord.DMARC{
			Policy:             policy,
			Percent:            percent,
			AggregateReportsTo: d.AggregateReportsTo,
			StrictDKIM:         d.Alignment.DKIM == v1alpha1.DMARCAlignmentStrict,
			StrictSPF:          d.Alignment.SPF == v1alpha1.DMARCAlignmentStrict,
		}.Text()
		if err != nil {
			return nil, fmt.Errorf("DMARC record: %w", err)
		}
		records = append(records, dnsrecord.Record{Kind: dnsrecord.KindDMARC, Name: dnsrecord.DMARCName(domain), Value: text})
	}
	return records, nil
}

// sendingDomainEndpointSpec is the DNSEndpoint spec publishing records.
func sendingDomainEndpointSpec(sd *v1alpha1.SendingDomain, records []dnsrecord.Record) (externaldnsv1alpha1.DNSEndpointSpec, error) {
	eps, err := dnsrecord.Endpoints(records, sendingDomainTTL(sd.Spec.DNS), sendingDomainEncoding(sd.Spec.DNS))
	if err != nil {
		return externaldnsv1alpha1.DNSEndpointSpec{}, err
	}
	return externaldnsv1alpha1.DNSEndpointSpec{Endpoints: eps}, nil
}

// sendingDomainRecordsChecked reports whether the last verification (in
// status) checked exactly these records; if not, a check is due now.
func sendingDomainRecordsChecked(status []v1alpha1.DNSRecordStatus, records []dnsrecord.Record) bool {
	return slices.EqualFunc(status, records, func(s v1alpha1.DNSRecordStatus, r dnsrecord.Record) bool {
		return s.Name == r.Name && s.Type == r.Type() && s.Value == r.Value
	})
}

// sendingDomainRecordVerified reports whether status shows record name
// verified with value.
func sendingDomainRecordVerified(status []v1alpha1.DNSRecordStatus, name, value string) bool {
	for _, s := range status {
		if s.Name == name && s.Value == value {
			return s.Verified
		}
	}
	return false
}

// sendingDomainRecordStatus turns verification results into status.
func sendingDomainRecordStatus(checks []dnsrecord.Check) []v1alpha1.DNSRecordStatus {
	out := make([]v1alpha1.DNSRecordStatus, 0, len(checks))
	for _, c := range checks {
		out = append(out, v1alpha1.DNSRecordStatus{Name: c.Record.Name, Type: c.Record.Type(), Value: c.Record.Value, Verified: c.Verified, Reason: c.Reason})
	}
	return out
}

// sendingDomainVerifiedCondition summarises the checks. The reason says
// what kind of record failed and how (condition reasons cannot hold a DNS
// name); the message names the record and the resolver.
func sendingDomainVerifiedCondition(checks []dnsrecord.Check) (status metav1.ConditionStatus, reason, message string) {
	var failed []dnsrecord.Check
	for _, c := range checks {
		if !c.Verified {
			failed = append(failed, c)
		}
	}
	if len(failed) == 0 {
		return metav1.ConditionTrue, "RecordsVerified", fmt.Sprintf("all %d records resolve as published", len(checks))
	}
	// Wrong records first: an unreachable resolver says nothing about them.
	slices.SortStableFunc(failed, func(a, b dnsrecord.Check) int {
		switch {
		case a.Unreachable == b.Unreachable:
			return 0
		case b.Unreachable:
			return -1
		default:
			return 1
		}
	})
	first := failed[0]
	switch {
	case first.Unreachable:
		reason = "ResolverUnreachable"
	case first.Missing:
		// Usually external-dns has not published it yet.
		reason = string(first.Record.Kind) + "RecordMissing"
	default:
		reason = string(first.Record.Kind) + "RecordMismatch"
	}
	message = first.Reason
	if len(failed) > 1 {
		message += fmt.Sprintf(" (and %d more records not verified)", len(failed)-1)
	}
	return metav1.ConditionFalse, reason, message
}

// sendingDomainVerifyDelay is how long after a check the next one is due.
// Verified records are checked every interval. Failing ones sooner, with
// the wait doubling: it is the time they have been failing, at least
// minBackoff and at most the interval. A resolver that does not answer is
// retried the same way, never in a hot loop.
func sendingDomainVerifyDelay(interval, minBackoff time.Duration, verified bool, failingFor time.Duration) time.Duration {
	if verified {
		return interval
	}
	return min(interval, max(minBackoff, failingFor))
}

// sendingDomainOlder orders SendingDomains by age for conflicts: the
// earlier creation time wins, then namespace/name so that the order is
// total even within one second.
func sendingDomainOlder(a, b *v1alpha1.SendingDomain) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// sendingDomainDKIMStatus shows the keyring's selectors.
func sendingDomainDKIMStatus(k *dkim.Keyring, plan dkim.Plan) v1alpha1.DKIMStatus {
	st := v1alpha1.DKIMStatus{ActiveSelector: k.Active.Selector}
	if k.Next != nil {
		st.NextSelector = k.Next.Selector
	}
	for _, r := range k.Retiring {
		st.RetiringSelectors = append(st.RetiringSelectors, r.Selector)
	}
	if !plan.NextRotation.IsZero() {
		t := metav1.NewTime(plan.NextRotation.UTC().Truncate(time.Second))
		st.NextRotation = &t
	}
	return st
}
