// Package sendingdomain reconciles SendingDomains: it keeps a domain's DKIM
// keys, the DNSEndpoint publishing its records, and its status in line with
// its spec and with what DNS really serves.
//
// One reconcile has the shape every mailroom reconciler has: gather every
// input into one value, render desired objects with pure functions, apply
// them server-side (an unchanged world writes nothing), and derive the
// conditions from ordered checks. The files follow the concerns:
//
//	reconciler.go    setup, watches, and Reconcile: the steps in order
//	inputs.go        gather: everything one reconcile reads
//	keys.go          DKIM keys: create, adopt, rotate, replace; the key Secret
//	records.go       the SPF, DKIM and DMARC records and their DNSEndpoint
//	verification.go  looking the records up: when, how often, what it found
//	readiness.go     the ordered checks behind Ready; reasons
package sendingdomain

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	externaldnsv1alpha1 "sigs.k8s.io/external-dns/apis/v1alpha1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/apply"
	"mailroom.io/mailroom/internal/controller/conditions"
)

// +kubebuilder:rbac:groups=mailroom.io,resources=sendingdomains,verbs=get;list;watch
// +kubebuilder:rbac:groups=mailroom.io,resources=sendingdomains/status,verbs=get;patch
// +kubebuilder:rbac:groups=mailroom.io,resources=relaypools,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=externaldns.k8s.io,resources=dnsendpoints,verbs=get;list;watch;create;patch

// Reconciler keeps a SendingDomain's DKIM keys, its DNSEndpoint and its
// status in line with its spec and with DNS.
type Reconciler struct {
	client.Client
	// APIReader reads what the cache does not hold: the manager caches only
	// the Secrets mailroom labels as its own, so a key Secret made outside
	// mailroom is read live. nil means Client.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
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
	// MinVerifyBackoff is the retry delay after a failed verification,
	// and the one while external-dns publishes; zero means 5s.
	MinVerifyBackoff time.Duration

	// lastCheck remembers, per SendingDomain, when its records were last
	// looked up (verification.go). It is deliberately not in status:
	// writing a timestamp at every check would make an unchanged domain
	// write to the API server every interval. After a restart every domain
	// is simply checked once.
	mu        sync.Mutex
	lastCheck map[types.NamespacedName]lastCheck
}

