// Package smtpcredential is the SMTPCredential controller: it writes the
// application's Secret (host, port, username, password, url, ca.crt, and
// api-key and api-url for the HTTP API), rotates the password and API key
// together on request with a grace period for the old ones, resolves the
// webhook's signing secret (copied from the user's Secret, or generated,
// into webhook-secret) and checks its target against the pool, and reports
// Ready only when every ready relay of the pool accepts the login and
// holds the webhook. The relay configuration itself (which holds only
// hashes of the password and key) is rendered by the RelayPool controller.
package smtpcredential

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/apply"
	"mailroom.io/mailroom/internal/controller/attachment"
	"mailroom.io/mailroom/internal/controller/conditions"
	"mailroom.io/mailroom/internal/relayconfig"
)

// +kubebuilder:rbac:groups=mailroom.io,resources=smtpcredentials,verbs=get;list;watch
// +kubebuilder:rbac:groups=mailroom.io,resources=smtpcredentials/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=mailroom.io,resources=relaypools,verbs=get;list;watch
// +kubebuilder:rbac:groups=mailroom.io,resources=sendingdomains,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch

// Reconciler reconciles SMTPCredentials.
type Reconciler struct {
	client.Client
	// APIReader reads Secrets the manager does not cache: the user's
	// webhook signing-secret Secret. nil means the Client, which finds
	// only Secrets mailroom labels.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	// Clock is the time source; nil means the real clock.
	Clock clock.PassiveClock
	// Random feeds password generation; nil means crypto/rand.
	Random io.Reader
	// UserSecretResync overrides DefaultUserSecretResync when positive.
	UserSecretResync time.Duration
}

// Reasons of the Ready condition and Events.
const (
	ReasonReady            = "Ready"
	ReasonPoolNotFound     = "PoolNotFound"
	ReasonNotAllowed       = "NamespaceNotAllowed"
	ReasonSenderNotCovered = "SenderNotCovered"
	ReasonSuspended        = "Suspended"
	ReasonConfigPending    = "ConfigPending"
	ReasonNoReadyRelays    = "NoReadyRelays"
	ReasonRevisionPending  = "RevisionPending"
	ReasonRotated          = "PasswordRotated"
	ReasonIssued           = "PasswordIssued"

	ReasonWebhookTargetNotAllowed = "WebhookTargetNotAllowed"
	ReasonWebhookSecretMissing    = "WebhookSecretMissing"
	ReasonWebhookSecretInvalid    = "WebhookSecretInvalid"
	ReasonWebhookSecretGenerated  = "WebhookSecretGenerated"
)

var cryptoRand io.Reader = rand.Reader

// SetupWithManager registers the controller. It expects the
// attachment indexes to be registered.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.SMTPCredential{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&corev1.Secret{}).
		Watches(&v1alpha1.RelayPool{}, handler.EnqueueRequestsFromMapFunc(r.poolToCredentials)).
		Watches(&v1alpha1.SendingDomain{}, handler.EnqueueRequestsFromMapFunc(r.domainToCredentials)).
		// Each reconcile is a few cached reads and at most two writes;
		// several in flight keep thousands of credentials from queueing
		// behind API round trips.
		WithOptions(controller.Options{MaxConcurrentReconciles: 8}).
		Named("smtpcredential").
		Complete(r)
}

func (r *Reconciler) credentialsOf(ctx context.Context, poolKey string) []ctrl.Request {
	var list v1alpha1.SMTPCredentialList
	if err := r.List(ctx, &list, client.MatchingFields{attachment.IndexPool: poolKey}); err != nil {
		return nil
	}
	out := make([]ctrl.Request, 0, len(list.Items))
	for _, c := range list.Items {
		out = append(out, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: c.Namespace, Name: c.Name}})
	}
	return out
}

func (r *Reconciler) poolToCredentials(ctx context.Context, o client.Object) []ctrl.Request {
	return r.credentialsOf(ctx, o.GetNamespace()+"/"+o.GetName())
}

func (r *Reconciler) domainToCredentials(ctx context.Context, o client.Object) []ctrl.Request {
	sd := o.(*v1alpha1.SendingDomain)
	return r.credentialsOf(ctx, attachment.PoolKey(sd.Namespace, sd.Spec.PoolRef))
}

