package sendingdomain

import (
	"context"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	externaldnsv1alpha1 "sigs.k8s.io/external-dns/apis/v1alpha1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/apply"
	"mailroom.io/mailroom/internal/controller/conditions"
	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/dnsrecord"
)

// This file is the records concern: the SPF, DKIM and DMARC records the
// spec, the pool and the keyring imply (pure functions, no client, no
// clock), and the DNSEndpoint that hands them to external-dns.

// defaultTTL is the CRD schema's default, repeated so objects created
// without it (older API servers, tests) still mean the same.
const defaultTTL = 300

// reconcileRecords renders the records and applies the DNSEndpoint. It
// reports DNSPublished, and whether the DNSEndpoint holds the records.
func (r *Reconciler) reconcileRecords(ctx context.Context, s *state, ring *dkim.Keyring) ([]dnsrecord.Record, bool, error) {
	sd, in := s.in.sd, s.in
	ns, name := poolKey(sd)
	var blocked conditions.Verdict
	switch {
	case in.pool == nil:
		blocked = conditions.Block(ReasonPoolNotFound, fmt.Sprintf("RelayPool %s/%s does not exist; its sending IPs are needed for SPF", ns, name))
	case !in.poolAllows:
		blocked = conditions.Block(ReasonPoolNotAllowed, fmt.Sprintf("RelayPool %s/%s does not allow namespace %s (spec.allowedNamespaces)", ns, name, sd.Namespace))
	case in.endpoint != nil && !metav1.IsControlledBy(in.endpoint, sd):
		blocked = conditions.Block(ReasonConflict, fmt.Sprintf("DNSEndpoint %s exists and is not owned by this SendingDomain", in.endpoint.Name))
	}
	if blocked.State != conditions.OK {
		s.report(v1alpha1.SendingDomainDNSPublished, blocked, "", "")
		return nil, false, nil
	}
	keys, err := ring.Published()
	if err != nil {
		return nil, false, err
	}
	records, err := renderRecords(sd, in.pool.Spec.SendingIPs, keys)
	if err != nil {
		s.report(v1alpha1.SendingDomainDNSPublished, conditions.Block(ReasonInvalidRecords, err.Error()), "", "")
		return nil, false, nil
	}
	desired, err := renderEndpoint(sd, records)
	if err != nil {
		s.report(v1alpha1.SendingDomainDNSPublished, conditions.Block(ReasonInvalidRecords, err.Error()), "", "")
		return nil, false, nil
	}
	var live client.Object
	if in.endpoint != nil {
		live = in.endpoint
	}
	wrote, err := apply.Object(ctx, r.Client, r.Scheme, desired, live)
	if err != nil {
		return nil, false, err
	}
	s.endpointRead = !wrote && in.endpoint != nil && in.endpoint.Status.ObservedGeneration >= in.endpoint.Generation
	msg := fmt.Sprintf("DNSEndpoint %s holds %d records", desired.Name, len(records))
	if !s.endpointRead {
		msg += "; external-dns has not read this version yet"
		// The DNSEndpoint watch sees external-dns' progress; look again
		// anyway, so the message does not stay stale.
		s.wakeIn(30 * time.Second)
	}
	s.report(v1alpha1.SendingDomainDNSPublished, conditions.Pass(), ReasonPublished, msg)
	return records, true, nil
}

// endpointName is the DNSEndpoint of a SendingDomain, in its namespace.
func endpointName(sd *v1alpha1.SendingDomain) string { return sd.Name }

// renderEndpoint is the DNSEndpoint publishing records, owned by sd.
func renderEndpoint(sd *v1alpha1.SendingDomain, records []dnsrecord.Record) (*externaldnsv1alpha1.DNSEndpoint, error) {
	spec, err := endpointSpec(sd, records)
	if err != nil {
		return nil, err
	}
	return &externaldnsv1alpha1.DNSEndpoint{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:       sd.Namespace,
			Name:            endpointName(sd),
			Labels:          map[string]string{SecretLabel: sd.Name, apply.ManagedByLabel: apply.ManagedByValue},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(sd, v1alpha1.GroupVersion.WithKind("SendingDomain"))},
		},
		Spec: spec,
	}, nil
}

// poolKey is the namespace/name of the pool a domain references; an empty
// namespace means the domain's own.
func poolKey(sd *v1alpha1.SendingDomain) (namespace, name string) {
	ns := sd.Spec.PoolRef.Namespace
	if ns == "" {
		ns = sd.Namespace
	}
	return ns, sd.Spec.PoolRef.Name
}

func ttl(spec v1alpha1.DNSSpec) int64 {
	if spec.TTL <= 0 {
		return defaultTTL
	}
	return int64(spec.TTL)
}

func encoding(spec v1alpha1.DNSSpec) dnsrecord.Encoding {
	if spec.TXTEncoding == v1alpha1.TXTEncodingSingle {
		return dnsrecord.Single
	}
	return dnsrecord.Split
}

var spfQualifiers = map[v1alpha1.SPFPolicy]dnsrecord.SPFQualifier{
	"":                         dnsrecord.SPFSoftFail,
	v1alpha1.SPFPolicySoftFail: dnsrecord.SPFSoftFail,
	v1alpha1.SPFPolicyFail:     dnsrecord.SPFFail,
	v1alpha1.SPFPolicyNeutral:  dnsrecord.SPFNeutral,
}

// spfRecord is the SPF content for the domain, and where it goes; ok is
// false when SPF is not published.
func spfRecord(sd *v1alpha1.SendingDomain, sendingIPs []string) (spf dnsrecord.SPF, name string, ok bool) {
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
		All:      spfQualifiers[sd.Spec.SPF.Policy],
	}, strings.ToLower(strings.TrimSuffix(name, ".")), true
}

// renderRecords lists every record the domain needs: one DKIM record per
// published key (active first), then SPF, then DMARC.
func renderRecords(sd *v1alpha1.SendingDomain, sendingIPs []string, keys []dkim.PublishedKey) ([]dnsrecord.Record, error) {
	domain := strings.ToLower(strings.TrimSuffix(sd.Spec.Domain, "."))
	var records []dnsrecord.Record
	for _, k := range keys {
		records = append(records, dnsrecord.Record{Kind: dnsrecord.KindDKIM, Name: dnsrecord.DKIMName(k.Selector, domain), Value: k.Record})
	}
	if spf, name, ok := spfRecord(sd, sendingIPs); ok {
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

// endpointSpec is the DNSEndpoint spec publishing records.
func endpointSpec(sd *v1alpha1.SendingDomain, records []dnsrecord.Record) (externaldnsv1alpha1.DNSEndpointSpec, error) {
	eps, err := dnsrecord.Endpoints(records, ttl(sd.Spec.DNS), encoding(sd.Spec.DNS))
	if err != nil {
		return externaldnsv1alpha1.DNSEndpointSpec{}, err
	}
	return externaldnsv1alpha1.DNSEndpointSpec{Endpoints: eps}, nil
}