// SetupWithManager registers the reconciler: it watches SendingDomains,
// the DNSEndpoints they own (external-dns' status on them says when it has
// read the records), their DKIM Secrets, and the RelayPools they reference.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := r.SetupIndexes(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return err
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("sendingdomain-controller")
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("sendingdomain").
		// Status writes do not change the generation; the rotate annotation
		// does not either, so it is watched on its own.
		For(&v1alpha1.SendingDomain{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		// Every change, status included: external-dns sets
		// status.observedGeneration when it has read the records, which is
		// when verification should look again (verification.go).
		Owns(&externaldnsv1alpha1.DNSEndpoint{}).
		// Only Secrets in the manager's cache: those mailroom labels.
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

// Field indexes Reconcile lists by.
const (
	indexDomain = "spec.domain"
	indexPool   = "spec.poolRef"
)

// SetupIndexes registers the cache indexes Reconcile lists by: domains by
// spec.domain (conflicts) and by pool (pool changes). SetupWithManager
// calls it; tests that call Reconcile directly call it themselves.
func (r *Reconciler) SetupIndexes(ctx context.Context, idx client.FieldIndexer) error {
	if err := idx.IndexField(ctx, &v1alpha1.SendingDomain{}, indexDomain, func(o client.Object) []string {
		return []string{o.(*v1alpha1.SendingDomain).Spec.Domain}
	}); err != nil {
		return err
	}
	return idx.IndexField(ctx, &v1alpha1.SendingDomain{}, indexPool, func(o client.Object) []string {
		ns, name := poolKey(o.(*v1alpha1.SendingDomain))
		return []string{ns + "/" + name}
	})
}

func (r *Reconciler) secretToDomain(_ context.Context, o client.Object) []ctrl.Request {
	name, ok := o.GetLabels()[SecretLabel]
	if !ok {
		return nil
	}
	return []ctrl.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

func (r *Reconciler) poolToDomains(ctx context.Context, o client.Object) []ctrl.Request {
	var list v1alpha1.SendingDomainList
	if err := r.List(ctx, &list, client.MatchingFields{indexPool: o.GetNamespace() + "/" + o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "listing SendingDomains of a RelayPool")
		return nil
	}
	return requests(list.Items, nil)
}

func (r *Reconciler) domainToRivals(ctx context.Context, o client.Object) []ctrl.Request {
	var list v1alpha1.SendingDomainList
	if err := r.List(ctx, &list, client.MatchingFields{indexDomain: o.(*v1alpha1.SendingDomain).Spec.Domain}); err != nil {
		log.FromContext(ctx).Error(err, "listing SendingDomains of a domain")
		return nil
	}
	return requests(list.Items, o)
}

func requests(items []v1alpha1.SendingDomain, except client.Object) []ctrl.Request {
	var out []ctrl.Request
	for _, sd := range items {
		if except != nil && sd.UID == except.GetUID() {
			continue
		}
		out = append(out, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: sd.Namespace, Name: sd.Name}})
	}
	return out
}

func (r *Reconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

func (r *Reconciler) random() io.Reader {
	if r.Random == nil {
		return rand.Reader
	}
	return r.Random
}

func (r *Reconciler) apiReader() client.Reader {
	if r.APIReader == nil {
		return r.Client
	}
	return r.APIReader
}

// state is one reconcile: its inputs, the status it builds, the verdict of
// each concern for the readiness checks, and when to look again.
type state struct {
	in       *inputs
	status   v1alpha1.SendingDomainStatus
	set      conditions.Setter
	verdicts verdicts
	// endpointRead: external-dns has read the DNSEndpoint as it now is
	// (records.go); verification reacts to it.
	endpointRead bool
	requeue      time.Duration
}

func newState(in *inputs) *state {
	s := &state{in: in, status: *in.sd.Status.DeepCopy(), verdicts: pendingVerdicts()}
	s.status.ObservedGeneration = in.sd.Generation
	s.set = conditions.Setter{Conditions: &s.status.Conditions, Generation: in.sd.Generation, Now: in.now}
	return s
}

// report sets condition typ from a concern's verdict and keeps the verdict
// for the readiness checks.
func (s *state) report(typ string, v conditions.Verdict, okReason, okMessage string) {
	s.verdicts[typ] = v
	s.set.SetBool(typ, v, okReason, okMessage)
}

// wakeIn asks for another reconcile after d at the latest.
func (s *state) wakeIn(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	if s.requeue == 0 || d < s.requeue {
		s.requeue = d
	}
}

// Reconcile brings one SendingDomain in line: gather, keys, records,
// verification, then the conditions and one status write.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	in, err := r.gather(ctx, req.NamespacedName)
	if err != nil {
		return r.retry(ctx, err)
	}
	if in == nil {
		// Deleted, or being deleted. The DNSEndpoint goes with it (owner
		// reference); the key Secret stays, on purpose.
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	s := newState(in)
	// On error, status still records what is known.
	err = r.reconcile(ctx, s)
	r.setReadiness(s)
	if serr := r.writeStatus(ctx, in.sd, s.status); serr != nil {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return r.retry(ctx, err)
	}
	res := ctrl.Result{RequeueAfter: s.requeue}
	if s.verdicts[v1alpha1.SendingDomainKeyReady].State == conditions.OK {
		// The follow-ups of a domain with a key (mostly DNS checks, a few
		// milliseconds) go ahead of first reconciles, which generate a key
		// (up to a second of CPU for RSA): with hundreds of new domains,
		// Ready keeps following the records rather than the backlog.
		res.Priority = ptr.To(followUpPriority)
	}
	return res, nil
}

// followUpPriority is the work queue priority of a keyed domain's requeues;
// events have priority 0 (controller-runtime's priority queue).
const followUpPriority = 1

func (r *Reconciler) reconcile(ctx context.Context, s *state) error {
	if r.checkConflict(s) {
		return nil
	}
	keys, err := r.reconcileKeys(ctx, s)
	if err != nil || keys == nil {
		// No usable key: leave what is published alone rather than withdraw
		// the record of a key the relay may still sign with.
		return err
	}
	records, published, err := r.reconcileRecords(ctx, s, keys.ring)
	if err != nil || !published {
		return err
	}
	r.verify(ctx, s, records)
	r.checkSigning(s, keys.ring.Active.Selector)
	if keys.plan.WaitingForNext && nextVerified(s, keys.ring) {
		// The switch waited for exactly this result: make it now.
		s.wakeIn(time.Second)
	}
	return nil
}

// retry turns the errors of a normal race into a quiet requeue: a Conflict
// from the keyring's resourceVersion guard (the cache had not seen the
// last write yet), or NotFound from a write to a domain deleted meanwhile,
// is retried without an ERROR in the log. Anything else is returned, for
// controller-runtime to log and retry with backoff.
func (r *Reconciler) retry(ctx context.Context, err error) (ctrl.Result, error) {
	if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) {
		log.FromContext(ctx).V(1).Info("retrying after a concurrent change", "reason", err.Error())
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	return ctrl.Result{}, err
}

// writeStatus applies status when it differs from what was read. Status
// has one writer and goes by server-side apply, so it never conflicts.
func (r *Reconciler) writeStatus(ctx context.Context, sd *v1alpha1.SendingDomain, status v1alpha1.SendingDomainStatus) error {
	if equality.Semantic.DeepEqual(sd.Status, status) {
		return nil
	}
	obj := sd.DeepCopy()
	obj.Status = status
	return apply.Status(ctx, r.Client, r.Scheme, obj)
}
