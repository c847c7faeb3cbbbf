package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DKIMAlgorithm is the key type used to sign mail for a domain.
// +kubebuilder:validation:Enum=RSA2048;RSA3072;RSA4096;Ed25519
type DKIMAlgorithm string

const (
	DKIMAlgorithmRSA2048 DKIMAlgorithm = "RSA2048"
	DKIMAlgorithmRSA3072 DKIMAlgorithm = "RSA3072"
	DKIMAlgorithmRSA4096 DKIMAlgorithm = "RSA4096"
	DKIMAlgorithmEd25519 DKIMAlgorithm = "Ed25519"
)

// SPFPolicy is what SPF tells receivers to do with mail from hosts the
// record does not list: the qualifier of the final "all" mechanism.
// +kubebuilder:validation:Enum=SoftFail;Fail;Neutral
type SPFPolicy string

const (
	SPFPolicySoftFail SPFPolicy = "SoftFail" // ~all
	SPFPolicyFail     SPFPolicy = "Fail"     // -all
	SPFPolicyNeutral  SPFPolicy = "Neutral"  // ?all
)

// DMARCPolicy is the DMARC "p=" tag.
// +kubebuilder:validation:Enum=none;quarantine;reject
type DMARCPolicy string

const (
	DMARCPolicyNone       DMARCPolicy = "none"
	DMARCPolicyQuarantine DMARCPolicy = "quarantine"
	DMARCPolicyReject     DMARCPolicy = "reject"
)

// DMARCAlignmentMode is the DMARC "adkim=" / "aspf=" tag.
// +kubebuilder:validation:Enum=relaxed;strict
type DMARCAlignmentMode string

const (
	DMARCAlignmentRelaxed DMARCAlignmentMode = "relaxed"
	DMARCAlignmentStrict  DMARCAlignmentMode = "strict"
)

// TXTEncoding says how long TXT values are written for external-dns.
// +kubebuilder:validation:Enum=Split;Single
type TXTEncoding string

const (
	// TXTEncodingSplit writes RFC 1035 quoted strings of at most 255 bytes
	// each, which every DNS server accepts (required for RSA keys of 2048
	// bits and more).
	TXTEncodingSplit TXTEncoding = "Split"
	// TXTEncodingSingle writes one raw string and leaves splitting to the
	// DNS provider (some APIs, e.g. Route 53 or Cloudflare, split for you).
	TXTEncodingSingle TXTEncoding = "Single"
)

// SendingDomainSpec declares a domain the cluster may send mail for.
// +kubebuilder:validation:XValidation:rule="!has(self.spf) || !has(self.spf.recordName) || size(self.spf.recordName) == 0 || !self.spf.recordName.matches('^([a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9])?[.])+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$') || self.spf.recordName == self.domain || self.spf.recordName.endsWith('.' + self.domain)",fieldPath=".spf.recordName",message="spf.recordName must be the domain itself or a name under it",messageExpression="'spf.recordName (' + self.spf.recordName + ') must be the domain itself (' + self.domain + ') or a name under it, e.g. bounce.' + self.domain"
// +kubebuilder:validation:XValidation:rule="!has(self.spf) || !has(self.spf.include) || !self.spf.include.exists(n, n.lowerAscii() == ((has(self.spf.recordName) && size(self.spf.recordName) > 0) ? self.spf.recordName : self.domain))",fieldPath=".spf.include",message="spf.include must not list the name the SPF record is published at: a record that includes itself is a loop receivers reject (permerror)",messageExpression="'spf.include must not list ' + self.spf.include.filter(n, n.lowerAscii() == ((has(self.spf.recordName) && size(self.spf.recordName) > 0) ? self.spf.recordName : self.domain))[0] + ', the name this SPF record is published at: a record that includes itself is a loop receivers reject (permerror); list other senders only, e.g. _spf.google.com'"
type SendingDomainSpec struct {
	// domain is the mail domain, as it appears after the @ in From
	// addresses: a lowercase DNS name without a trailing dot, such as
	// "example.com" (an internationalized domain in its xn-- form). It
	// cannot be changed; create another SendingDomain for another domain.
	// +required
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?[.])+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')",message="domain must be a lowercase DNS name with at least two labels and no trailing dot, e.g. example.com",messageExpression="size(self) == 0 ? 'domain is required: the mail domain, e.g. example.com' : self.matches('[[:^ascii:]]') ? 'domain must be ASCII: write an internationalized domain in its xn-- (punycode) form, e.g. xn--mnchen-3ya.de' : isIP(self) ? 'domain must be a DNS name, not an IP address, e.g. example.com' : 'domain must be a lowercase DNS name with at least two labels and no trailing dot, e.g. example.com'"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="domain is immutable; create a new SendingDomain for a different domain"
	Domain string `json:"domain"`

	// poolRef is the RelayPool that sends mail for this domain and signs it
	// with this domain's DKIM key. The pool's sendingIPs go into SPF.
	// +required
	PoolRef PoolReference `json:"poolRef"`

	// dkim configures the domain's DKIM signing key and its rotation.
	// +optional
	// +kubebuilder:default={}
	DKIM DKIMSpec `json:"dkim,omitempty"`

	// spf configures the SPF record published for the domain.
	// +optional
	// +kubebuilder:default={}
	SPF SPFSpec `json:"spf,omitempty"`

	// dmarc configures the DMARC record published at _dmarc.<domain>.
	// +optional
	// +kubebuilder:default={}
	DMARC DMARCSpec `json:"dmarc,omitempty"`

	// dns configures how records are published through external-dns and
	// how the operator checks that they resolve.
	// +optional
	// +kubebuilder:default={}
	DNS DNSSpec `json:"dns,omitempty"`
}

