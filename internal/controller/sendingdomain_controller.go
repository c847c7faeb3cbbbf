package controller

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	externaldnsv1alpha1 "sigs.k8s.io/external-dns/apis/v1alpha1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/dnsrecord"
)

// +kubebuilder:rbac:groups=mailroom.io,resources=sendingdomains,verbs=get;list;watch
// +kubebuilder:rbac:groups=mailroom.io,resources=sendingdomains/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=mailroom.io,resources=relaypools,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=externaldns.k8s.io,resources=dnsendpoints,verbs=get;list;watch;create;update;patch

// Labels and annotations on the DKIM key Secret.
const (
	// SendingDomainSecretLabel names the SendingDomain a DKIM Secret belongs
	// to. The Secret is deliberately not owned by the SendingDomain (it
	// outlives it, like cert-manager's certificate Secrets); the label is
	// how the controller finds the domain when the Secret changes.
	SendingDomainSecretLabel = "mailroom.io/sending-domain"
	// SendingDomainSecretType marks DKIM key Secrets.
	SendingDomainSecretType corev1.SecretType = "mailroom.io/dkim"
	// The Secret carries, under v1alpha1.AnnotationRotateDKIM, the value of
	// the SendingDomain's rotate annotation it last acted on. It lives on
	// the Secret, not in status, so that a re-created SendingDomain with the
	// same annotation does not rotate an adopted key.
)

// Reasons of SendingDomain conditions and Events.
const (
	sdReasonKeyCreated        = "KeyCreated"
	sdReasonKeyAdopted        = "KeyAdopted"
	sdReasonKeyReady          = "KeyReady"
	sdReasonKeyInvalid        = "KeyInvalid"
	sdReasonKeyMismatch       = "KeyMismatch"
	sdReasonKeyReplaced       = "KeyReplaced"
	sdReasonNextKeyCreated    = "NextKeyCreated"
	sdReasonKeyActivated      = "KeyActivated"
	sdReasonKeyWithdrawn      = "KeyWithdrawn"
	sdReasonPublished         = "Published"
	sdReasonPoolNotFound      = "PoolNotFound"
	sdReasonPoolNotAllowed    = "PoolNotAllowed"
	sdReasonInvalidRecords    = "InvalidRecords"
	sdReasonConflict          = "Conflict"
	sdReasonPending           = "Pending"
	sdReasonReady             = "Ready"
	sdReasonWithinLimit       = "WithinLimit"
	sdReasonLookupsExceeded   = "TooManyLookups"
	sdReasonVerifyFailed      = "DNSVerificationFailed"
	sdReasonVerified          = "DNSVerified"
	sdIndexDomain             = "spec.domain"
	sdIndexPool               = "spec.poolRef"
	sdDefaultMinVerifyBackoff = 5 * time.Second
)

// SendingDomainReconciler keeps a SendingDomain's DKIM keys, its
// DNSEndpoint and its status in line with its spec and with DNS.
type SendingDomainReconciler struct {
	client.Client
	Scheme   *runtime.Scheme
	Recorder events.EventRecorder
	// Clock is the time source; nil means the real clock.
	Clock clock.PassiveClock
	// Random feeds key generation; nil means crypto/rand.
	Random io.Reader
	// ResolvConf is read when a domain names no resolvers; empty means
	// /etc/resolv.conf.
	ResolvConf string
	// QueryTimeout bounds each DNS query; zero means
	// dnsrecord.DefaultQueryTimeout.
	QueryTimeout time.Duration
	// MinVerifyBackoff is the first retry delay after a failed
	// verification; zero means 5s.
	MinVerifyBackoff time.Duration

	// lastCheck remembers, per SendingDomain, when its records were last
	// looked up. It is deliberately not in status: writing a timestamp at
	// every check would make an unchanged domain write to the API server
	// every interval. After a restart every domain is simply checked once.
	mu        sync.Mutex
	lastCheck map[types.NamespacedName]sdLastCheck
}

type sdLastCheck struct {
	uid types.UID
	at  time.Time
	// failingSince is when checks of the current records started failing;
	// zero while they pass. Retries back off from it.
	failingSince time.Time
}

