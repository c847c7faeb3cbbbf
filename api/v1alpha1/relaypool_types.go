package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NamespacesFrom says which namespaces may attach to a RelayPool.
// +kubebuilder:validation:Enum=Same;All;Selector
type NamespacesFrom string

const (
	NamespacesFromSame     NamespacesFrom = "Same"
	NamespacesFromAll      NamespacesFrom = "All"
	NamespacesFromSelector NamespacesFrom = "Selector"
)

// DeliveryMode says how the relay reaches recipients.
// +kubebuilder:validation:Enum=Direct;Smarthost
type DeliveryMode string

const (
	// DeliveryModeDirect looks up each recipient domain's MX hosts and
	// delivers to them on port 25.
	DeliveryModeDirect DeliveryMode = "Direct"
	// DeliveryModeSmarthost sends everything through one upstream server.
	DeliveryModeSmarthost DeliveryMode = "Smarthost"
)

// SmarthostTLS says how the relay secures its connection to the smarthost.
// +kubebuilder:validation:Enum=Required;Implicit;Opportunistic
type SmarthostTLS string

const (
	// SmarthostTLSRequired: STARTTLS with a verified certificate, or no
	// delivery.
	SmarthostTLSRequired SmarthostTLS = "Required"
	// SmarthostTLSImplicit: TLS from the first byte (usually port 465).
	SmarthostTLSImplicit SmarthostTLS = "Implicit"
	// SmarthostTLSOpportunistic: STARTTLS when offered, cleartext
	// otherwise. Not allowed with credentials.
	SmarthostTLSOpportunistic SmarthostTLS = "Opportunistic"
)

