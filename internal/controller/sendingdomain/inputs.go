package sendingdomain

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	externaldnsv1alpha1 "sigs.k8s.io/external-dns/apis/v1alpha1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/relayconfig"
)

// inputs is everything one reconcile reads from the API server, gathered
// before anything is decided. The steps after it render from this value;
// only verification reads more (DNS, which depends on the rendered
// records).
type inputs struct {
	sd  *v1alpha1.SendingDomain
	now time.Time
	// rival is the oldest other SendingDomain claiming the same domain for
	// the same pool, when it is older than sd.
	rival *v1alpha1.SendingDomain
	// secret is the DKIM key Secret; nil when there is none yet.
	secret *corev1.Secret
	// pool is the referenced RelayPool; nil when it does not exist.
	pool *v1alpha1.RelayPool
	// poolAllows: the pool's spec.allowedNamespaces admits sd's namespace.
	poolAllows bool
	// endpoint is the DNSEndpoint of the records; nil when there is none
	// yet.
	endpoint *externaldnsv1alpha1.DNSEndpoint

	// shard is the pool's configuration Secret that holds this domain
	// (internal/relayconfig); with the pool's status.appliedRevision it
	// says whether the relays sign with the domain's key (signing.go).
	shard *corev1.Secret
}

// gather reads the inputs of one reconcile; nil when the SendingDomain is
// gone or going.
func (r *Reconciler) gather(ctx context.Context, key types.NamespacedName) (*inputs, error) {
	var sd v1alpha1.SendingDomain
	if err := r.Get(ctx, key, &sd); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if !sd.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	in := &inputs{sd: &sd, now: r.now()}
	var err error
	if in.rival, err = r.olderRival(ctx, &sd); err != nil {
		return nil, err
	}
	if in.secret, err = r.keySecret(ctx, &sd); err != nil {
		return nil, err
	}
	ns, name := poolKey(&sd)
	var pool v1alpha1.RelayPool
	switch err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &pool); {
	case err == nil:
		in.pool = &pool
		if in.poolAllows, err = r.poolAllows(ctx, &pool, sd.Namespace); err != nil {
			return nil, err
		}
		var shard corev1.Secret
		name := relayconfig.ShardSecretName(pool.Name, relayconfig.ShardOf(sd.Spec.Domain))
		switch err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &shard); {
		case err == nil:
			in.shard = &shard
		case !apierrors.IsNotFound(err):
			return nil, err
		}
	case !apierrors.IsNotFound(err):
		return nil, err
	}
	var ep externaldnsv1alpha1.DNSEndpoint
	switch err := r.Get(ctx, types.NamespacedName{Namespace: sd.Namespace, Name: endpointName(&sd)}, &ep); {
	case err == nil:
		in.endpoint = &ep
	case !apierrors.IsNotFound(err):
		return nil, err
	}
	return in, nil
}

// olderRival returns the oldest other SendingDomain claiming the same
// domain for the same pool, if it is older than sd.
func (r *Reconciler) olderRival(ctx context.Context, sd *v1alpha1.SendingDomain) (*v1alpha1.SendingDomain, error) {
	var list v1alpha1.SendingDomainList
	if err := r.List(ctx, &list, client.MatchingFields{indexDomain: sd.Spec.Domain}); err != nil {
		return nil, err
	}
	ns, pool := poolKey(sd)
	var oldest *v1alpha1.SendingDomain
	for i := range list.Items {
		o := &list.Items[i]
		ons, opool := poolKey(o)
		if o.UID == sd.UID || !o.DeletionTimestamp.IsZero() || ons != ns || opool != pool {
			continue
		}
		if older(o, sd) && (oldest == nil || older(o, oldest)) {
			oldest = o
		}
	}
	return oldest, nil
}

// keySecret reads the DKIM key Secret: from the cache, which holds the
// Secrets mailroom labelled, else live, for a key made outside mailroom
// (adopted) or one the cache has not seen yet. nil when there is none.
func (r *Reconciler) keySecret(ctx context.Context, sd *v1alpha1.SendingDomain) (*corev1.Secret, error) {
	key := types.NamespacedName{Namespace: sd.Namespace, Name: SecretName(sd)}
	var secret corev1.Secret
	err := r.Get(ctx, key, &secret)
	if apierrors.IsNotFound(err) {
		err = r.apiReader().Get(ctx, key, &secret)
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, err
	}
	return &secret, nil
}

// poolAllows applies the pool's spec.allowedNamespaces to namespace ns.
func (r *Reconciler) poolAllows(ctx context.Context, pool *v1alpha1.RelayPool, ns string) (bool, error) {
	switch pool.Spec.AllowedNamespaces.From {
	case v1alpha1.NamespacesFromAll:
		return true, nil
	case v1alpha1.NamespacesFromSelector:
		sel, err := metav1.LabelSelectorAsSelector(pool.Spec.AllowedNamespaces.Selector)
		if err != nil {
			return false, nil
		}
		var n corev1.Namespace
		if err := r.Get(ctx, types.NamespacedName{Name: ns}, &n); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return sel.Matches(labels.Set(n.Labels)), nil
	default:
		return pool.Namespace == ns, nil
	}
}