// SetupWithManager registers the reconciler: it watches SendingDomains,
// the DNSEndpoints they own, their DKIM Secrets, and the RelayPools they
// reference.
func (r *SendingDomainReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := r.setupIndexes(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return err
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("sendingdomain-controller")
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("sendingdomain").
		// Status writes do not change the generation; the rotate annotation
		// does not either, so it is watched on its own.
		For(&v1alpha1.SendingDomain{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&externaldnsv1alpha1.DNSEndpoint{}).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.secretToDomain)).
		Watches(&v1alpha1.RelayPool{}, handler.EnqueueRequestsFromMapFunc(r.poolToDomains)).
		// A domain's conflict with another ends when the other goes away or
		// changes domain: wake every domain claiming the same name.
		Watches(&v1alpha1.SendingDomain{}, handler.EnqueueRequestsFromMapFunc(r.domainToRivals), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// DNS checks wait on resolvers; one slow domain must not hold up the
		// others.
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

// setupIndexes registers the cache indexes Reconcile lists by: domains by
// spec.domain (conflicts) and by pool (pool changes).
func (r *SendingDomainReconciler) setupIndexes(ctx context.Context, idx client.FieldIndexer) error {
	if err := idx.IndexField(ctx, &v1alpha1.SendingDomain{}, sdIndexDomain, func(o client.Object) []string {
		return []string{o.(*v1alpha1.SendingDomain).Spec.Domain}
	}); err != nil {
		return err
	}
	return idx.IndexField(ctx, &v1alpha1.SendingDomain{}, sdIndexPool, func(o client.Object) []string {
		ns, name := sendingDomainPoolKey(o.(*v1alpha1.SendingDomain))
		return []string{ns + "/" + name}
	})
}

func (r *SendingDomainReconciler) secretToDomain(_ context.Context, o client.Object) []ctrl.Request {
	name, ok := o.GetLabels()[SendingDomainSecretLabel]
	if !ok {
		return nil
	}
	return []ctrl.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

func (r *SendingDomainReconciler) poolToDomains(ctx context.Context, o client.Object) []ctrl.Request {
	var list v1alpha1.SendingDomainList
	if err := r.List(ctx, &list, client.MatchingFields{sdIndexPool: o.GetNamespace() + "/" + o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "listing SendingDomains of a RelayPool")
		return nil
	}
	return sendingDomainRequests(list.Items, nil)
}

func (r *SendingDomainReconciler) domainToRivals(ctx context.Context, o client.Object) []ctrl.Request {
	var list v1alpha1.SendingDomainList
	if err := r.List(ctx, &list, client.MatchingFields{sdIndexDomain: o.(*v1alpha1.SendingDomain).Spec.Domain}); err != nil {
		log.FromContext(ctx).Error(err, "listing SendingDomains of a domain")
		return nil
	}
	return sendingDomainRequests(list.Items, o)
}

func sendingDomainRequests(items []v1alpha1.SendingDomain, except client.Object) []ctrl.Request {
	var out []ctrl.Request
	for _, sd := range items {
		if except != nil && sd.UID == except.GetUID() {
			continue
		}
		out = append(out, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: sd.Namespace, Name: sd.Name}})
	}
	return out
}

func (r *SendingDomainReconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

func (r *SendingDomainReconciler) random() io.Reader {
	if r.Random == nil {
		return rand.Reader
	}
	return r.Random
}

// sdState collects what one reconcile found and decided; status is built
// from it at the end.
type sdState struct {
	sd      *v1alpha1.SendingDomain
	now     time.Time
	status  v1alpha1.SendingDomainStatus
	requeue time.Duration
}

func (s *sdState) condition(typ string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&s.status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: message,
		ObservedGeneration: s.sd.Generation,
		// Used only when the status changes. Whole seconds, as the API
		// server stores them, so that an unchanged status compares equal.
		LastTransitionTime: metav1.NewTime(s.now.Truncate(time.Second)),
	})
}

func (s *sdState) isTrue(typ string) bool {
	return meta.IsStatusConditionTrue(s.status.Conditions, typ)
}

// wakeIn asks for another reconcile after d at the latest.
func (s *sdState) wakeIn(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	if s.requeue == 0 || d < s.requeue {
		s.requeue = d
	}
}

