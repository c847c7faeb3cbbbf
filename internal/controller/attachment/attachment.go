// Package attachment decides which SendingDomains and SMTPCredentials a
// RelayPool admits: the pool's allowedNamespaces (Gateway API
// allowedRoutes semantics), one owner per domain name (the oldest claim),
// and senders covered by the pool's domains. The RelayPool and
// SMTPCredential controllers share it, so the relay configuration and the
// credential's status never disagree about who is in.
package attachment

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/relay/config"
)

// IndexPool indexes SendingDomains and SMTPCredentials by "<namespace>/<name>"
// of the pool they reference.
const IndexPool = "mailroom.io/pool"

// PoolKey is the index value of a reference from an object in namespace ns.
func PoolKey(ns string, ref v1alpha1.PoolReference) string {
	if ref.Namespace != "" {
		ns = ref.Namespace
	}
	return ns + "/" + ref.Name
}

// SetupIndexes registers IndexPool for both kinds. Call it once per
// manager.
func SetupIndexes(ctx context.Context, idx client.FieldIndexer) error {
	if err := idx.IndexField(ctx, &v1alpha1.SendingDomain{}, IndexPool, func(o client.Object) []string {
		sd := o.(*v1alpha1.SendingDomain)
		return []string{PoolKey(sd.Namespace, sd.Spec.PoolRef)}
	}); err != nil {
		return err
	}
	return idx.IndexField(ctx, &v1alpha1.SMTPCredential{}, IndexPool, func(o client.Object) []string {
		c := o.(*v1alpha1.SMTPCredential)
		return []string{PoolKey(c.Namespace, c.Spec.PoolRef)}
	})
}

// Allows applies the pool's allowedNamespaces to a namespace with the given
// labels. An unparsable selector admits nothing.
func Allows(pool *v1alpha1.RelayPool, ns string, nsLabels map[string]string) bool {
	switch a := pool.Spec.AllowedNamespaces; a.From {
	case v1alpha1.NamespacesFromAll:
		return true
	case v1alpha1.NamespacesFromSelector:
		sel, err := metav1.LabelSelectorAsSelector(a.Selector)
		if err != nil {
			return false
		}
		return sel.Matches(labels.Set(nsLabels))
	default:
		return ns == pool.Namespace
	}
}

// Namespaces maps namespace names to their labels.
type Namespaces map[string]map[string]string

// ListNamespaces reads every namespace's labels.
func ListNamespaces(ctx context.Context, c client.Reader) (Namespaces, error) {
	var list corev1.NamespaceList
	if err := c.List(ctx, &list); err != nil {
		return nil, err
	}
	out := Namespaces{}
	for _, n := range list.Items {
		out[n.Name] = n.Labels
	}
	return out, nil
}

// older orders claims: creation time, then namespace/name.
func older(a, b *v1alpha1.SendingDomain) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
}

// AdmittedDomains returns the domains of the pool that it admits: from an
// allowed namespace, not being deleted, and the oldest claim of their
// domain name. Sorted by domain.
func AdmittedDomains(pool *v1alpha1.RelayPool, domains []v1alpha1.SendingDomain, ns Namespaces) []*v1alpha1.SendingDomain {
	winner := map[string]*v1alpha1.SendingDomain{}
	for i := range domains {
		d := &domains[i]
		if !d.DeletionTimestamp.IsZero() || !Allows(pool, d.Namespace, ns[d.Namespace]) {
			continue
		}
		if w, ok := winner[d.Spec.Domain]; !ok || older(d, w) {
			winner[d.Spec.Domain] = d
		}
	}
	out := make([]*v1alpha1.SendingDomain, 0, len(winner))
	for _, d := range winner {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b *v1alpha1.SendingDomain) int { return strings.Compare(a.Spec.Domain, b.Spec.Domain) })
	return out
}

// Uncovered returns the first allowed sender (and its index) whose domain
// is neither one of signing nor under one, or -1.
func Uncovered(senders []string, signing map[string]bool) (int, string) {
	for i, s := range senders {
		d := s
		if at := strings.LastIndexByte(s, '@'); at >= 0 {
			d = s[at+1:]
		}
		if config.SigningDomain(strings.ToLower(d), signing) == "" {
			return i, s
		}
	}
	return -1, ""
}

// Username is the login of a credential.
func Username(c *v1alpha1.SMTPCredential) string { return c.Name + "." + c.Namespace }

// SecretName is the Secret a credential's connection settings go to.
func SecretName(c *v1alpha1.SMTPCredential) string {
	if c.Spec.SecretName != "" {
		return c.Spec.SecretName
	}
	return c.Name + "-smtp"
}

// Annotations on the Secrets the operator writes, read across controllers.
const (
	// AnnotationPasswordHash on a credential Secret is the hash of its
	// password, the only form in which the relay ever sees it.
	AnnotationPasswordHash = "mailroom.io/password-hash"
	// AnnotationPreviousPasswords on a credential Secret lists rotated-out
	// password hashes that keep working until their notAfter (JSON).
	AnnotationPreviousPasswords = "mailroom.io/previous-passwords"
	// AnnotationAPIKeyHash on a credential Secret is the hash of its HTTP
	// API key (data key api-key), hashed like the password.
	AnnotationAPIKeyHash = "mailroom.io/api-key-hash"
	// AnnotationPreviousAPIKeys lists rotated-out API key hashes, in the
	// form of AnnotationPreviousPasswords.
	AnnotationPreviousAPIKeys = "mailroom.io/previous-api-keys"
	// AnnotationConfigRevision on a pool's config Secret is the revision
	// at which its data last changed.
	AnnotationConfigRevision = "mailroom.io/config-revision"
	// LabelManagedBy marks every Secret the operator writes; the manager
	// caches only those.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "mailroom"
)

// Data keys of a credential Secret that the RelayPool controller reads
// besides the password's hash.
const (
	// KeyAPIKey is the HTTP API key (internal/apikey format).
	KeyAPIKey = "api-key"
	// KeyAPIURL is the HTTP API's base URL on the pool's Service.
	KeyAPIURL = "api-url"
	// KeyWebhookSecret is the webhook signing secret in effect, generated
	// or copied from spec.events.webhook.secretRef.
	KeyWebhookSecret = "webhook-secret"
)

// PreviousPassword is a rotated-out password (or API key) hash.
type PreviousPassword struct {
	Hash     string      `json:"hash"`
	NotAfter metav1.Time `json:"notAfter"`
}

// ParsePrevious reads AnnotationPreviousPasswords; a damaged value reads as
// none (the old password stops working, which is the safe side).
func ParsePrevious(s string) []PreviousPassword {
	var out []PreviousPassword
	if s == "" || json.Unmarshal([]byte(s), &out) != nil {
		return nil
	}
	return out
}