// RelayPoolSpec declares a fleet of relay pods.
// +kubebuilder:validation:XValidation:rule="!has(self.api) || !has(self.api.port) || !has(self.submission) || ((!has(self.submission.starttlsPort) || self.api.port != self.submission.starttlsPort) && (!has(self.submission.implicitTLSPort) || self.api.port != self.submission.implicitTLSPort))",fieldPath=".api.port",message="api.port (443 unless set) must differ from submission.starttlsPort and submission.implicitTLSPort: the pool's Service needs a port each for SMTP and the HTTP API; change one of them"
type RelayPoolSpec struct {
	// replicas is the number of relay pods, an integer such as 2 (not
	// quoted), 0 or more. Each pod owns its own queue volume. 0 stops the
	// pool (queued mail stays on the volumes). The scale subresource checks
	// it (kubectl scale, autoscalers).
	// +optional
	// +kubebuilder:default=1
	Replicas *int32 `json:"replicas,omitempty"`

	// hostname the relays use in EHLO, Received headers, DSNs and as the
	// TLS server name, such as "relay.example.com". It should resolve to the
	// pool's sendingIPs and have matching reverse DNS.
	// An internationalized name is written in its xn-- (punycode) form.
	// +required
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?[.])+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')",message="hostname must be a lowercase fully qualified DNS name without a trailing dot, e.g. relay.example.com",messageExpression="size(self) == 0 ? 'hostname is required: the DNS name of the relays, e.g. relay.example.com' : self.matches('[[:^ascii:]]') ? 'hostname must be ASCII: write an internationalized name in its xn-- (punycode) form, e.g. relay.xn--mnchen-3ya.de' : isIP(self) ? 'hostname must be a DNS name, not an IP address: receivers check that the EHLO name resolves to the sending IP, e.g. relay.example.com' : 'hostname must be a lowercase fully qualified DNS name without a trailing dot, e.g. relay.example.com'"
	Hostname string `json:"hostname"`

	// image of the relay. Empty: the relay image matching the operator's
	// version (recommended).
	// +optional
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.matches('[[:space:][:cntrl:]]')",message="image must be an image reference such as ghcr.io/example/mailroom-relay:v1.2.3, without spaces or control characters; empty means the relay image matching the operator"
	Image string `json:"image,omitempty"`

	// resources of each relay container. A request must not exceed the
	// limit of the same resource.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.requests) || !has(self.limits) || !('cpu' in self.requests) || !('cpu' in self.limits) || !isQuantity(string(self.requests['cpu'])) || !isQuantity(string(self.limits['cpu'])) || !quantity(string(self.requests['cpu'])).isGreaterThan(quantity(string(self.limits['cpu'])))",fieldPath=".requests.cpu",message="resources.requests.cpu must not exceed resources.limits.cpu: raise the limit or lower the request"
	// +kubebuilder:validation:XValidation:rule="!has(self.requests) || !has(self.limits) || !('memory' in self.requests) || !('memory' in self.limits) || !isQuantity(string(self.requests['memory'])) || !isQuantity(string(self.limits['memory'])) || !quantity(string(self.requests['memory'])).isGreaterThan(quantity(string(self.limits['memory'])))",fieldPath=".requests.memory",message="resources.requests.memory must not exceed resources.limits.memory: raise the limit or lower the request"
	// +kubebuilder:validation:XValidation:rule="!has(self.requests) || !has(self.limits) || !('ephemeral-storage' in self.requests) || !('ephemeral-storage' in self.limits) || !isQuantity(string(self.requests['ephemeral-storage'])) || !isQuantity(string(self.limits['ephemeral-storage'])) || !quantity(string(self.requests['ephemeral-storage'])).isGreaterThan(quantity(string(self.limits['ephemeral-storage'])))",fieldPath=".requests['ephemeral-storage']",message="resources.requests.ephemeral-storage must not exceed resources.limits.ephemeral-storage: raise the limit or lower the request"
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// storage of each pod's queue volume.
	// +optional
	// +kubebuilder:default={}
	Storage StorageSpec `json:"storage,omitempty"`

	// allowedNamespaces says which namespaces may attach SendingDomains and
	// SMTPCredentials to this pool.
	// +optional
	// +kubebuilder:default={}
	AllowedNamespaces AllowedNamespaces `json:"allowedNamespaces,omitempty"`

	// submission configures the ports applications submit mail on.
	// +optional
	// +kubebuilder:default={}
	Submission SubmissionSpec `json:"submission,omitempty"`

	// delivery configures how mail leaves the pool.
	// +optional
	// +kubebuilder:default={}
	Delivery DeliverySpec `json:"delivery,omitempty"`

	// sendingIPs are the public addresses the pool's mail leaves from, such
	// as "203.0.113.10", "2001:db8::25" or a range "203.0.113.0/28". They
	// are published in the SPF record of every domain on this pool, so a
	// range may be at most a /16 (IPv4) or a /32 (IPv6).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isIP(self) ? !ip(self).isUnspecified() : (isCIDR(self) && cidr(self).prefixLength() >= (cidr(self).ip().family() == 4 ? 16 : 32))",message="sendingIPs entries must be IPv4 or IPv6 addresses or CIDR ranges, e.g. 203.0.113.10 or 203.0.113.0/28",messageExpression="isIP(self) ? 'sendingIPs entry ' + self + ' is the unspecified address, not one mail can leave from: list the egress addresses, e.g. 203.0.113.10' : isCIDR(self) ? 'sendingIPs entry ' + self + ' is too broad: SPF would authorize ' + (cidr(self).prefixLength() == 0 ? 'the whole Internet' : 'far more hosts than a relay pool uses') + '; list the egress addresses, or ranges of at least /16 (IPv4) or /32 (IPv6)' : 'sendingIPs entries must be IPv4 or IPv6 addresses or CIDR ranges, e.g. 203.0.113.10 or 203.0.113.0/28, not host names'"
	SendingIPs []string `json:"sendingIPs,omitempty"`

	// service exposes the pool outside the cluster, in addition to the
	// ClusterIP Service applications in the cluster use. Omitted: no
	// external Service.
	// +optional
	Service *ExternalServiceSpec `json:"service,omitempty"`

	// proxyProtocol makes the relays read PROXY protocol (v1 or v2) headers
	// from a load balancer, so throttling, trusted networks and logs see the
	// real client address. Omitted: no PROXY headers are accepted.
	// +optional
	ProxyProtocol *ProxyProtocolSpec `json:"proxyProtocol,omitempty"`

	// networkPolicy shapes the NetworkPolicy the operator writes for the
	// relay pods.
	// +optional
	// +kubebuilder:default={}
	NetworkPolicy NetworkPolicySpec `json:"networkPolicy,omitempty"`

	// api configures the HTTP send API (/v1/messages) the relays serve over
	// TLS beside SMTP, with the submission certificate.
	// +optional
	// +kubebuilder:default={}
	API APISpec `json:"api,omitempty"`

	// events configures the delivery events the relays post to the
	// webhooks SMTPCredentials name.
	// +optional
	// +kubebuilder:default={}
	Events PoolEventsSpec `json:"events,omitempty"`
}

// APISpec configures the pool's HTTP send API.
type APISpec struct {
	// enabled serves the HTTP API and exposes it on the pool's Service.
	// +optional
	// +kubebuilder:default=true
	Enabled *bool `json:"enabled,omitempty"`

	// port of the API on the pool's Service, an integer such as 443. It
	// must differ from the submission ports.
	// +optional
	// +kubebuilder:default=443
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 65535",message="api.port must be a port between 1 and 65535"
	Port int32 `json:"port,omitempty"`
}