// Reconcile brings one SendingDomain in line: conflict check, DKIM keys,
// DNSEndpoint, DNS verification, status.
func (r *SendingDomainReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var sd v1alpha1.SendingDomain
	if err := r.Get(ctx, req.NamespacedName, &sd); err != nil {
		if apierrors.IsNotFound(err) {
			// The DNSEndpoint goes with it (owner reference); the key Secret
			// stays, on purpose.
			r.mu.Lock()
			delete(r.lastCheck, req.NamespacedName)
			r.mu.Unlock()
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !sd.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	s := &sdState{sd: &sd, now: r.now(), status: *sd.Status.DeepCopy()}
	s.status.ObservedGeneration = sd.Generation

	// On error, status still records what is known; controller-runtime
	// logs the error and retries with its own backoff.
	err := r.reconcile(ctx, s)
	if serr := r.writeStatus(ctx, &sd, s.status); serr != nil {
		return ctrl.Result{}, errors.Join(err, serr)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: s.requeue}, nil
}

func (r *SendingDomainReconciler) reconcile(ctx context.Context, s *sdState) error {
	sd := s.sd
	rival, err := r.olderRival(ctx, sd)
	if err != nil {
		return err
	}
	if rival != nil {
		msg := fmt.Sprintf("SendingDomain %s/%s claimed %s for this pool first", rival.Namespace, rival.Name, sd.Spec.Domain)
		if !meta.IsStatusConditionPresentAndEqual(s.status.Conditions, v1alpha1.ConditionReady, metav1.ConditionFalse) ||
			meta.FindStatusCondition(s.status.Conditions, v1alpha1.ConditionReady).Reason != sdReasonConflict {
			r.Recorder.Eventf(sd, rival, corev1.EventTypeWarning, sdReasonConflict, "CheckConflict", "%s", msg)
		}
		s.condition(v1alpha1.ConditionReady, metav1.ConditionFalse, sdReasonConflict, msg)
		return nil
	}

	keyring, err := r.reconcileKeys(ctx, s)
	if err != nil {
		return err
	}
	if keyring == nil {
		// No usable key: leave what is published alone rather than withdraw
		// the record of a key the relay may still sign with.
		r.setReady(s)
		return nil
	}

	records, published, err := r.reconcileEndpoint(ctx, s, keyring.ring)
	if err != nil {
		return err
	}
	if published {
		r.verify(ctx, s, records)
		if keyring.plan.WaitingForNext && r.nextVerified(s, keyring.ring) {
			// The switch waited for exactly this result: make it now.
			s.wakeIn(time.Second)
		}
	}
	r.setReady(s)
	return nil
}

// olderRival returns the oldest other SendingDomain claiming the same
// domain for the same pool, if it is older than sd.
func (r *SendingDomainReconciler) olderRival(ctx context.Context, sd *v1alpha1.SendingDomain) (*v1alpha1.SendingDomain, error) {
	var list v1alpha1.SendingDomainList
	if err := r.List(ctx, &list, client.MatchingFields{sdIndexDomain: sd.Spec.Domain}); err != nil {
		return nil, err
	}
	ns, pool := sendingDomainPoolKey(sd)
	var oldest *v1alpha1.SendingDomain
	for i := range list.Items {
		o := &list.Items[i]
		ons, opool := sendingDomainPoolKey(o)
		if o.UID == sd.UID || !o.DeletionTimestamp.IsZero() || ons != ns || opool != pool {
			continue
		}
		if sendingDomainOlder(o, sd) && (oldest == nil || sendingDomainOlder(o, oldest)) {
			oldest = o
		}
	}
	return oldest, nil
}

// sdKeys is the keyring after this reconcile's key work and the rotation
// plan it followed.
type sdKeys struct {
	ring *dkim.Keyring
	plan dkim.Plan
}

// reconcileKeys loads, creates or rotates the DKIM keys. It returns nil
// (and a KeyReady=False condition) when there is no usable key.
func (r *SendingDomainReconciler) reconcileKeys(ctx context.Context, s *sdState) (*sdKeys, error) {
	sd := s.sd
	var secret corev1.Secret
	err := r.Get(ctx, types.NamespacedName{Namespace: sd.Namespace, Name: sendingDomainSecretName(sd)}, &secret)
	switch {
	case apierrors.IsNotFound(err):
		return r.createKeys(ctx, s)
	case err != nil:
		return nil, err
	}

	requested := sendingDomainRotateRequested(sd, &secret)
	ring, perr := dkim.ParseSecretData(secret.Data)
	if perr != nil {
		if !requested {
			msg := fmt.Sprintf("Secret %s is not a usable DKIM keyring: %v; set the %s annotation to a new value to replace the key", secret.Name, perr, v1alpha1.AnnotationRotateDKIM)
			r.keyProblem(s, sdReasonKeyInvalid, msg)
			return nil, nil
		}
		return r.replaceKeys(ctx, s, &secret)
	}
	if s.status.DKIM.ActiveSelector == "" {
		// A new SendingDomain finding its key: re-created, or a key made
		// outside mailroom.
		r.Recorder.Eventf(sd, &secret, corev1.EventTypeNormal, sdReasonKeyAdopted, "AdoptKey", "adopted DKIM key %s from Secret %s", ring.Active.Selector, secret.Name)
	}
	if ring.Domain == "" {
		// A key made outside mailroom: adopted, dated by its Secret.
		ring.Domain = sd.Spec.Domain
		if ring.Active.Activated.IsZero() {
			ring.Active.Created = secret.CreationTimestamp.Time
			ring.Active.Activated = secret.CreationTimestamp.Time
		}
	}

	policy := sendingDomainRotationPolicy(sd.Spec.DKIM)
	nextVerified := ring.Next != nil && r.nextVerified(s, ring)
	plan := policy.Plan(ring, dkim.Situation{Now: s.now, NextVerified: nextVerified, RotateRequested: requested})
	var events []func()
	acted := secret.Annotations[v1alpha1.AnnotationRotateDKIM]
	if plan.MintNext {
		key, err := dkim.Generate(sendingDomainAlgorithm(sd.Spec.DKIM), r.random())
		if err != nil {
			return nil, err
		}
		if err := ring.AddNext(key, s.now); err != nil {
			return nil, err
		}
		sel := ring.Next.Selector
		events = append(events, func() {
			r.Recorder.Eventf(sd, nil, corev1.EventTypeNormal, sdReasonNextKeyCreated, "RotateKey", "made the next DKIM key %s; it becomes active once its record resolves", sel)
		})
	}
	if plan.Activate {
		old := ring.Active.Selector
		if err := ring.Activate(s.now); err != nil {
			return nil, err
		}
		if requested {
			acted = sd.Annotations[v1alpha1.AnnotationRotateDKIM]
		}
		sel := ring.Active.Selector
		events = append(events, func() {
			r.Recorder.Eventf(sd, nil, corev1.EventTypeNormal, sdReasonKeyActivated, "RotateKey", "DKIM key %s now signs; %s stays published until its overlap ends", sel, old)
		})
	}
	if len(plan.Withdraw) > 0 {
		ring.Withdraw(plan.Withdraw...)
		gone := slices.Clone(plan.Withdraw)
		events = append(events, func() {
			r.Recorder.Eventf(sd, nil, corev1.EventTypeNormal, sdReasonKeyWithdrawn, "RotateKey", "withdrew the DKIM record of retired key(s) %v", gone)
		})
	}
	if plan.MintNext || plan.Activate || len(plan.Withdraw) > 0 {
		// Plan again for status and wake-up: the keyring moved on.
		plan = policy.Plan(ring, dkim.Situation{Now: s.now, NextVerified: false, RotateRequested: requested && !plan.Activate})
	}
	if err := r.writeKeys(ctx, &secret, ring, acted); err != nil {
		return nil, err
	}
	for _, e := range events {
		e()
	}
	if !plan.Wake.IsZero() {
		s.wakeIn(plan.Wake.Sub(s.now))
	}
	s.status.DKIM = sendingDomainDKIMStatus(ring, plan)

	// The key is used whatever the checks below say: it is never replaced
	// without the annotation.
	alg, err := ring.Active.Algorithm()
	if err != nil {
		return nil, err
	}
	switch want := sendingDomainAlgorithm(sd.Spec.DKIM); {
	case ring.Domain != sd.Spec.Domain:
		r.keyProblem(s, sdReasonKeyMismatch, fmt.Sprintf("Secret %s holds keys made for %s, not %s; set the %s annotation to a new value to make a key for this domain", secret.Name, ring.Domain, sd.Spec.Domain, v1alpha1.AnnotationRotateDKIM))
	case alg != want && (ring.Next == nil || !sendingDomainKeyIs(ring.Next, want)):
		r.keyProblem(s, sdReasonKeyMismatch, fmt.Sprintf("the active key %s is %s, the spec asks for %s; it keeps signing until the next rotation, or set the %s annotation to a new value to replace it now", ring.Active.Selector, alg, want, v1alpha1.AnnotationRotateDKIM))
	default:
		msg := fmt.Sprintf("DKIM key %s (%s) signs", ring.Active.Selector, alg)
		if plan.WaitingForNext {
			msg += fmt.Sprintf("; the switch to %s waits for its record to resolve", ring.Next.Selector)
		}
		s.condition(v1alpha1.SendingDomainKeyReady, metav1.ConditionTrue, sdReasonKeyReady, msg)
	}
	return &sdKeys{ring: ring, plan: plan}, nil
}

func sendingDomainKeyIs(k *dkim.Key, a dkim.Algorithm) bool {
	got, err := k.Algorithm()
	return err == nil && got == a
}

// sendingDomainRotateRequested: the domain's rotate annotation holds a
// value the key Secret has not been made for yet.
func sendingDomainRotateRequested(sd *v1alpha1.SendingDomain, secret *corev1.Secret) bool {
	want := sd.Annotations[v1alpha1.AnnotationRotateDKIM]
	return want != "" && want != secret.Annotations[v1alpha1.AnnotationRotateDKIM]
}

// keyProblem sets KeyReady=False and records an Event when the problem is
// new.
func (r *SendingDomainReconciler) keyProblem(s *sdState, reason, msg string) {
	if c := meta.FindStatusCondition(s.status.Conditions, v1alpha1.SendingDomainKeyReady); c == nil || c.Status != metav1.ConditionFalse || c.Reason != reason || c.Message != msg {
		r.Recorder.Eventf(s.sd, nil, corev1.EventTypeWarning, reason, "CheckKey", "%s", msg)
	}
	s.condition(v1alpha1.SendingDomainKeyReady, metav1.ConditionFalse, reason, msg)
}

// nextVerified: the last verification found the next key's record with
// its current text.
func (r *SendingDomainReconciler) nextVerified(s *sdState, ring *dkim.Keyring) bool {
	rec, err := ring.Next.Record()
	if err != nil {
		return false
	}
	return sendingDomainRecordVerified(s.status.Records, dnsrecord.DKIMName(ring.Next.Selector, s.sd.Spec.Domain), rec)
}

func (r *SendingDomainReconciler) newKeyring(s *sdState, avoid ...string) (*dkim.Keyring, error) {
	key, err := dkim.Generate(sendingDomainAlgorithm(s.sd.Spec.DKIM), r.random())
	if err != nil {
		return nil, err
	}
	avoid = append(avoid, s.status.DKIM.ActiveSelector, s.status.DKIM.NextSelector)
	avoid = append(avoid, s.status.DKIM.RetiringSelectors...)
	return dkim.NewKeyring(s.sd.Spec.Domain, s.sd.Spec.DKIM.Selector, key, s.now, avoid...), nil
}

func (r *SendingDomainReconciler) createKeys(ctx context.Context, s *sdState) (*sdKeys, error) {
	sd := s.sd
	ring, err := r.newKeyring(s)
	if err != nil {
		return nil, err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: sd.Namespace,
			Name:      sendingDomainSecretName(sd),
			Labels: map[string]string{
				SendingDomainSecretLabel:       sd.Name,
				"app.kubernetes.io/managed-by": "mailroom",
			},
		},
		Type: SendingDomainSecretType,
	}
	// A rotate annotation already on a new domain asks for nothing: the key
	// is new anyway.
	if err := r.writeKeys(ctx, secret, ring, sd.Annotations[v1alpha1.AnnotationRotateDKIM]); err != nil {
		return nil, err
	}
	alg, _ := ring.Active.Algorithm()
	r.Recorder.Eventf(sd, secret, corev1.EventTypeNormal, sdReasonKeyCreated, "CreateKey", "made DKIM key %s (%s) in Secret %s", ring.Active.Selector, alg, secret.Name)
	return r.keysReady(s, ring)
}

// replaceKeys makes a new keyring for a Secret that cannot be read, as the
// rotate annotation asked.
func (r *SendingDomainReconciler) replaceKeys(ctx context.Context, s *sdState, secret *corev1.Secret) (*sdKeys, error) {
	ring, err := r.newKeyring(s, string(secret.Data[dkim.SecretSelector]), string(secret.Data[dkim.SecretNextSelector]))
	if err != nil {
		return nil, err
	}
	// The unreadable data is dropped: nothing in it can sign.
	secret.Data = nil
	if err := r.writeKeys(ctx, secret, ring, s.sd.Annotations[v1alpha1.AnnotationRotateDKIM]); err != nil {
		return nil, err
	}
	r.Recorder.Eventf(s.sd, secret, corev1.EventTypeWarning, sdReasonKeyReplaced, "ReplaceKey", "replaced the unusable keyring in Secret %s with a new key %s, as the %s annotation asked", secret.Name, ring.Active.Selector, v1alpha1.AnnotationRotateDKIM)
	return r.keysReady(s, ring)
}

func (r *SendingDomainReconciler) keysReady(s *sdState, ring *dkim.Keyring) (*sdKeys, error) {
	plan := sendingDomainRotationPolicy(s.sd.Spec.DKIM).Plan(ring, dkim.Situation{Now: s.now})
	if !plan.Wake.IsZero() {
		s.wakeIn(plan.Wake.Sub(s.now))
	}
	s.status.DKIM = sendingDomainDKIMStatus(ring, plan)
	alg, _ := ring.Active.Algorithm()
	s.condition(v1alpha1.SendingDomainKeyReady, metav1.ConditionTrue, sdReasonKeyReady, fmt.Sprintf("DKIM key %s (%s) signs", ring.Active.Selector, alg))
	return &sdKeys{ring: ring, plan: plan}, nil
}

// writeKeys stores the keyring in the Secret, creating it when it has no
// resourceVersion, and writes nothing when the data and the acted-on
// rotate value are already there.
func (r *SendingDomainReconciler) writeKeys(ctx context.Context, secret *corev1.Secret, ring *dkim.Keyring, acted string) error {
	data, err := ring.SecretData()
	if err != nil {
		return err
	}
	if secret.ResourceVersion == "" {
		secret.Data = data
		if acted != "" {
			secret.Annotations = map[string]string{v1alpha1.AnnotationRotateDKIM: acted}
		}
		return r.Create(ctx, secret)
	}
	same := maps.EqualFunc(secret.Data, data, bytes.Equal) && secret.Annotations[v1alpha1.AnnotationRotateDKIM] == acted
	if same {
		return nil
	}
	secret.Data = data
	if acted != "" {
		if secret.Annotations == nil {
			secret.Annotations = map[string]string{}
		}
		secret.Annotations[v1alpha1.AnnotationRotateDKIM] = acted
	}
	// Update, not patch: the resourceVersion guards against writing over a
	// keyring another reconcile changed meanwhile.
	return r.Update(ctx, secret)
}

// reconcileEndpoint computes the records and applies the DNSEndpoint. It
// reports whether the DNSEndpoint holds them.
func (r *SendingDomainReconciler) reconcileEndpoint(ctx context.Context, s *sdState, ring *dkim.Keyring) ([]dnsrecord.Record, bool, error) {
	sd := s.sd
	ns, name := sendingDomainPoolKey(sd)
	var pool v1alpha1.RelayPool
	if err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &pool); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, false, err
		}
		s.condition(v1alpha1.SendingDomainDNSPublished, metav1.ConditionFalse, sdReasonPoolNotFound,
			fmt.Sprintf("RelayPool %s/%s does not exist; its sending IPs are needed for SPF", ns, name))
		return nil, false, nil
	}
	allowed, err := r.poolAllows(ctx, &pool, sd.Namespace)
	if err != nil {
		return nil, false, err
	}
	if !allowed {
		s.condition(v1alpha1.SendingDomainDNSPublished, metav1.ConditionFalse, sdReasonPoolNotAllowed,
			fmt.Sprintf("RelayPool %s/%s does not allow namespace %s (spec.allowedNamespaces)", ns, name, sd.Namespace))
		return nil, false, nil
	}

	keys, err := ring.Published()
	if err != nil {
		return nil, false, err
	}
	records, err := sendingDomainRecords(sd, pool.Spec.SendingIPs, keys)
	if err != nil {
		s.condition(v1alpha1.SendingDomainDNSPublished, metav1.ConditionFalse, sdReasonInvalidRecords, err.Error())
		return nil, false, nil
	}
	spec, err := sendingDomainEndpointSpec(sd, records)
	if err != nil {
		s.condition(v1alpha1.SendingDomainDNSPublished, metav1.ConditionFalse, sdReasonInvalidRecords, err.Error())
		return nil, false, nil
	}

	ep := &externaldnsv1alpha1.DNSEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: sd.Namespace, Name: sd.Name}}
	err = r.Get(ctx, client.ObjectKeyFromObject(ep), ep)
	switch {
	case apierrors.IsNotFound(err):
		ep.Labels = map[string]string{SendingDomainSecretLabel: sd.Name, "app.kubernetes.io/managed-by": "mailroom"}
		ep.Spec = spec
		if err := controllerutil.SetControllerReference(sd, ep, r.Scheme); err != nil {
			return nil, false, err
		}
		if err := r.Create(ctx, ep); err != nil {
			return nil, false, err
		}
	case err != nil:
		return nil, false, err
	case !metav1.IsControlledBy(ep, sd):
		s.condition(v1alpha1.SendingDomainDNSPublished, metav1.ConditionFalse, sdReasonConflict,
			fmt.Sprintf("DNSEndpoint %s exists and is not owned by this SendingDomain", ep.Name))
		return nil, false, nil
	case !equality.Semantic.DeepEqual(ep.Spec, spec):
		ep.Spec = spec
		if err := r.Update(ctx, ep); err != nil {
			return nil, false, err
		}
	}
	msg := fmt.Sprintf("DNSEndpoint %s holds %d records", ep.Name, len(records))
	if ep.Status.ObservedGeneration < ep.Generation {
		msg += "; external-dns has not read this version yet"
	}
	s.condition(v1alpha1.SendingDomainDNSPublished, metav1.ConditionTrue, sdReasonPublished, msg)
	if ep.Status.ObservedGeneration < ep.Generation {
		// Nothing watches external-dns' progress but the DNSEndpoint watch;
		// look again so the message does not stay stale.
		s.wakeIn(30 * time.Second)
	}
	return records, true, nil
}