// DKIMSpec configures DKIM signing keys.
type DKIMSpec struct {
	// algorithm of the signing key. RSA2048 is understood by every
	// receiver; Ed25519 (RFC 8463) keys are short but not yet verified by
	// every receiver. Changing it takes effect at the next key (rotation
	// or the mailroom.io/rotate-dkim annotation), never by replacing the
	// current key silently.
	// +optional
	// +kubebuilder:default=RSA2048
	Algorithm DKIMAlgorithm `json:"algorithm,omitempty"`

	// selector for the first key: a DNS label such as "mail2026". Empty
	// lets the operator pick one from the date, e.g. "mr-20261125". Later
	// keys made by rotation always get generated selectors.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="size(self) == 0 || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="dkim.selector must be a DNS label: lowercase letters, digits and '-', not starting or ending with '-', e.g. mail2026; empty lets the operator pick one"
	Selector string `json:"selector,omitempty"`

	// rotation replaces the key on a schedule. Omitted: the key is never
	// rotated automatically.
	// +optional
	Rotation *DKIMRotation `json:"rotation,omitempty"`
}

// DKIMRotation schedules automatic key rotation: a new key is published
// beside the active one, made active once it resolves, and the old record
// stays published for the overlap so mail signed before the switch still
// verifies.
//
// The overlap must be at least 120h: mail signed with the old key may wait
// in a pool's queue up to the pool's delivery.retry.maxAge (120h by
// default) and must still verify when it arrives. A pool with a longer
// maxAge needs a longer overlap (the operator warns).
// +kubebuilder:validation:XValidation:rule="!has(self.interval) || !has(self.overlap) || !self.interval.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || !self.overlap.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self.interval) < duration('168h') || duration(self.overlap) < duration('120h') || duration(self.overlap) < duration(self.interval) || duration(self.overlap) != duration('168h')",fieldPath=".interval",message="dkim.rotation.interval must be longer than dkim.rotation.overlap (168h, the default)",messageExpression="'dkim.rotation.interval (' + self.interval + ') must be longer than overlap (168h, the default): each key stays published for the overlap after it is replaced'"
// +kubebuilder:validation:XValidation:rule="!has(self.interval) || !has(self.overlap) || !self.interval.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || !self.overlap.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self.interval) < duration('168h') || duration(self.overlap) < duration('120h') || duration(self.overlap) < duration(self.interval) || duration(self.overlap) == duration('168h')",fieldPath=".overlap",message="dkim.rotation.overlap must be shorter than dkim.rotation.interval",messageExpression="'dkim.rotation.overlap (' + self.overlap + ') must be shorter than interval (' + self.interval + (duration(self.interval) == duration('2160h') ? ', the default' : \"\") + '): each key stays published for the overlap after it is replaced'"
type DKIMRotation struct {
	// interval is how long a key stays active, as a Go duration string such
	// as "2160h" (90 days; units h, m, s; no d), at least "168h" (7 days)
	// and longer than overlap.
	// +optional
	// +kubebuilder:default="2160h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('168h')",message="dkim.rotation.interval must be a positive duration of at least 168h (7 days), such as 2160h (units: h, m, s)",messageExpression="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') ? 'dkim.rotation.interval (' + self + ') must be at least 168h (7 days): the previous key stays published for the overlap (at least 120h) after each rotation, e.g. 2160h (90 days)' : 'dkim.rotation.interval must be a positive duration such as 2160h (units: h, m, s; no d)'"
	Interval *metav1.Duration `json:"interval,omitempty"`

	// overlap is how long the previous key's record stays published after
	// the switch, as a Go duration string such as "168h" (7 days; units h,
	// m, s; no d), so that mail in flight signed with it still verifies.
	// At least "120h", the default delivery.retry.maxAge of a pool.
	// +optional
	// +kubebuilder:default="168h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('120h')",message="dkim.rotation.overlap must be a duration of at least 120h, such as 168h (units: h, m, s)",messageExpression="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') ? 'dkim.rotation.overlap (' + self + ') must be at least 120h: mail signed with the old key can wait in the queue up to the pool delivery.retry.maxAge (120h by default) and must still verify on arrival' : 'dkim.rotation.overlap must be a duration such as 168h (units: h, m, s; no d)'"
	Overlap *metav1.Duration `json:"overlap,omitempty"`
}