func (r *Reconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// inputs is everything one reconcile looks at.
type inputs struct {
	cred      *v1alpha1.SMTPCredential
	pool      *v1alpha1.RelayPool
	allowed   bool
	uncovered int
	sender    string
	secret    *corev1.Secret // as read; nil when absent
	ca        []byte
	shard     *corev1.Secret
	hook      *hookState // nil without spec.events.webhook
}

// Reconcile writes the credential's Secret and reports whether the relays
// accept it.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var cred v1alpha1.SMTPCredential
	if err := r.Get(ctx, req.NamespacedName, &cred); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !cred.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	now := r.now()
	in, err := r.gather(ctx, &cred)
	if err != nil {
		return ctrl.Result{}, err
	}

	status := *cred.Status.DeepCopy()
	status.ObservedGeneration = cred.Generation
	status.Username = attachment.Username(&cred)
	status.SecretName = attachment.SecretName(&cred)
	var requeue time.Duration
	if in.pool != nil && in.allowed {
		l, rotated, err := nextLogin(&cred, in.secret, now, r.Random)
		if err != nil {
			return ctrl.Result{}, err
		}
		ep := endpoint{Host: relayconfig.Endpoint(in.pool), Port: in.pool.Spec.Submission.StartTLSPort, CA: in.ca}
		if relayconfig.APIEnabled(in.pool) {
			ep.APIURL = relayconfig.APIURL(in.pool)
		}
		var hook hookSecret
		if in.hook != nil {
			hook = in.hook.secret
		}
		desired, err := Secret(&cred, l, ep, hook)
		if err != nil {
			return ctrl.Result{}, err
		}
		if err := controllerutil.SetControllerReference(&cred, desired, r.Scheme); err != nil {
			return ctrl.Result{}, err
		}
		wrote, err := apply.Object(ctx, r.Client, r.Scheme, desired, in.secret)
		if err != nil {
			return ctrl.Result{}, err
		}
		if wrote && in.secret == nil {
			r.event(&cred, corev1.EventTypeNormal, ReasonIssued, "wrote Secret %s with a new password and API key", desired.Name)
		}
		if wrote && hook.Source == sourceGenerated && generatedHook(in.secret).Value == "" {
			r.event(&cred, corev1.EventTypeNormal, ReasonWebhookSecretGenerated, "generated a webhook signing secret into Secret %s (key %s)", desired.Name, attachment.KeyWebhookSecret)
		}
		if rotated {
			r.event(&cred, corev1.EventTypeNormal, ReasonRotated, "new password and API key in Secret %s; the previous ones work until %s",
				desired.Name, prevUntil(l))
		}
		in.secret = desired
		status.PasswordRotatedAt = &metav1.Time{Time: l.IssuedAt}
		status.PreviousPasswordExpires = nil
		if t, ok := nextExpiry(l); ok {
			status.PreviousPasswordExpires = &metav1.Time{Time: t}
			requeue = t.Sub(now) + time.Second
		}
	}
	resync := DefaultUserSecretResync
	if r.UserSecretResync > 0 {
		resync = r.UserSecretResync
	}
	if in.hook != nil && in.hook.ref != "" && (requeue == 0 || requeue > resync) {
		requeue = resync
	}

	v := readiness.Evaluate(in)
	set := conditions.Setter{Conditions: &status.Conditions, Generation: cred.Generation, Now: now}
	old := cred.Status.Conditions
	set.SetReadiness(v, ReasonReady, fmt.Sprintf("the relays of pool %s/%s accept %s", cred.Spec.PoolRef.Namespace, cred.Spec.PoolRef.Name, status.Username))
	if conditions.Changed(old, status.Conditions, conditions.Ready) && v.State == conditions.Blocked {
		r.event(&cred, corev1.EventTypeWarning, v.Reason, "%s", v.Message)
	}
	if !equality.Semantic.DeepEqual(cred.Status, status) {
		cred.Status = status
		if err := apply.Status(ctx, r.Client, r.Scheme, &cred); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

func prevUntil(l login) string {
	if t, ok := nextExpiry(l); ok {
		return t.UTC().Format(time.RFC3339)
	}
	return "now (no grace period)"
}

func (r *Reconciler) event(cred *v1alpha1.SMTPCredential, typ, reason, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(cred, nil, typ, reason, "Reconcile", format, args...)
	}
}

func (r *Reconciler) gather(ctx context.Context, cred *v1alpha1.SMTPCredential) (*inputs, error) {
	in := &inputs{cred: cred, uncovered: -1}
	poolNS := cred.Spec.PoolRef.Namespace
	if poolNS == "" {
		poolNS = cred.Namespace
	}
	var pool v1alpha1.RelayPool
	if err := r.Get(ctx, types.NamespacedName{Namespace: poolNS, Name: cred.Spec.PoolRef.Name}, &pool); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
	} else {
		in.pool = &pool
	}
	var secret corev1.Secret
	if err := r.Get(ctx, types.NamespacedName{Namespace: cred.Namespace, Name: attachment.SecretName(cred)}, &secret); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
	} else if metav1.IsControlledBy(&secret, cred) {
		in.secret = &secret
	} else {
		return nil, fmt.Errorf("Secret %s/%s exists and is not owned by this SMTPCredential; choose another spec.secretName", cred.Namespace, secret.Name)
	}
	if in.pool == nil {
		return in, nil
	}
	nss, err := attachment.ListNamespaces(ctx, r.Client)
	if err != nil {
		return nil, err
	}
	in.allowed = attachment.Allows(in.pool, cred.Namespace, nss[cred.Namespace])
	var domains v1alpha1.SendingDomainList
	if err := r.List(ctx, &domains, client.MatchingFields{attachment.IndexPool: poolNS + "/" + pool.Name}); err != nil {
		return nil, err
	}
	signing := map[string]bool{}
	for _, d := range attachment.AdmittedDomains(in.pool, domains.Items, nss) {
		signing[d.Spec.Domain] = true
	}
	in.uncovered, in.sender = attachment.Uncovered(cred.Spec.AllowedSenders, signing)
	if err := r.resolveWebhook(ctx, in); err != nil {
		return nil, err
	}

	if pool.Spec.Submission.TLS.SecretName == "" {
		var cm corev1.ConfigMap
		if err := r.Get(ctx, types.NamespacedName{Namespace: poolNS, Name: pool.Status.CAConfigMap}, &cm); err == nil {
			in.ca = []byte(cm.Data["ca.crt"])
		} else if !apierrors.IsNotFound(err) {
			return nil, err
		}
	}
	var shard corev1.Secret
	name := relayconfig.ShardSecretName(pool.Name, relayconfig.ShardOf(attachment.Username(cred)))
	if err := r.Get(ctx, types.NamespacedName{Namespace: poolNS, Name: name}, &shard); err == nil {
		in.shard = &shard
	} else if !apierrors.IsNotFound(err) {
		return nil, err
	}
	return in, nil
}

