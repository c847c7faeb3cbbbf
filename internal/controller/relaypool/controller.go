// Package relaypool is the RelayPool controller: it renders the relay
// configuration (internal/relayconfig) into the pool's config Secrets and
// runs the relays as a StatefulSet behind Services, with a
// PodDisruptionBudget, a NetworkPolicy and operator-issued certificates.
// Scaling down first drains the departing pods (they hand their queue to
// the others over the peer path); status reports the configuration
// revision every ready relay has loaded.
package relaypool

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"maps"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/relayconfig"
)

// +kubebuilder:rbac:groups=mailroom.io,resources=relaypools,verbs=get;list;watch
// +kubebuilder:rbac:groups=mailroom.io,resources=relaypools/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=mailroom.io,resources=sendingdomains,verbs=get;list;watch
// +kubebuilder:rbac:groups=mailroom.io,resources=smtpcredentials,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=configmaps;services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete

// Reconciler reconciles RelayPools.
type Reconciler struct {
	client.Client
	// APIReader reads Secrets the manager does not cache (users' Secrets).
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	// RelayImage is used when a pool names no image: the image matching
	// the operator's own version.
	RelayImage string
	// Relays reads each relay pod's /status; nil means HTTP on the pod IP.
	Relays StatusReader
	Clock  clock.PassiveClock
	// Random feeds key generation; nil means crypto/rand.
	Random io.Reader

	keys keyCache
}

func (r *Reconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// Reconcile renders and applies everything of one pool and reports on it.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var pool v1alpha1.RelayPool
	if err := r.Get(ctx, req.NamespacedName, &pool); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !pool.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // owner references clean up; claims follow spec.storage.whenDeleted
	}
	if r.Relays == nil {
		r.Relays = HTTPStatusReader{}
	}
	if r.Random == nil {
		r.Random = rand.Reader
	}
	w, err := r.gather(ctx, &pool)
	if err != nil {
		return ctrl.Result{}, err
	}
	plan, err := r.plan(w)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.applyPlan(ctx, w, plan); err != nil {
		return ctrl.Result{}, err
	}
	return r.report(ctx, w, plan)
}

// plan is the rendered desired state of a pool.
type plan struct {
	configErr string
	oversized []int
	revision  int64
	bumped    bool
	secrets   []*corev1.Secret // config Secrets, in order: shards, then main
	certs     *issued
	caMap     *corev1.ConfigMap
	sts       *appsv1.StatefulSet
	services  []*corev1.Service
	pdb       *policyv1.PodDisruptionBudget
	netpol    *networkingv1.NetworkPolicy
	drain     []string
	draining  bool // replicas wait for the drain
	desired   int32
	members   int32
}

func (r *Reconciler) plan(w *world) (*plan, error) {
	p := &plan{desired: 1}
	if w.pool.Spec.Replicas != nil {
		p.desired = *w.pool.Spec.Replicas
	}
	current := p.desired
	if w.sts != nil && w.sts.Spec.Replicas != nil {
		current = *w.sts.Spec.Replicas
	}
	p.members = max(p.desired, current)
	stsReplicas := p.desired
	if p.desired > 0 && p.desired < current {
		// Scale-down: the departing pods hand their queue over first.
		for i := p.desired; i < current; i++ {
			p.drain = append(p.drain, fmt.Sprintf("%s-%d", relayconfig.StatefulSetName(w.pool.Name), i))
		}
		for _, name := range p.drain {
			if !drained(w, name) {
				p.draining = true
			}
		}
		if p.draining {
			stsReplicas = current
		}
	}

	rendered, err := relayconfig.Render(relayconfig.Input{
		Pool: w.pool, Domains: w.domains, Credentials: w.credentials, SmarthostLogin: w.smarthostLogin,
		Members: p.members, Drain: p.drain,
	})
	if err != nil {
		return nil, err
	}
	p.oversized = rendered.Oversized
	for _, i := range rendered.Oversized {
		// Keep what the relays run for a shard that no longer fits.
		if live := w.configSecrets[relayconfig.ShardSecretName(w.pool.Name, i)]; live != nil {
			rendered.Shards[i] = live.Data
		} else {
			rendered.Shards[i] = map[string][]byte{relayconfig.ShardFile(i): []byte("{}\n")}
		}
	}
	if err := rendered.Validate(); err != nil {
		p.configErr = err.Error()
	}

	mainName := relayconfig.MainSecretName(w.pool.Name)
	liveRev := int64(0)
	if m := w.configSecrets[mainName]; m != nil {
		liveRev, _ = strconv.ParseInt(m.Annotations[AnnotationRevision], 10, 64)
	}
	mainData, err := rendered.Finish(liveRev)
	if err != nil {
		return nil, err
	}
	changed := !sameData(w.configSecrets[mainName], mainData)
	shardChanged := make([]bool, relayconfig.NumShards)
	for i := range rendered.Shards {
		shardChanged[i] = !sameData(w.configSecrets[relayconfig.ShardSecretName(w.pool.Name, i)], rendered.Shards[i])
		changed = changed || shardChanged[i]
	}
	p.revision = liveRev
	if changed && p.configErr == "" {
		p.revision, p.bumped = liveRev+1, true
		if mainData, err = rendered.Finish(p.revision); err != nil {
			return nil, err
		}
	}
	for i := range rendered.Shards {
		name := relayconfig.ShardSecretName(w.pool.Name, i)
		rev := p.revision
		if live := w.configSecrets[name]; live != nil && !shardChanged[i] {
			rev, _ = strconv.ParseInt(live.Annotations[AnnotationRevision], 10, 64)
		}
		p.secrets = append(p.secrets, ConfigSecret(w.pool, name, strconv.Itoa(i), rev, rendered.Shards[i]))
	}
	p.secrets = append(p.secrets, ConfigSecret(w.pool, mainName, "main", p.revision, mainData))

	if p.certs, err = certificates(w, r.Random); err != nil {
		return nil, err
	}
	p.caMap = &corev1.ConfigMap{ObjectMeta: objMeta(w.pool, CAConfigMapName(w.pool.Name)), Data: map[string]string{"ca.crt": string(p.certs.caPEM)}}

	image := w.pool.Spec.Image
	if image == "" {
		image = r.RelayImage
	}
	grace := int64((rendered.ShutdownBudget() + time.Second - 1) / time.Second)
	if p.sts, err = StatefulSet(w.pool, image, stsReplicas, grace); err != nil {
		return nil, err
	}
	p.services = Services(w.pool)
	p.pdb = PodDisruptionBudget(w.pool, p.desired)
	p.netpol = NetworkPolicy(w.pool)
	return p, nil
}

// drained reports whether a departing pod has handed over its queue (or
// does not exist).
func drained(w *world, name string) bool {
	for i := range w.pods {
		if w.pods[i].Name == name {
			rep, ok := w.relays[name]
			return ok && rep.err == nil && rep.status.Draining && rep.status.Drained
		}
	}
	return true
}

func sameData(s *corev1.Secret, data map[string][]byte) bool {
	return s != nil && maps.EqualFunc(s.Data, data, bytes.Equal)
}

func (r *Reconciler) event(pool *v1alpha1.RelayPool, typ, reason, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(pool, nil, typ, reason, "Reconcile", format, args...)
	}
}

func logger(ctx context.Context) interface {
	Info(string, ...any)
} {
	return log.FromContext(ctx)
}
