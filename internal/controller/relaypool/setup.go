package relaypool

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/attachment"
)

// SetupWithManager registers the controller. It expects the attachment
// indexes to be registered.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.RelayPool{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&corev1.Secret{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToPool)).
		Watches(&v1alpha1.SendingDomain{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []ctrl.Request {
			sd := o.(*v1alpha1.SendingDomain)
			return []ctrl.Request{poolRequest(sd.Namespace, sd.Spec.PoolRef)}
		})).
		Watches(&v1alpha1.SMTPCredential{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []ctrl.Request {
			c := o.(*v1alpha1.SMTPCredential)
			return []ctrl.Request{poolRequest(c.Namespace, c.Spec.PoolRef)}
		})).
		// Credential and DKIM Secrets belong to other objects; a change in
		// them (a rotated password, a new key) changes the configuration.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.secretToPool)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.allPools)).
		Named("relaypool").
		Complete(r)
}

func poolRequest(ns string, ref v1alpha1.PoolReference) ctrl.Request {
	if ref.Namespace != "" {
		ns = ref.Namespace
	}
	return ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: ref.Name}}
}

func podToPool(_ context.Context, o client.Object) []ctrl.Request {
	l := o.GetLabels()
	if l[LabelName] != "mailroom-relay" || l[LabelInstance] == "" {
		return nil
	}
	return []ctrl.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: l[LabelInstance]}}}
}

// secretToPool maps a credential Secret to its credential's pool and a
// DKIM Secret to its domain's pool.
func (r *Reconciler) secretToPool(ctx context.Context, o client.Object) []ctrl.Request {
	l := o.GetLabels()
	if name := l["mailroom.io/smtpcredential"]; name != "" {
		var c v1alpha1.SMTPCredential
		if err := r.Get(ctx, types.NamespacedName{Namespace: o.GetNamespace(), Name: name}, &c); err == nil {
			return []ctrl.Request{poolRequest(c.Namespace, c.Spec.PoolRef)}
		}
	}
	if name := l["mailroom.io/sending-domain"]; name != "" {
		var sd v1alpha1.SendingDomain
		if err := r.Get(ctx, types.NamespacedName{Namespace: o.GetNamespace(), Name: name}, &sd); err == nil {
			return []ctrl.Request{poolRequest(sd.Namespace, sd.Spec.PoolRef)}
		}
	}
	return nil
}

func (r *Reconciler) allPools(ctx context.Context, _ client.Object) []ctrl.Request {
	var list v1alpha1.RelayPoolList
	if err := r.List(ctx, &list); err != nil {
		return nil
	}
	out := make([]ctrl.Request, 0, len(list.Items))
	for _, p := range list.Items {
		out = append(out, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}})
	}
	return out
}

var _ = attachment.IndexPool