// readiness is the ordered chain behind Ready.
var readiness = conditions.Chain[*inputs]{
	func(in *inputs) conditions.Verdict {
		if in.pool == nil {
			return conditions.Block(ReasonPoolNotFound, fmt.Sprintf("RelayPool %s does not exist; create it or fix spec.poolRef", poolName(in.cred)))
		}
		return conditions.Pass()
	},
	func(in *inputs) conditions.Verdict {
		if !in.allowed {
			return conditions.Block(ReasonNotAllowed, fmt.Sprintf("RelayPool %s does not admit namespace %s (its spec.allowedNamespaces is %s); the relays will not accept this login",
				poolName(in.cred), in.cred.Namespace, in.pool.Spec.AllowedNamespaces.From))
		}
		return conditions.Pass()
	},
	func(in *inputs) conditions.Verdict {
		if in.uncovered >= 0 {
			return conditions.Block(ReasonSenderNotCovered, fmt.Sprintf("spec.allowedSenders[%d] %q is not covered by any SendingDomain on RelayPool %s; create a SendingDomain for its domain on that pool or remove the sender",
				in.uncovered, in.sender, poolName(in.cred)))
		}
		return conditions.Pass()
	},
	func(in *inputs) conditions.Verdict {
		if h := in.hook; h != nil && h.reason != "" {
			return conditions.Block(h.reason, h.message)
		}
		return conditions.Pass()
	},
	func(in *inputs) conditions.Verdict {
		if in.cred.Spec.Suspended {
			return conditions.Block(ReasonSuspended, "spec.suspended is true: AUTH works but every MAIL FROM gets 451 4.7.1")
		}
		return conditions.Pass()
	},
	func(in *inputs) conditions.Verdict {
		if !shardHolds(in.shard, in.cred, in.secret) {
			return conditions.Wait(ReasonConfigPending, fmt.Sprintf("the relay configuration of pool %s does not hold this login's current password, API key and webhook yet", poolName(in.cred)))
		}
		return conditions.Pass()
	},
	func(in *inputs) conditions.Verdict {
		rev, _ := strconv.ParseInt(in.shard.Annotations[attachment.AnnotationConfigRevision], 10, 64)
		st := in.pool.Status
		if st.ReadyReplicas == 0 {
			return conditions.Wait(ReasonNoReadyRelays, fmt.Sprintf("pool %s has no ready relay pods; the login is in configuration revision %d", poolName(in.cred), rev))
		}
		if st.AppliedRevision < rev {
			return conditions.Wait(ReasonRevisionPending, fmt.Sprintf("the login is in configuration revision %d; the ready relays of pool %s run revision %d or later", rev, poolName(in.cred), st.AppliedRevision))
		}
		return conditions.Pass()
	},
}

func poolName(c *v1alpha1.SMTPCredential) string {
	ns := c.Spec.PoolRef.Namespace
	if ns == "" {
		ns = c.Namespace
	}
	return ns + "/" + c.Spec.PoolRef.Name
}

// shardHolds reports whether a config shard lists the login with the
// password and API key hashes the Secret holds, and with the webhook the
// credential names (URL and signing secret) or none.
func shardHolds(shard *corev1.Secret, cred *v1alpha1.SMTPCredential, secret *corev1.Secret) bool {
	if shard == nil || secret == nil {
		return false
	}
	sh, err := relayconfig.ReadShard(shard.Data)
	if err != nil {
		return false
	}
	for _, c := range sh.Credentials {
		if c.Username == attachment.Username(cred) {
			return c.PasswordHash == secret.Annotations[attachment.AnnotationPasswordHash] &&
				c.APIKeyHash == secret.Annotations[attachment.AnnotationAPIKeyHash] &&
				holdsWebhook(cred, secret, c.Webhook)
		}
	}
	return false
}