// SPFSpec configures the SPF (RFC 7208) record.
type SPFSpec struct {
	// publish the SPF record. Set false when SPF for this name is managed
	// elsewhere; only one v=spf1 record may exist at a name.
	// +optional
	// +kubebuilder:default=true
	Publish *bool `json:"publish,omitempty"`

	// recordName is where the SPF record is published. Empty: the domain
	// apex. It must be the domain or a name under it (for example a
	// bounce subdomain used as the envelope sender).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == '' || self.matches('^([a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9])?[.])+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')",message="spf.recordName must be a lowercase DNS name without a trailing dot",messageExpression="self.matches('[[:^ascii:]]') ? 'spf.recordName must be ASCII: write an internationalized name in its xn-- (punycode) form' : 'spf.recordName must be a lowercase DNS name without a trailing dot, e.g. bounce.example.com; empty means the domain'"
	RecordName string `json:"recordName,omitempty"`

	// include lists other senders' SPF records to include, as DNS names
	// such as "_spf.google.com" (not IP addresses: those belong in the
	// pool's sendingIPs; not this domain itself). Each costs at least one
	// of SPF's 10 DNS lookups; the operator warns when the record would
	// exceed them.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=10
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:XValidation:rule="self.matches('^([a-zA-Z0-9_]([-a-zA-Z0-9_]{0,61}[a-zA-Z0-9])?[.])+[a-zA-Z]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$')",message="spf.include entries must be DNS names such as _spf.google.com, without 'include:'",messageExpression="self.startsWith('include:') ? 'spf.include entries must be DNS names such as _spf.google.com, without include:' : isIP(self) || isCIDR(self) ? 'spf.include entries must be DNS names, not IP addresses (' + self + '): SPF include takes a domain; put the relay addresses in the RelayPool sendingIPs' : self.matches('[[:^ascii:]]') ? 'spf.include entries must be ASCII: write an internationalized name in its xn-- (punycode) form' : 'spf.include entries must be DNS names such as _spf.google.com, without include: and without a trailing dot'"
	Include []string `json:"include,omitempty"`

	// policy for hosts the record does not list: SoftFail (~all), Fail
	// (-all) or Neutral (?all).
	// +optional
	// +kubebuilder:default=SoftFail
	Policy SPFPolicy `json:"policy,omitempty"`
}