// PoolEventsSpec limits where the pool's relays post events.
type PoolEventsSpec struct {
	// allowedTargets are the webhook hosts the relays may call: an exact
	// host name ("hooks.example.com"), ".suffix" for every name under it
	// (".shop.svc"), or a CIDR ("10.20.0.0/16", one address "10.0.0.5/32")
	// for URLs with a literal address. A credential whose webhook host is
	// not allowed is not Ready and gets no events. Empty: in-cluster
	// Service names only (".svc" and ".svc.cluster.local").
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=254
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) || (!isIP(self) && self.matches('^[.]?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?[.])*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'))",message="events.allowedTargets entries must be host names (hooks.example.com), .suffixes (.shop.svc) or CIDRs (10.20.0.0/16)",messageExpression="isIP(self) ? 'events.allowedTargets entries name addresses as CIDRs: write ' + self + (self.contains(':') ? '/128' : '/32') : self.startsWith('*') ? 'events.allowedTargets entries are not patterns: write .' + self.substring(self.startsWith('*.') ? 2 : 1) + ' for every name under ' + self.substring(self.startsWith('*.') ? 2 : 1) : self.contains('://') || self.contains('/') ? 'events.allowedTargets entries are hosts, not URLs or paths: write the host name, e.g. hooks.example.com, or a CIDR such as 10.20.0.0/16' : self.endsWith('.') ? 'events.allowedTargets entries are written without a trailing dot, e.g. hooks.example.com' : self.matches('[A-Z]') ? 'events.allowedTargets entries must be lowercase, e.g. hooks.example.com' : 'events.allowedTargets entries must be host names (hooks.example.com), .suffixes (.shop.svc) or CIDRs (10.20.0.0/16)'"
	AllowedTargets []string `json:"allowedTargets,omitempty"`
}

// ExternalServiceSpec is the pool's Service for clients outside the cluster.
// +kubebuilder:validation:XValidation:rule="!has(self.loadBalancerSourceRanges) || size(self.loadBalancerSourceRanges) == 0 || !has(self.type) || self.type == 'LoadBalancer'",fieldPath=".loadBalancerSourceRanges",message="service.loadBalancerSourceRanges only apply to type LoadBalancer: a NodePort Service would be open to every client; use type LoadBalancer or remove the ranges"
type ExternalServiceSpec struct {
	// type of the Service: LoadBalancer or NodePort.
	// +optional
	// +kubebuilder:default=LoadBalancer
	// +kubebuilder:validation:Enum=LoadBalancer;NodePort
	Type corev1.ServiceType `json:"type,omitempty"`

	// annotations for the Service, e.g. a cloud load balancer's settings.
	// Keys are Kubernetes annotation keys: an optional DNS prefix and a
	// name, such as "service.beta.kubernetes.io/aws-load-balancer-type".
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && (!k.contains('/') || size(k.split('/')[0]) <= 253))",message="service.annotations keys must be annotation keys: an optional DNS prefix and '/' then a name of at most 63 letters, digits, '-', '_' or '.', e.g. service.beta.kubernetes.io/aws-load-balancer-type"
	Annotations map[string]string `json:"annotations,omitempty"`

	// externalTrafficPolicy: Local keeps the client's source address (and
	// sends traffic only to nodes running a relay); Cluster spreads it.
	// +optional
	// +kubebuilder:default=Local
	// +kubebuilder:validation:Enum=Local;Cluster
	ExternalTrafficPolicy corev1.ServiceExternalTrafficPolicy `json:"externalTrafficPolicy,omitempty"`

	// loadBalancerSourceRanges limits which client networks may connect,
	// as CIDRs such as "198.51.100.0/24" (type LoadBalancer only).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="service.loadBalancerSourceRanges entries must be CIDRs such as 198.51.100.0/24 (a single address is 198.51.100.7/32)"
	LoadBalancerSourceRanges []string `json:"loadBalancerSourceRanges,omitempty"`
}

// ProxyProtocolSpec says where PROXY protocol headers are accepted from.
type ProxyProtocolSpec struct {
	// trustedCIDRs are the load balancer addresses whose connections must
	// carry a PROXY header, as CIDRs such as "10.0.0.0/16". A header from
	// any other address is refused. Trusting every address (0.0.0.0/0,
	// ::/0) is refused: any client could then forge its source address.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) && cidr(self).prefixLength() > 0",message="proxyProtocol.trustedCIDRs entries must be CIDRs of the load balancers, such as 10.0.0.0/16",messageExpression="isCIDR(self) ? 'proxyProtocol.trustedCIDRs entry ' + self + ' trusts every address: any client could forge its source address in a PROXY header; list the load balancers, e.g. 10.0.0.0/16' : 'proxyProtocol.trustedCIDRs entries must be CIDRs of the load balancers, such as 10.0.0.0/16 (a single address is 10.0.0.7/32)'"
	TrustedCIDRs []string `json:"trustedCIDRs"`
}

