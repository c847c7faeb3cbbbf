package relaypool

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/apply"
	"mailroom.io/mailroom/internal/controller/conditions"
	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/relayconfig"
)

// Reasons of RelayPool conditions.
const (
	ReasonReady            = "Ready"
	ReasonApplied          = "Applied"
	ReasonInvalidConfig    = "InvalidConfig"
	ReasonCapacity         = "CapacityExceeded"
	ReasonTLS              = "TLSSecretInvalid"
	ReasonSmarthost        = "SmarthostCredentialsInvalid"
	ReasonScaledToZero     = "ScaledToZero"
	ReasonNoReadyRelays    = "NoReadyRelays"
	ReasonRevisionPending  = "RevisionPending"
	ReasonRelayUnreachable = "RelayUnreachable"
	ReasonScalingDown      = "ScalingDown"
	ReasonBouncesSigned    = "BouncesSigned"
	ReasonBouncesUnsigned  = "HostnameNotCovered"
)

// observed is what the pool's status is computed from.
type observed struct {
	w        *world
	p        *plan
	ready    []string // ready, non-draining pods
	applied  int64    // oldest revision among them
	behind   []string // ready pods on an older revision, or silent
	silent   []string
	draining []string // departing pods still holding mail
}

func observe(w *world, p *plan) *observed {
	o := &observed{w: w, p: p}
	for i := range w.pods {
		pod := &w.pods[i]
		if pod.DeletionTimestamp != nil || slices.Contains(p.drain, pod.Name) {
			if slices.Contains(p.drain, pod.Name) && !drained(w, pod.Name) {
				rep := w.relays[pod.Name]
				o.draining = append(o.draining, fmt.Sprintf("%s (%d messages left)", pod.Name, rep.status.Queued))
			}
			continue
		}
		if !podReady(pod) {
			continue
		}
		o.ready = append(o.ready, pod.Name)
		rep, ok := w.relays[pod.Name]
		switch {
		case !ok || rep.err != nil:
			o.silent = append(o.silent, pod.Name)
			o.behind = append(o.behind, pod.Name)
			o.applied = -1
		case o.applied >= 0 && (o.applied == 0 || rep.status.Revision < o.applied):
			o.applied = rep.status.Revision
		}
		if ok && rep.err == nil && rep.status.Revision < p.revision {
			o.behind = append(o.behind, pod.Name)
		}
	}
	if o.applied < 0 || len(o.ready) == 0 {
		o.applied = 0
	}
	slices.Sort(o.ready)
	slices.Sort(o.behind)
	return o
}

var readiness = conditions.Chain[*observed]{
	func(o *observed) conditions.Verdict {
		if o.p.configErr != "" {
			return conditions.Block(ReasonInvalidConfig, o.p.configErr+"; the relays keep their current configuration")
		}
		return conditions.Pass()
	},
	func(o *observed) conditions.Verdict {
		if len(o.p.oversized) > 0 {
			return conditions.Block(ReasonCapacity, fmt.Sprintf("config shards %v would exceed %d KiB; new domains and credentials in them are not applied (the pool holds about %d domains with RSA-2048 keys and %d credentials); split the pool",
				o.p.oversized, relayconfig.ShardCapacity>>10, relayconfig.NumShards*300, relayconfig.NumShards*2000))
		}
		return conditions.Pass()
	},
	func(o *observed) conditions.Verdict {
		if o.w.tlsErr != "" {
			return conditions.Block(ReasonTLS, o.w.tlsErr)
		}
		return conditions.Pass()
	},
	func(o *observed) conditions.Verdict {
		if o.w.smarthostErr != "" {
			return conditions.Block(ReasonSmarthost, o.w.smarthostErr)
		}
		return conditions.Pass()
	},
	func(o *observed) conditions.Verdict {
		if o.p.desired == 0 {
			return conditions.Block(ReasonScaledToZero, "spec.replicas is 0: no relay runs; queued mail stays on the volumes until the pool is scaled up")
		}
		return conditions.Pass()
	},
	func(o *observed) conditions.Verdict {
		if len(o.ready) == 0 {
			return conditions.Wait(ReasonNoReadyRelays, fmt.Sprintf("none of %d relay pods is ready", o.p.desired))
		}
		return conditions.Pass()
	},
}

// progress lists the work in flight on a usable pool: a configuration
// still reaching the relays, pods still handing over their queue. It sets
// Reconciling (kstatus InProgress) without taking Ready away, since the
// relays serve mail meanwhile.
var progress = conditions.Chain[*observed]{
	configApplied,
	func(o *observed) conditions.Verdict {
		if len(o.draining) > 0 {
			return conditions.Wait(ReasonScalingDown, "handing queues to the remaining relays before they are removed: "+strings.Join(o.draining, ", "))
		}
		return conditions.Pass()
	},
}