// poolAllows applies the pool's spec.allowedNamespaces to namespace ns.
func (r *SendingDomainReconciler) poolAllows(ctx context.Context, pool *v1alpha1.RelayPool, ns string) (bool, error) {
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

// verify looks the records up when a check is due and records the result.
func (r *SendingDomainReconciler) verify(ctx context.Context, s *sdState, records []dnsrecord.Record) {
	sd := s.sd
	interval := sendingDomainVerifyInterval(sd.Spec.DNS)
	minBackoff := r.MinVerifyBackoff
	if minBackoff == 0 {
		minBackoff = sdDefaultMinVerifyBackoff
	}
	prev := meta.FindStatusCondition(s.status.Conditions, v1alpha1.SendingDomainDNSVerified)
	sameRecords := sendingDomainRecordsChecked(s.status.Records, records)

	key := types.NamespacedName{Namespace: sd.Namespace, Name: sd.Name}
	r.mu.Lock()
	last, checked := r.lastCheck[key]
	r.mu.Unlock()
	checked = checked && last.uid == sd.UID && prev != nil && sameRecords
	if checked {
		verified := last.failingSince.IsZero()
		due := last.at.Add(sendingDomainVerifyDelay(interval, minBackoff, verified, last.at.Sub(last.failingSince)))
		if s.now.Before(due) {
			// Not due: the last result still stands for this generation.
			s.condition(prev.Type, prev.Status, prev.Reason, prev.Message)
			if c := meta.FindStatusCondition(s.status.Conditions, v1alpha1.SendingDomainSPFLookupLimit); c != nil {
				s.condition(c.Type, c.Status, c.Reason, c.Message)
			}
			s.wakeIn(due.Sub(s.now))
			return
		}
	}

	resolvers, err := dnsrecord.ResolverAddrs(sd.Spec.DNS.Verify.Resolvers, r.resolvConf())
	var checks []dnsrecord.Check
	if err != nil {
		for _, rec := range records {
			checks = append(checks, dnsrecord.Check{Record: rec, Reason: err.Error(), Unreachable: true})
		}
	} else {
		v := dnsrecord.Verifier{Resolvers: resolvers, QueryTimeout: r.QueryTimeout}
		checks = v.Verify(ctx, records)
		r.countSPFLookups(ctx, s, v, records)
	}
	status, reason, msg := sendingDomainVerifiedCondition(checks)
	failingSince := time.Time{}
	if status != metav1.ConditionTrue {
		// A new set of records (a new key, a changed spec) starts a new
		// streak: external-dns needs a moment for it, so the first retry
		// comes soon again.
		failingSince = s.now
		if checked && !last.failingSince.IsZero() {
			failingSince = last.failingSince
		}
	}
	r.mu.Lock()
	if r.lastCheck == nil {
		r.lastCheck = map[types.NamespacedName]sdLastCheck{}
	}
	r.lastCheck[key] = sdLastCheck{uid: sd.UID, at: s.now, failingSince: failingSince}
	r.mu.Unlock()

	newRecords := sendingDomainRecordStatus(checks)
	if !equality.Semantic.DeepEqual(newRecords, s.status.Records) {
		s.status.Records = newRecords
		t := metav1.NewTime(s.now.Truncate(time.Second))
		s.status.LastVerified = &t
	}
	if prev == nil || prev.Status != status || prev.Reason != reason || prev.Message != msg {
		if status == metav1.ConditionTrue {
			r.Recorder.Eventf(sd, nil, corev1.EventTypeNormal, sdReasonVerified, "VerifyDNS", "%s", msg)
		} else {
			r.Recorder.Eventf(sd, nil, corev1.EventTypeWarning, sdReasonVerifyFailed, "VerifyDNS", "%s: %s", reason, msg)
		}
	}
	s.condition(v1alpha1.SendingDomainDNSVerified, status, reason, msg)
	s.wakeIn(sendingDomainVerifyDelay(interval, minBackoff, status == metav1.ConditionTrue, s.now.Sub(failingSince)))
}

// countSPFLookups sets SPFLookupLimitExceeded from the published SPF record
// and what its includes cost in DNS now. A resolver that does not answer
// leaves the condition as it was.
func (r *SendingDomainReconciler) countSPFLookups(ctx context.Context, s *sdState, v dnsrecord.Verifier, records []dnsrecord.Record) {
	i := slices.IndexFunc(records, func(rec dnsrecord.Record) bool { return rec.Kind == dnsrecord.KindSPF })
	if i < 0 {
		meta.RemoveStatusCondition(&s.status.Conditions, v1alpha1.SendingDomainSPFLookupLimit)
		return
	}
	count, err := v.CountSPFLookups(ctx, records[i].Value)
	if err != nil {
		return
	}
	msg := fmt.Sprintf("the SPF record at %s needs %d of %d DNS lookups", records[i].Name, count.Lookups, dnsrecord.SPFLookupLimit)
	if len(count.Incomplete) > 0 {
		msg += fmt.Sprintf(" (at least; could not follow %v)", count.Incomplete)
	}
	if !count.Exceeded() {
		s.condition(v1alpha1.SendingDomainSPFLookupLimit, metav1.ConditionFalse, sdReasonWithinLimit, msg)
		return
	}
	msg = fmt.Sprintf("the SPF record at %s needs more than %d DNS lookups (counted %d, nested includes followed): receivers will return permerror; include fewer senders", records[i].Name, dnsrecord.SPFLookupLimit, count.Lookups)
	if c := meta.FindStatusCondition(s.status.Conditions, v1alpha1.SendingDomainSPFLookupLimit); c == nil || c.Status != metav1.ConditionTrue {
		r.Recorder.Eventf(s.sd, nil, corev1.EventTypeWarning, sdReasonLookupsExceeded, "VerifyDNS", "%s", msg)
	}
	s.condition(v1alpha1.SendingDomainSPFLookupLimit, metav1.ConditionTrue, sdReasonLookupsExceeded, msg)
}

func (r *SendingDomainReconciler) resolvConf() string {
	if r.ResolvConf == "" {
		return "/etc/resolv.conf"
	}
	return r.ResolvConf
}

// setReady derives Ready from KeyReady, DNSPublished and DNSVerified.
func (r *SendingDomainReconciler) setReady(s *sdState) {
	for _, typ := range []string{v1alpha1.SendingDomainKeyReady, v1alpha1.SendingDomainDNSPublished, v1alpha1.SendingDomainDNSVerified} {
		c := meta.FindStatusCondition(s.status.Conditions, typ)
		if c == nil || c.ObservedGeneration != s.sd.Generation {
			s.condition(v1alpha1.ConditionReady, metav1.ConditionFalse, sdReasonPending, typ+" is not known yet")
			return
		}
		if c.Status != metav1.ConditionTrue {
			s.condition(v1alpha1.ConditionReady, metav1.ConditionFalse, c.Reason, typ+": "+c.Message)
			return
		}
	}
	s.condition(v1alpha1.ConditionReady, metav1.ConditionTrue, sdReasonReady, "mail for "+s.sd.Spec.Domain+" is signed and its records resolve")
}

// writeStatus writes status when it differs from what the API server has.
func (r *SendingDomainReconciler) writeStatus(ctx context.Context, sd *v1alpha1.SendingDomain, status v1alpha1.SendingDomainStatus) error {
	if equality.Semantic.DeepEqual(sd.Status, status) {
		return nil
	}
	sd.Status = status
	return r.Status().Update(ctx, sd)
}