// NetworkPolicySpec shapes the relay pods' NetworkPolicy.
type NetworkPolicySpec struct {
	// enabled writes a NetworkPolicy admitting SMTP only from namespaces
	// allowedNamespaces admits, metrics only from metricsFrom, and the
	// pool's own pods on the internal peer port.
	// +optional
	// +kubebuilder:default=true
	Enabled *bool `json:"enabled,omitempty"`

	// metricsFrom selects who may scrape the relays' HTTP port (metrics,
	// health). Omitted: any pod in a namespace labelled
	// kubernetes.io/metadata.name=monitoring.
	// +optional
	MetricsFrom *PeerSelector `json:"metricsFrom,omitempty"`
}

// PeerSelector selects pods by namespace and pod labels, as a NetworkPolicy
// peer does.
type PeerSelector struct {
	// namespaceSelector selects namespaces; empty selects all.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="networkPolicy.metricsFrom.namespaceSelector.matchExpressions operators must be In, NotIn, Exists or DoesNotExist (case matters)"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['In', 'NotIn']) || (has(e.values) && size(e.values) > 0))",message="networkPolicy.metricsFrom.namespaceSelector.matchExpressions with In or NotIn need at least one value"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['Exists', 'DoesNotExist']) || !has(e.values) || size(e.values) == 0)",message="networkPolicy.metricsFrom.namespaceSelector.matchExpressions with Exists or DoesNotExist take no values"
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// podSelector selects pods in those namespaces; empty selects all.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="networkPolicy.metricsFrom.podSelector.matchExpressions operators must be In, NotIn, Exists or DoesNotExist (case matters)"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['In', 'NotIn']) || (has(e.values) && size(e.values) > 0))",message="networkPolicy.metricsFrom.podSelector.matchExpressions with In or NotIn need at least one value"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['Exists', 'DoesNotExist']) || !has(e.values) || size(e.values) == 0)",message="networkPolicy.metricsFrom.podSelector.matchExpressions with Exists or DoesNotExist take no values"
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
}

// StorageSpec is the queue volume of each relay pod.
// +kubebuilder:validation:XValidation:rule="(has(self.storageClassName) && size(self.storageClassName) > 0) == (has(oldSelf.storageClassName) && size(oldSelf.storageClassName) > 0) && (!has(self.storageClassName) || size(self.storageClassName) == 0 || self.storageClassName == oldSelf.storageClassName)",fieldPath=".storageClassName",message="storage.storageClassName cannot be changed: a StatefulSet cannot move its queue volumes to another StorageClass; create a new RelayPool instead",messageExpression="'storage.storageClassName cannot be changed (from ' + (has(oldSelf.storageClassName) && size(oldSelf.storageClassName) > 0 ? oldSelf.storageClassName : 'the default StorageClass') + ' to ' + (has(self.storageClassName) && size(self.storageClassName) > 0 ? self.storageClassName : 'the default StorageClass') + '): a StatefulSet cannot move its queue volumes to another StorageClass; create a new RelayPool instead'"
type StorageSpec struct {
	// size of each pod's queue volume, as a Kubernetes quantity string such
	// as "5Gi" (at least 512Mi). The relay keeps 256Mi free as a reserve
	// and stops accepting mail (4xx, never losing any) when it is nearly
	// full. It can grow but not shrink.
	// +optional
	// +kubebuilder:default="5Gi"
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="isQuantity(self) && !quantity(self).isLessThan(quantity('512Mi'))",message="storage.size must be a Kubernetes quantity of at least 512Mi, such as 5Gi",messageExpression="isQuantity(self) ? 'storage.size (' + self + ') must be at least 512Mi: the relay keeps 256Mi free as a reserve and refuses mail below it, so a smaller volume could hold almost no mail' : 'storage.size must be a Kubernetes quantity such as 5Gi or 512Mi'"
	// +kubebuilder:validation:XValidation:rule="!isQuantity(self) || !isQuantity(oldSelf) || !quantity(self).isLessThan(quantity(oldSelf))",message="storage.size cannot shrink: a StatefulSet cannot shrink its queue volumes",messageExpression="'storage.size cannot shrink (from ' + oldSelf + ' to ' + self + '): a StatefulSet cannot shrink its queue volumes; keep ' + oldSelf + ' or more'"
	Size string `json:"size,omitempty"`

	// storageClassName of the queue volumes, a StorageClass name such as
	// "fast-ssd". Empty: the cluster's default StorageClass. It cannot be
	// changed once the pool exists.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="size(self) == 0 || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="storage.storageClassName must be a StorageClass name: lowercase letters, digits, '-' and '.', e.g. fast-ssd; empty means the default StorageClass"
	StorageClassName string `json:"storageClassName,omitempty"`

	// whenDeleted says what happens to the queue volumes when the pool is
	// deleted: Retain (default; mail in them is kept) or Delete. Volumes of
	// pods removed by scaling down are deleted only after their queue was
	// handed to the remaining pods.
	// +optional
	// +kubebuilder:default=Retain
	// +kubebuilder:validation:Enum=Retain;Delete
	WhenDeleted VolumeRetention `json:"whenDeleted,omitempty"`
}