func configApplied(o *observed) conditions.Verdict {
	if len(o.ready) == 0 {
		return conditions.Wait(ReasonNoReadyRelays, fmt.Sprintf("no relay pod is ready, so none runs configuration revision %d yet", o.p.revision))
	}
	if len(o.silent) > 0 {
		return conditions.Wait(ReasonRelayUnreachable, fmt.Sprintf("relay pods %s do not answer on /status", strings.Join(o.silent, ", ")))
	}
	if len(o.behind) > 0 {
		return conditions.Wait(ReasonRevisionPending, fmt.Sprintf("%d of %d ready relays run revision %d; waiting for %s to load it",
			len(o.ready)-len(o.behind), len(o.ready), o.p.revision, strings.Join(o.behind, ", ")))
	}
	return conditions.Pass()
}

// report writes status and decides when to look again.
func (r *Reconciler) report(ctx context.Context, w *world, p *plan) (ctrl.Result, error) {
	pool := w.pool
	o := observe(w, p)
	st := *pool.Status.DeepCopy()
	st.ObservedGeneration = pool.Generation
	st.Endpoint = relayconfig.Endpoint(pool)
	st.Selector = metav1.FormatLabelSelector(&metav1.LabelSelector{MatchLabels: SelectorLabels(pool)})
	st.ConfigRevision = p.revision
	st.AppliedRevision = o.applied
	st.Domains, st.Credentials = int32(len(w.domains)), int32(len(w.credentials))
	st.CAConfigMap = CAConfigMapName(pool.Name)
	st.Replicas, st.ReadyReplicas = 0, 0
	if w.sts != nil {
		st.Replicas = w.sts.Status.Replicas
	}
	st.ReadyReplicas = int32(len(o.ready))

	set := conditions.Setter{Conditions: &st.Conditions, Generation: pool.Generation, Now: w.now}
	set.SetBool(v1alpha1.RelayPoolConfigApplied, configApplied(o), ReasonApplied,
		fmt.Sprintf("all %d ready relays run configuration revision %d", len(o.ready), p.revision))
	set.SetBool(v1alpha1.RelayPoolBouncesSigned, bouncesSigned(w), ReasonBouncesSigned,
		fmt.Sprintf("DSNs from MAILER-DAEMON@%s are DKIM-signed with the key of %s", pool.Spec.Hostname, signingDomain(w)))
	rv, pv := readiness.Evaluate(o), progress.Evaluate(o)
	set.SetReadinessAndProgress(rv, pv, ReasonReady, fmt.Sprintf("%d relays accept mail at %s", len(o.ready), st.Endpoint))
	v := rv // what is still to happen, for the requeue below
	if rv.State == conditions.OK && pv.State != conditions.OK {
		v = pv
	}
	if conditions.Changed(pool.Status.Conditions, st.Conditions, conditions.Ready) {
		typ := corev1.EventTypeNormal
		if rv.State == conditions.Blocked {
			typ = corev1.EventTypeWarning
		}
		reason := rv.Reason
		if reason == "" {
			reason = ReasonReady
		}
		r.event(pool, typ, reason, "%s", conditionMessage(st.Conditions))
	}
	if !equality.Semantic.DeepEqual(pool.Status, st) {
		pool.Status = st
		if err := apply.Status(ctx, r.Client, r.Scheme, pool); err != nil {
			return ctrl.Result{}, err
		}
	}

	// Relays are polled, not watched: look again soon while anything is
	// in flight, and otherwise when a certificate or a password expires.
	next := p.certs.renewAt.Sub(w.now)
	if !w.nextExpiry.IsZero() {
		next = min(next, w.nextExpiry.Sub(w.now)+time.Second)
	}
	if v.State == conditions.Progressing {
		next = min(next, 3*time.Second)
	} else {
		next = min(next, 5*time.Minute)
	}
	return ctrl.Result{RequeueAfter: max(next, time.Second)}, nil
}

func signingDomain(w *world) string {
	signing := map[string]bool{}
	for _, d := range w.domains {
		signing[d.Name] = true
	}
	return config.SigningDomain(strings.ToLower(w.pool.Spec.Hostname), signing)
}

// bouncesSigned warns when the relays' own mail (DSNs) cannot be signed.
func bouncesSigned(w *world) conditions.Verdict {
	if signingDomain(w) != "" {
		return conditions.Pass()
	}
	h := w.pool.Spec.Hostname
	return conditions.Wait(ReasonBouncesUnsigned, fmt.Sprintf("DSNs come From: MAILER-DAEMON@%s and no SendingDomain on this pool covers %s, so they are not DKIM-signed and pass DMARC only if %s publishes SPF for the pool's sending IPs; create a SendingDomain for %s (or a parent domain) on this pool", h, h, h, h))
}

func conditionMessage(conds []metav1.Condition) string {
	for _, c := range conds {
		if c.Type == conditions.Ready {
			return c.Message
		}
	}
	return ""
}
