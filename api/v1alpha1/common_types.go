package v1alpha1

// PoolReference names the RelayPool an object attaches to.
type PoolReference struct {
	// name of the RelayPool: a DNS label of at most 40 characters starting
	// with a letter, such as "transactional".
	// +required
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="poolRef.name must be the name of a RelayPool (lowercase letters, digits and '-', starting with a letter), e.g. transactional",messageExpression="size(self) == 0 ? 'poolRef.name is required: the name of the RelayPool, e.g. transactional' : 'poolRef.name must be the name of a RelayPool (lowercase letters, digits and -, starting with a letter), e.g. transactional'"
	Name string `json:"name"`

	// namespace of the RelayPool. Empty means the namespace of this object.
	// The pool must allow this object's namespace (RelayPool
	// spec.allowedNamespaces).
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="size(self) == 0 || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="poolRef.namespace must be a namespace name (lowercase letters, digits and '-'), or empty for this object's namespace"
	Namespace string `json:"namespace,omitempty"`
}

// Condition types shared by every mailroom kind. Each status also carries
// kind-specific conditions documented on its type.
const (
	// ConditionReady is true when the object is usable: for a SendingDomain,
	// mail for it is signed and its DNS records resolve; for an
	// SMTPCredential, its Secret exists and the relay accepts the login; for
	// a RelayPool, its relays accept mail.
	ConditionReady = "Ready"
)

// Annotations understood by the operator.
const (
	// AnnotationRotateDKIM asks for a new DKIM key: set it to any value that
	// differs from the one last acted on (for example a timestamp). The
	// operator never replaces a key for any other reason.
	AnnotationRotateDKIM = "mailroom.io/rotate-dkim"

	// AnnotationRotatePassword asks for a new SMTPCredential password and
	// HTTP API key: set it to any value that differs from the one last
	// acted on. The previous password and key keep working for
	// spec.passwordRotation.gracePeriod.
	AnnotationRotatePassword = "mailroom.io/rotate-password"
)