// VolumeRetention says whether a queue volume outlives its pool.
type VolumeRetention string

const (
	VolumeRetain VolumeRetention = "Retain"
	VolumeDelete VolumeRetention = "Delete"
)

// AllowedNamespaces selects namespaces, in the style of Gateway API's
// allowedRoutes.
// +kubebuilder:validation:XValidation:rule="!has(self.from) || self.from != 'Selector' || (has(self.selector) && ((has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0) || (has(self.selector.matchExpressions) && size(self.selector.matchExpressions) > 0)))",fieldPath=".selector",reason="FieldValueRequired",message="allowedNamespaces.selector is required when from is Selector, e.g. {matchLabels: {mail: enabled}}; an empty selector would admit every namespace (say from: All for that)"
// +kubebuilder:validation:XValidation:rule="(has(self.from) && self.from == 'Selector') || !has(self.selector) || ((!has(self.selector.matchLabels) || size(self.selector.matchLabels) == 0) && (!has(self.selector.matchExpressions) || size(self.selector.matchExpressions) == 0))",fieldPath=".selector",reason="FieldValueForbidden",message="allowedNamespaces.selector is only used when from is Selector: set from: Selector, or remove selector",messageExpression="'allowedNamespaces.selector is only used when from is Selector, but from is ' + (has(self.from) ? self.from : 'Same') + (!has(self.from) || self.from == 'Same' ? ' (the default)' : \"\") + ': set from: Selector, or remove selector'"
type AllowedNamespaces struct {
	// from is Same (only the pool's namespace), All, or Selector
	// (namespaces whose labels match selector).
	// +optional
	// +kubebuilder:default=Same
	From NamespacesFrom `json:"from,omitempty"`

	// selector of namespaces, when from is Selector, such as
	// {matchLabels: {mail: enabled}}.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="allowedNamespaces.selector.matchExpressions operators must be In, NotIn, Exists or DoesNotExist (case matters)"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['In', 'NotIn']) || (has(e.values) && size(e.values) > 0))",message="allowedNamespaces.selector.matchExpressions with In or NotIn need at least one value"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, !(e.operator in ['Exists', 'DoesNotExist']) || !has(e.values) || size(e.values) == 0)",message="allowedNamespaces.selector.matchExpressions with Exists or DoesNotExist take no values"
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// SubmissionSpec configures the submission listeners.
// +kubebuilder:validation:XValidation:rule="!has(self.starttlsPort) || !has(self.implicitTLSPort) || self.starttlsPort != self.implicitTLSPort || self.implicitTLSPort == 465",fieldPath=".implicitTLSPort",message="submission.implicitTLSPort must differ from submission.starttlsPort (587 unless set): the two listeners need different ports",messageExpression="self.starttlsPort == 587 ? 'submission.implicitTLSPort (587) must differ from submission.starttlsPort (587, the default): the two listeners need different ports' : 'submission.implicitTLSPort must differ from submission.starttlsPort: both are set to the same port, and the two listeners need different ports'"
// +kubebuilder:validation:XValidation:rule="!has(self.starttlsPort) || !has(self.implicitTLSPort) || self.starttlsPort != self.implicitTLSPort || self.implicitTLSPort != 465",fieldPath=".starttlsPort",message="submission.starttlsPort (465) must differ from submission.implicitTLSPort (465, the default): the two listeners need different ports"
type SubmissionSpec struct {
	// starttlsPort is the submission port (RFC 6409), an integer such as
	// 587. Clients must issue STARTTLS before AUTH. The relay's own ports
	// 8080 (HTTP), 8081 (admin) and 8443 (peer) cannot be used.
	// +optional
	// +kubebuilder:default=587
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 65535",message="submission.starttlsPort must be a port between 1 and 65535"
	// +kubebuilder:validation:XValidation:rule="!(self in [8080, 8081, 8443])",message="submission.starttlsPort cannot be 8080, 8081 or 8443: the relay listens there itself (HTTP for metrics and health, the admin API, the pool's internal peer path)"
	StartTLSPort int32 `json:"starttlsPort,omitempty"`

	// implicitTLSPort is the submissions port (RFC 8314), an integer such
	// as 465: TLS from the first byte. The relay's own ports 8080, 8081 and
	// 8443 cannot be used.
	// +optional
	// +kubebuilder:default=465
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 65535",message="submission.implicitTLSPort must be a port between 1 and 65535"
	// +kubebuilder:validation:XValidation:rule="!(self in [8080, 8081, 8443])",message="submission.implicitTLSPort cannot be 8080, 8081 or 8443: the relay listens there itself (HTTP for metrics and health, the admin API, the pool's internal peer path)"
	ImplicitTLSPort int32 `json:"implicitTLSPort,omitempty"`

	// tls selects the server certificate.
	// +optional
	TLS SubmissionTLS `json:"tls,omitempty"`

	// maxMessageSize is the largest message accepted, as a quantity string
	// between "1Ki" and "1Gi" such as "25Mi" (a plain byte count must be
	// quoted: "26214400"). Larger messages are refused with 552 5.3.4.
	// +optional
	// +kubebuilder:default="25Mi"
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="isQuantity(self) && !quantity(self).isLessThan(quantity('1Ki')) && !quantity(self).isGreaterThan(quantity('1Gi'))",message="submission.maxMessageSize must be a quantity between 1Ki and 1Gi (both included), such as 25Mi"
	MaxMessageSize string `json:"maxMessageSize,omitempty"`

	// maxRecipients is the most recipients one message may have, an
	// integer from 1 to 10000.
	// +optional
	// +kubebuilder:default=100
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 10000",message="submission.maxRecipients must be between 1 and 10000"
	MaxRecipients int32 `json:"maxRecipients,omitempty"`
}

// SubmissionTLS selects the submission certificate.
type SubmissionTLS struct {
	// secretName of a kubernetes.io/tls Secret in the pool's namespace
	// (for example one cert-manager issues for the hostname). Empty: the
	// operator issues a self-signed certificate.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == '' || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="submission.tls.secretName must be a Secret name: lowercase letters, digits, '-' and '.'"
	SecretName string `json:"secretName,omitempty"`
}

// DeliverySpec configures outbound delivery.
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'Smarthost' || (has(self.smarthost) && has(self.smarthost.host) && size(self.smarthost.host) > 0)",fieldPath=".smarthost.host",reason="FieldValueRequired",message="delivery.smarthost.host is required when delivery.mode is Smarthost, e.g. email-smtp.eu-west-1.amazonaws.com"
// +kubebuilder:validation:XValidation:rule="(has(self.mode) && self.mode == 'Smarthost') || !has(self.smarthost) || ((!has(self.smarthost.host) || size(self.smarthost.host) == 0) && !has(self.smarthost.credentialsSecretRef))",fieldPath=".mode",message="delivery.smarthost is only used when delivery.mode is Smarthost: set mode: Smarthost, or remove smarthost",messageExpression="'delivery.smarthost' + (has(self.smarthost.host) && size(self.smarthost.host) > 0 ? ' (' + self.smarthost.host + ')' : \"\") + ' is only used when delivery.mode is Smarthost, but mode is ' + (has(self.mode) ? self.mode : 'Direct') + (!has(self.mode) || self.mode == 'Direct' ? ' (the default)' : \"\") + ': set mode: Smarthost, or remove smarthost'"
type DeliverySpec struct {
	// mode is Direct (look up each recipient domain's MX) or Smarthost
	// (send everything through delivery.smarthost, e.g. where port 25 is
	// blocked).
	// +optional
	// +kubebuilder:default=Direct
	Mode DeliveryMode `json:"mode,omitempty"`

	// smarthost is the upstream server used in Smarthost mode.
	// +optional
	Smarthost *SmarthostSpec `json:"smarthost,omitempty"`

	// retry configures how long and how often delivery is retried.
	// +optional
	// +kubebuilder:default={}
	Retry RetrySpec `json:"retry,omitempty"`

	// maxConnectionsPerDomain caps concurrent connections from one relay
	// pod to one destination domain, an integer from 1 to 1000.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 1000",message="delivery.maxConnectionsPerDomain must be between 1 and 1000"
	MaxConnectionsPerDomain int32 `json:"maxConnectionsPerDomain,omitempty"`

	// resolvers for MX lookups, as "ip", "ip:port" or "[ipv6]:port", such
	// as "10.0.0.10:53". Empty: the pod's resolv.conf.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isIP(self) || (self.matches('^[0-9.]+:[0-9]{1,5}$') && isIP(self.substring(0, self.lastIndexOf(':'))) && int(self.substring(self.lastIndexOf(':') + 1)) >= 1 && int(self.substring(self.lastIndexOf(':') + 1)) <= 65535) || (self.matches('^[[][0-9a-fA-F:.]+[]]:[0-9]{1,5}$') && isIP(self.substring(1, self.lastIndexOf(']'))) && int(self.substring(self.lastIndexOf(':') + 1)) >= 1 && int(self.substring(self.lastIndexOf(':') + 1)) <= 65535)",message="delivery.resolvers entries must be IP addresses, optionally with a port from 1 to 65535: 10.0.0.10, 10.0.0.10:53 or [fd00::10]:53"
	Resolvers []string `json:"resolvers,omitempty"`
}

// SmarthostSpec is an upstream SMTP server.
// +kubebuilder:validation:XValidation:rule="!has(self.tls) || self.tls != 'Opportunistic' || !has(self.credentialsSecretRef)",fieldPath=".tls",message="delivery.smarthost.tls cannot be Opportunistic when credentialsSecretRef is set: credentials are never sent in cleartext"
type SmarthostSpec struct {
	// host name or IP address of the smarthost, such as
	// "email-smtp.eu-west-1.amazonaws.com" (an internationalized name in
	// its xn-- form). Required in Smarthost mode.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == '' || isIP(self) || self.matches('^([a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?[.])*[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$')",message="delivery.smarthost.host must be a host name or an IP address, without a port (set port separately)",messageExpression="self.matches('[[:^ascii:]]') ? 'delivery.smarthost.host must be ASCII: write an internationalized name in its xn-- (punycode) form' : 'delivery.smarthost.host must be a host name or an IP address, without a port (set port separately)'"
	Host string `json:"host,omitempty"`

	// port of the smarthost, an integer such as 587.
	// +optional
	// +kubebuilder:default=587
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 65535",message="delivery.smarthost.port must be a port between 1 and 65535"
	Port int32 `json:"port,omitempty"`

	// credentialsSecretRef names a Secret in the pool's namespace with keys
	// "username" and "password" for AUTH at the smarthost.
	// +optional
	CredentialsSecretRef *SecretReference `json:"credentialsSecretRef,omitempty"`

	// tls is Required (STARTTLS with a verified certificate), Implicit
	// (TLS from the first byte, usually port 465) or Opportunistic.
	// +optional
	// +kubebuilder:default=Required
	TLS SmarthostTLS `json:"tls,omitempty"`
}

// SecretReference names a Secret in the referring object's namespace.
type SecretReference struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="secret names must be lowercase letters, digits, '-' and '.'"
	Name string `json:"name"`
}