// DMARCSpec configures the DMARC (RFC 7489) record.
type DMARCSpec struct {
	// publish the DMARC record at _dmarc.<domain>.
	// +optional
	// +kubebuilder:default=true
	Publish *bool `json:"publish,omitempty"`

	// policy receivers apply to mail that fails DMARC: none (monitor only),
	// quarantine or reject.
	// +optional
	// +kubebuilder:default=none
	Policy DMARCPolicy `json:"policy,omitempty"`

	// percent of failing mail the policy applies to (the pct= tag), an
	// integer from 0 to 100.
	// +optional
	// +kubebuilder:default=100
	// +kubebuilder:validation:XValidation:rule="self >= 0 && self <= 100",message="dmarc.percent must be between 0 and 100"
	Percent *int32 `json:"percent,omitempty"`

	// aggregateReportsTo lists where receivers send aggregate reports (the
	// rua= tag), as mailto: URIs such as "mailto:dmarc@example.com".
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=10
	// +kubebuilder:validation:items:MaxLength=320
	// +kubebuilder:validation:items:XValidation:rule="self.matches('^mailto:[-a-zA-Z0-9.#$%&*+/=?^_{|}~]+@([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?[.])+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')",message="dmarc.aggregateReportsTo entries must be mailto: URIs such as mailto:dmarc@example.com, without spaces, control characters, commas, semicolons or !",messageExpression="!self.startsWith('mailto:') ? 'dmarc.aggregateReportsTo entries must be mailto: URIs such as mailto:dmarc@example.com' : self.matches('[[:^ascii:]]') ? 'dmarc.aggregateReportsTo entries must be ASCII: write the domain in its xn-- (punycode) form' : 'dmarc.aggregateReportsTo entries must be mailto: URIs with a lowercase domain, such as mailto:dmarc@example.com, without spaces, control characters, commas, semicolons or !'"
	AggregateReportsTo []string `json:"aggregateReportsTo,omitempty"`

	// alignment says how closely the DKIM signing domain and the SPF
	// envelope domain must match the From domain.
	// +optional
	// +kubebuilder:default={}
	Alignment DMARCAlignment `json:"alignment,omitempty"`
}

// DMARCAlignment holds the adkim= and aspf= tags.
type DMARCAlignment struct {
	// dkim alignment (adkim=): relaxed allows subdomains, strict needs an
	// exact match.
	// +optional
	// +kubebuilder:default=relaxed
	DKIM DMARCAlignmentMode `json:"dkim,omitempty"`

	// spf alignment (aspf=): relaxed allows subdomains, strict needs an
	// exact match.
	// +optional
	// +kubebuilder:default=relaxed
	SPF DMARCAlignmentMode `json:"spf,omitempty"`
}

// DNSSpec configures publishing and verification.
type DNSSpec struct {
	// ttl of the published records, in seconds: an integer from 30 to
	// 86400 such as 300 (not a duration like "5m").
	// +optional
	// +kubebuilder:default=300
	// +kubebuilder:validation:XValidation:rule="self >= 30 && self <= 86400",message="dns.ttl must be between 30 and 86400 seconds"
	TTL int32 `json:"ttl,omitempty"`

	// txtEncoding says how long TXT values are handed to external-dns:
	// Split (RFC 1035 quoted strings of at most 255 bytes, right for
	// RFC 2136 and most providers) or Single (one string, for providers
	// whose API splits long values itself).
	// +optional
	// +kubebuilder:default=Split
	TXTEncoding TXTEncoding `json:"txtEncoding,omitempty"`

	// verify configures how the operator checks that the records resolve.
	// +optional
	// +kubebuilder:default={}
	Verify DNSVerifySpec `json:"verify,omitempty"`
}

// DNSVerifySpec configures DNS verification.
type DNSVerifySpec struct {
	// resolvers to query, as "ip", "ip:port" or "[ipv6]:port", such as
	// "10.0.0.10:53". Empty: the resolvers in the operator's resolv.conf.
	// Point these at the authoritative servers to see changes before
	// caches expire.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isIP(self) || (self.matches('^[0-9.]+:[0-9]{1,5}$') && isIP(self.substring(0, self.lastIndexOf(':'))) && int(self.substring(self.lastIndexOf(':') + 1)) >= 1 && int(self.substring(self.lastIndexOf(':') + 1)) <= 65535) || (self.matches('^[[][0-9a-fA-F:.]+[]]:[0-9]{1,5}$') && isIP(self.substring(1, self.lastIndexOf(']'))) && int(self.substring(self.lastIndexOf(':') + 1)) >= 1 && int(self.substring(self.lastIndexOf(':') + 1)) <= 65535)",message="dns.verify.resolvers entries must be IP addresses, optionally with a port from 1 to 65535: 10.0.0.10, 10.0.0.10:53 or [fd00::10]:53"
	Resolvers []string `json:"resolvers,omitempty"`

	// interval between checks once the records verified, as a Go duration
	// string such as "10m" (units h, m, s), at least "1s". Failing checks
	// are retried sooner, with backoff.
	// +optional
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s')",message="dns.verify.interval must be a duration of at least 1s, such as 10m"
	Interval *metav1.Duration `json:"interval,omitempty"`
}

