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
type RelayPoolSpec struct {
	// replicas is the number of relay pods. Each pod owns its own queue
	// volume. 0 stops the pool (queued mail stays on the volumes).
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:XValidation:rule="self >= 0",message="replicas must be 0 or more"
	Replicas *int32 `json:"replicas,omitempty"`

	// hostname the relays use in EHLO, Received headers, DSNs and as the
	// TLS server name, such as "relay.example.com". It should resolve to the
	// pool's sendingIPs and have matching reverse DNS.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?[.])+[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')",message="hostname must be a lowercase fully qualified DNS name without a trailing dot, e.g. relay.example.com"
	Hostname string `json:"hostname"`

	// image of the relay. Empty: the relay image matching the operator's
	// version (recommended).
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`

	// resources of each relay container.
	// +optional
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

	// sendingIPs are the public addresses the pool's mail leaves from. They
	// are published in the SPF record of every domain on this pool.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.all(ip, isIP(ip) || isCIDR(ip))",message="sendingIPs entries must be IPv4 or IPv6 addresses (or CIDR ranges), e.g. 203.0.113.10"
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
}

// ExternalServiceSpec is the pool's Service for clients outside the cluster.
type ExternalServiceSpec struct {
	// type of the Service: LoadBalancer or NodePort.
	// +optional
	// +kubebuilder:default=LoadBalancer
	// +kubebuilder:validation:Enum=LoadBalancer;NodePort
	Type corev1.ServiceType `json:"type,omitempty"`

	// annotations for the Service, e.g. a cloud load balancer's settings.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// externalTrafficPolicy: Local keeps the client's source address (and
	// sends traffic only to nodes running a relay); Cluster spreads it.
	// +optional
	// +kubebuilder:default=Local
	// +kubebuilder:validation:Enum=Local;Cluster
	ExternalTrafficPolicy corev1.ServiceExternalTrafficPolicy `json:"externalTrafficPolicy,omitempty"`

	// loadBalancerSourceRanges limits which client networks may connect.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	LoadBalancerSourceRanges []string `json:"loadBalancerSourceRanges,omitempty"`
}

// ProxyProtocolSpec says where PROXY protocol headers are accepted from.
type ProxyProtocolSpec struct {
	// trustedCIDRs are the load balancer addresses whose connections must
	// carry a PROXY header. A header from any other address is refused.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
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
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// podSelector selects pods in those namespaces; empty selects all.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
}

// StorageSpec is the queue volume of each relay pod.
type StorageSpec struct {
	// size of each pod's queue volume, as a Kubernetes quantity such as
	// "5Gi". The relay stops accepting mail (4xx, never losing any) when it
	// is nearly full.
	// +optional
	// +kubebuilder:default="5Gi"
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",message="storage.size must be a positive Kubernetes quantity such as 5Gi or 500Mi"
	Size string `json:"size,omitempty"`

	// storageClassName of the queue volumes. Empty: the cluster's default
	// StorageClass.
	// +optional
	// +kubebuilder:validation:MaxLength=253
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
// +kubebuilder:validation:XValidation:rule="!has(self.from) || self.from != 'Selector' || has(self.selector)",message="allowedNamespaces.selector is required when from is Selector"
type AllowedNamespaces struct {
	// from is Same (only the pool's namespace), All, or Selector
	// (namespaces whose labels match selector).
	// +optional
	// +kubebuilder:default=Same
	From NamespacesFrom `json:"from,omitempty"`

	// selector of namespaces, when from is Selector.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// SubmissionSpec configures the submission listeners.
// +kubebuilder:validation:XValidation:rule="!has(self.starttlsPort) || !has(self.implicitTLSPort) || self.starttlsPort != self.implicitTLSPort",message="submission.starttlsPort and submission.implicitTLSPort must be different ports"
type SubmissionSpec struct {
	// starttlsPort is the submission port (RFC 6409). Clients must issue
	// STARTTLS before AUTH.
	// +optional
	// +kubebuilder:default=587
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 65535",message="submission.starttlsPort must be a port between 1 and 65535"
	StartTLSPort int32 `json:"starttlsPort,omitempty"`

	// implicitTLSPort is the submissions port (RFC 8314): TLS from the
	// first byte.
	// +optional
	// +kubebuilder:default=465
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 65535",message="submission.implicitTLSPort must be a port between 1 and 65535"
	ImplicitTLSPort int32 `json:"implicitTLSPort,omitempty"`

	// tls selects the server certificate.
	// +optional
	TLS SubmissionTLS `json:"tls,omitempty"`

	// maxMessageSize is the largest message accepted, as a quantity such
	// as "25Mi". Larger ones are refused with 552 5.3.4.
	// +optional
	// +kubebuilder:default="25Mi"
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="isQuantity(self) && quantity(self).isGreaterThan(quantity('1Ki')) && quantity(self).isLessThan(quantity('1Gi'))",message="submission.maxMessageSize must be a quantity between 1Ki and 1Gi, such as 25Mi"
	MaxMessageSize string `json:"maxMessageSize,omitempty"`

	// maxRecipients is the most recipients one message may have.
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
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'Smarthost' || (has(self.smarthost) && has(self.smarthost.host) && size(self.smarthost.host) > 0)",message="delivery.smarthost.host is required when delivery.mode is Smarthost"
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
	// pod to one destination domain.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 1000",message="delivery.maxConnectionsPerDomain must be between 1 and 1000"
	MaxConnectionsPerDomain int32 `json:"maxConnectionsPerDomain,omitempty"`

	// resolvers for MX lookups, as "ip" or "ip:port". Empty: the pod's
	// resolv.conf.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.all(r, isIP(r) || r.matches('^[0-9]{1,3}([.][0-9]{1,3}){3}:[0-9]{1,5}$') || (r.startsWith('[') && r.contains(']:') && isIP(r.substring(1, r.indexOf(']'))) && r.substring(r.indexOf(']:') + 2).matches('^[0-9]{1,5}$')))",message="delivery.resolvers entries must be IP addresses, optionally with a port: 10.0.0.10, 10.0.0.10:53 or [fd00::10]:53"
	Resolvers []string `json:"resolvers,omitempty"`
}

// SmarthostSpec is an upstream SMTP server.
// +kubebuilder:validation:XValidation:rule="!has(self.tls) || self.tls != 'Opportunistic' || !has(self.credentialsSecretRef)",message="delivery.smarthost.tls cannot be Opportunistic when credentialsSecretRef is set: credentials are never sent in cleartext"
type SmarthostSpec struct {
	// host name or IP address of the smarthost, such as
	// "email-smtp.eu-west-1.amazonaws.com".
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == '' || isIP(self) || self.matches('^([a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?[.])*[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$')",message="delivery.smarthost.host must be a host name or an IP address, without a port (set port separately)"
	Host string `json:"host,omitempty"`

	// port of the smarthost.
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
type RetrySpec struct {
	// schedule is the wait before each retry, as Go durations; the last
	// step repeats. Each wait is jittered so that retries spread out.
	// +optional
	// +kubebuilder:default={"1m","5m","15m","30m","1h"}
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="delivery.retry.schedule needs at least one step, e.g. [1m, 5m, 15m, 30m, 1h]"
	Schedule []RetryStep `json:"schedule,omitempty"`

	// maxAge is how long delivery is retried before the sender gets a
	// failure report (DSN), such as "120h".
	// +optional
	// +kubebuilder:default="120h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="delivery.retry.maxAge must be a positive duration such as 120h"
	MaxAge *metav1.Duration `json:"maxAge,omitempty"`

	// delayWarningAfter sends the sender one "delayed" report (DSN) when a
	// message is still undelivered after this long. "0" disables it.
	// +optional
	// +kubebuilder:default="4h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self == '0' || self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')",message="delivery.retry.delayWarningAfter must be a duration such as 4h, or 0 to disable"
	DelayWarningAfter *metav1.Duration `json:"delayWarningAfter,omitempty"`
}

// RetryStep is one wait of a retry schedule, a Go duration such as "5m".
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

	// domains and credentials count what the rendered configuration holds.
	// +optional
	Domains int32 `json:"domains,omitempty"`
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
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=rpool,categories=mailroom
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Available",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
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