// RetrySpec configures retries of temporarily failed deliveries.
// +kubebuilder:validation:XValidation:rule="!has(self.maxAge) || !has(self.schedule) || size(self.schedule) == 0 || !self.maxAge.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || !self.schedule[0].matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self.maxAge) > duration(self.schedule[0])",fieldPath=".maxAge",message="delivery.retry.maxAge must be longer than the first step of delivery.retry.schedule: mail would expire before its first retry",messageExpression="'delivery.retry.maxAge (' + self.maxAge + (duration(self.maxAge) == duration('120h') ? ', the default' : \"\") + ') must be longer than the first retry step (' + self.schedule[0] + (self.schedule == ['1m', '5m', '15m', '30m', '1h'] ? ' of the default schedule' : \"\") + '): mail would expire before its first retry'"
// +kubebuilder:validation:XValidation:rule="!has(self.maxAge) || !has(self.delayWarningAfter) || !self.maxAge.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || !self.delayWarningAfter.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || (has(self.schedule) && size(self.schedule) > 0 && self.schedule[0].matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self.maxAge) <= duration(self.schedule[0])) || duration(self.delayWarningAfter) == duration('0s') || duration(self.delayWarningAfter) < duration(self.maxAge) || duration(self.delayWarningAfter) != duration('4h')",fieldPath=".maxAge",message="delivery.retry.maxAge must be longer than delivery.retry.delayWarningAfter (4h, the default): set delayWarningAfter shorter, or 0 to disable delay reports",messageExpression="'delivery.retry.maxAge (' + self.maxAge + ') must be longer than delayWarningAfter (4h, the default), or the delay report would never be sent: set delayWarningAfter shorter, or \"0\" to disable delay reports'"
// +kubebuilder:validation:XValidation:rule="!has(self.maxAge) || !has(self.delayWarningAfter) || !self.maxAge.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || !self.delayWarningAfter.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || (has(self.schedule) && size(self.schedule) > 0 && self.schedule[0].matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self.maxAge) <= duration(self.schedule[0])) || duration(self.delayWarningAfter) == duration('0s') || duration(self.delayWarningAfter) < duration(self.maxAge) || duration(self.delayWarningAfter) == duration('4h')",fieldPath=".delayWarningAfter",message="delivery.retry.delayWarningAfter must be shorter than delivery.retry.maxAge, or 0 to disable delay reports",messageExpression="'delivery.retry.delayWarningAfter (' + self.delayWarningAfter + ') must be shorter than maxAge (' + self.maxAge + (duration(self.maxAge) == duration('120h') ? ', the default' : \"\") + '), or the delay report would never be sent; \"0\" disables delay reports'"
type RetrySpec struct {
	// schedule is the wait before each retry, as Go duration strings such
	// as ["1m", "5m", "1h"] (units h, m, s; no d); the last step repeats.
	// Each wait is jittered so that retries spread out.
	// +optional
	// +kubebuilder:default={"1m","5m","15m","30m","1h"}
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="delivery.retry.schedule needs at least one step, e.g. [1m, 5m, 15m, 30m, 1h]"
	Schedule []RetryStep `json:"schedule,omitempty"`

	// maxAge is how long delivery is retried before the sender gets a
	// failure report (DSN), as a Go duration string such as "120h" (5 days;
	// units h, m, s; no d). It must be longer than the first retry step.
	// +optional
	// +kubebuilder:default="120h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="delivery.retry.maxAge must be a positive duration such as 120h"
	MaxAge *metav1.Duration `json:"maxAge,omitempty"`

	// delayWarningAfter sends the sender one "delayed" report (DSN) when a
	// message is still undelivered after this long, as a Go duration string
	// such as "4h"; "0" (quoted) disables it. It must be shorter than
	// maxAge.
	// +optional
	// +kubebuilder:default="4h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self == '0' || self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')",message="delivery.retry.delayWarningAfter must be a duration such as 4h, or 0 to disable"
	DelayWarningAfter *metav1.Duration `json:"delayWarningAfter,omitempty"`
}

