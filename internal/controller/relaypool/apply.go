package relaypool

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"mailroom.io/mailroom/internal/controller/apply"
	"mailroom.io/mailroom/internal/relayconfig"
)

// applyPlan writes what differs, in an order that keeps pods startable:
// certificates and configuration before the StatefulSet that mounts them.
func (r *Reconciler) applyPlan(ctx context.Context, w *world, p *plan) error {
	own := func(o client.Object) error { return controllerutil.SetControllerReference(w.pool, o, r.Scheme) }
	put := func(desired, live client.Object) error {
		if err := own(desired); err != nil {
			return err
		}
		_, err := apply.Object(ctx, r.Client, r.Scheme, desired, live)
		return err
	}
	for _, e := range p.certs.events {
		r.event(w.pool, corev1.EventTypeNormal, "CertificateIssued", "%s", e)
	}
	certs := []struct {
		desired *corev1.Secret
		live    *corev1.Secret
	}{{p.certs.ca, w.ca}, {p.certs.serving, w.tlsIfIssued()}, {p.certs.peer, w.peer}}
	for _, c := range certs {
		if c.desired == nil {
			continue
		}
		if err := put(c.desired, c.live); err != nil {
			return err
		}
	}
	if err := put(p.caMap, w.caMap); err != nil {
		return err
	}
	if p.configErr == "" {
		for _, s := range p.secrets {
			if err := put(s, w.configSecrets[s.Name]); err != nil {
				return err
			}
		}
		if p.bumped {
			r.event(w.pool, corev1.EventTypeNormal, "ConfigRendered", "relay configuration revision %d: %d domains, %d credentials", p.revision, len(w.domains), len(w.credentials))
			logger(ctx).Info("relay configuration rendered", "revision", p.revision, "domains", len(w.domains), "credentials", len(w.credentials), "skipped", strings.Join(w.skipped, "; "))
		}
	}
	if err := put(p.sts, w.sts); err != nil {
		return err
	}
	for _, svc := range p.services {
		var live corev1.Service
		if err := r.getOwned(ctx, w, svc.Name, &live); err != nil {
			return err
		}
		if err := put(svc, orNil(&live)); err != nil {
			return err
		}
	}
	if w.pool.Spec.Service == nil {
		if err := r.deleteOwned(ctx, w, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: ExternalServiceName(w.pool.Name)}}); err != nil {
			return err
		}
	}
	name := relayconfig.StatefulSetName(w.pool.Name)
	if p.pdb != nil {
		var live policyv1.PodDisruptionBudget
		if err := r.getOwned(ctx, w, name, &live); err != nil {
			return err
		}
		if err := put(p.pdb, orNil(&live)); err != nil {
			return err
		}
	} else if err := r.deleteOwned(ctx, w, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		return err
	}
	if p.netpol != nil {
		var live networkingv1.NetworkPolicy
		if err := r.getOwned(ctx, w, name, &live); err != nil {
			return err
		}
		if err := put(p.netpol, orNil(&live)); err != nil {
			return err
		}
	} else if err := r.deleteOwned(ctx, w, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		return err
	}
	return nil
}

// tlsIfIssued is the live operator-issued serving Secret.
func (w *world) tlsIfIssued() *corev1.Secret {
	if w.pool.Spec.Submission.TLS.SecretName != "" {
		return nil
	}
	return w.tls
}

// getOwned reads an object of the pool; an absent one is left with an
// empty resourceVersion.
func (r *Reconciler) getOwned(ctx context.Context, w *world, name string, obj client.Object) error {
	err := r.Get(ctx, types.NamespacedName{Namespace: w.pool.Namespace, Name: name}, obj)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil && !metav1.IsControlledBy(obj, w.pool) {
		return fmt.Errorf("%s %s exists and is not owned by RelayPool %s; rename or delete it", fmt.Sprintf("%T", obj), name, w.pool.Name)
	}
	return err
}

func orNil(o client.Object) client.Object {
	if o.GetResourceVersion() == "" {
		return nil
	}
	return o
}

// deleteOwned deletes an object the pool no longer wants, if it has it.
func (r *Reconciler) deleteOwned(ctx context.Context, w *world, obj client.Object) error {
	if err := r.Get(ctx, types.NamespacedName{Namespace: w.pool.Namespace, Name: obj.GetName()}, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(obj, w.pool) {
		return nil
	}
	return client.IgnoreNotFound(r.Delete(ctx, obj))
}