// Condition types of a SendingDomain, besides Ready.
const (
	// SendingDomainKeyReady: the DKIM key Secret exists, parses and matches
	// the spec.
	SendingDomainKeyReady = "KeyReady"
	// SendingDomainDNSPublished: the DNSEndpoint holds the desired records.
	SendingDomainDNSPublished = "DNSPublished"
	// SendingDomainDNSVerified: every record resolves with the desired
	// meaning at the configured resolvers.
	SendingDomainDNSVerified = "DNSVerified"
	// SendingDomainSigning: every ready relay of the pool runs a
	// configuration revision holding the domain's active key, so mail for
	// the domain is signed with the key DNS publishes.
	SendingDomainSigning = "Signing"
	// SendingDomainSPFLookupLimit: true when the SPF record would need more
	// than the 10 DNS lookups RFC 7208 allows.
	SendingDomainSPFLookupLimit = "SPFLookupLimitExceeded"
)

// SendingDomainStatus is the observed state of a SendingDomain.
type SendingDomainStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: KeyReady, DNSPublished, DNSVerified and Ready (all three
	// true).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// dkim shows the selectors in use.
	// +optional
	DKIM DKIMStatus `json:"dkim,omitempty"`

	// records are the DNS records the domain needs, with the result of the
	// last check of each.
	// +optional
	// +listType=atomic
	Records []DNSRecordStatus `json:"records,omitempty"`

	// lastVerified is when the result of the DNS checks last changed. The
	// records are looked up every dns.verify.interval, but an unchanged
	// result is not written again, so status does not churn.
	// +optional
	LastVerified *metav1.Time `json:"lastVerified,omitempty"`
}

// DKIMStatus shows the DKIM selectors in use.
type DKIMStatus struct {
	// activeSelector signs outgoing mail.
	// +optional
	ActiveSelector string `json:"activeSelector,omitempty"`
	// nextSelector is published and becomes active once it verifies.
	// +optional
	NextSelector string `json:"nextSelector,omitempty"`
	// retiringSelectors no longer sign but stay published until their
	// overlap ends.
	// +optional
	// +listType=atomic
	RetiringSelectors []string `json:"retiringSelectors,omitempty"`
	// nextRotation is when the active key is due to be replaced by the next
	// one (the switch happens once the next key's record resolves), when
	// rotation is on.
	// +optional
	NextRotation *metav1.Time `json:"nextRotation,omitempty"`
}

// DNSRecordStatus is one published record and whether it resolves.
type DNSRecordStatus struct {
	// name is the fully qualified record name, without a trailing dot.
	Name string `json:"name"`
	// type is the record type, e.g. TXT.
	Type string `json:"type"`
	// value is the record's text as receivers see it (strings joined).
	Value string `json:"value"`
	// verified is true when the last lookup found the record with this
	// meaning.
	Verified bool `json:"verified"`
	// reason explains a failed check.
	// +optional
	Reason string `json:"reason,omitempty"`
}

// SendingDomain is a domain the cluster may send mail for. The operator
// keeps its DKIM key in a Secret "<name>-dkim" (kept when the
// SendingDomain is deleted), publishes its SPF, DKIM and DMARC records
// through external-dns, and verifies that they resolve.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=sdom,categories=mailroom
// +kubebuilder:printcolumn:name="Domain",type=string,JSONPath=`.spec.domain`
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.poolRef.name`
// +kubebuilder:printcolumn:name="Selector",type=string,JSONPath=`.status.dkim.activeSelector`
// +kubebuilder:printcolumn:name="Verified",type=string,JSONPath=`.status.conditions[?(@.type=="DNSVerified")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SendingDomain struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state.
	// +required
	Spec SendingDomainSpec `json:"spec"`

	// status is the observed state.
	// +optional
	Status SendingDomainStatus `json:"status,omitempty"`
}

// SendingDomainList is a list of SendingDomains.
// +kubebuilder:object:root=true
type SendingDomainList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SendingDomain `json:"items"`
}

func init() {
	SchemeBuilder.Register(&SendingDomain{}, &SendingDomainList{})
}