// RetryStep is one wait of a retry schedule, a Go duration string such as
// "5m" (units h, m, s; no d).
// +kubebuilder:validation:Type=string
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="delivery.retry.schedule entries must be positive durations such as 5m or 1h (units: h, m, s)"
type RetryStep struct {
	metav1.Duration `json:",inline"`
}

// Condition types of a RelayPool, besides Ready.
const (
	// RelayPoolConfigApplied: every relay pod runs the current relay
	// configuration.
	RelayPoolConfigApplied = "ConfigApplied"
	// RelayPoolBouncesSigned: the DSNs the relays send (From:
	// MAILER-DAEMON@<hostname>) are DKIM-signed, because a SendingDomain of
	// the pool covers the hostname. False is a warning: bounces then pass
	// DMARC only through SPF for the hostname. It does not affect Ready.
	RelayPoolBouncesSigned = "BouncesSigned"
)

// Condition types of every mailroom kind for kstatus-aware tools (Flux,
// Argo CD, kubectl wait).
const (
	// ConditionReconciling: the operator is still working towards the
	// spec (abnormal-true: absent when done).
	ConditionReconciling = "Reconciling"
	// ConditionStalled: progress needs a change from the user
	// (abnormal-true: absent when fine).
	ConditionStalled = "Stalled"
)

// RelayPoolStatus is the observed state of a RelayPool.
type RelayPoolStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// replicas is the number of relay pods.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// readyReplicas is the number of relay pods accepting mail.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// endpoint is the host name applications use as SMTP host.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// selector is the label selector of the relay pods (for the scale
	// subresource).
	// +optional
	Selector string `json:"selector,omitempty"`

	// configRevision is the revision of the relay configuration the
	// operator rendered last. It grows by one with every change.
	// +optional
	ConfigRevision int64 `json:"configRevision,omitempty"`

	// appliedRevision is the oldest revision any ready relay pod runs:
	// every change up to it is in effect on every ready pod.
	// +optional
	AppliedRevision int64 `json:"appliedRevision,omitempty"`

	// domains counts the SendingDomains the rendered configuration holds.
	// +optional
	Domains int32 `json:"domains,omitempty"`
	// credentials counts the SMTPCredentials the rendered configuration
	// holds.
	// +optional
	Credentials int32 `json:"credentials,omitempty"`

	// caConfigMap names the ConfigMap holding ca.crt, the CA that signed the
	// operator-issued serving certificate (empty with a user's TLS Secret).
	// +optional
	CAConfigMap string `json:"caConfigMap,omitempty"`

	// conditions: ConfigApplied and Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// RelayPool is a fleet of SMTP relay pods (a StatefulSet with one queue
// volume per pod) behind a Service. Applications use its endpoint as SMTP
// host with an SMTPCredential.
//
// The name is a DNS label of at most 40 characters starting with a letter:
// it names the pool's Service (<name>-relay), StatefulSet and pods.
//
// +kubebuilder:object:root=true
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 40 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name of a RelayPool must be a DNS label of at most 40 characters starting with a letter (lowercase letters, digits and '-'), e.g. transactional: it names the pool's Service <name>-relay, StatefulSet and pods"
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=rpool,categories=mailroom
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Available",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Revision",type=integer,JSONPath=`.status.configRevision`,description="configuration revision rendered"
// +kubebuilder:printcolumn:name="Applied",type=integer,JSONPath=`.status.appliedRevision`,description="oldest revision a ready relay runs"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RelayPool struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state.
	// +required
	Spec RelayPoolSpec `json:"spec"`

	// status is the observed state.
	// +optional
	Status RelayPoolStatus `json:"status,omitempty"`
}

// RelayPoolList is a list of RelayPools.
// +kubebuilder:object:root=true
type RelayPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RelayPool `json:"items"`
}

func init() {
	SchemeBuilder.Register(&RelayPool{}, &RelayPoolList{})
}
