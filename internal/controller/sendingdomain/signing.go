package sendingdomain

import (
	"fmt"
	"strconv"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/attachment"
	"mailroom.io/mailroom/internal/controller/conditions"
	"mailroom.io/mailroom/internal/relayconfig"
)

// This file is the signing concern: the domain's active key is in the
// relay configuration the RelayPool controller rendered, and every ready
// relay of the pool has loaded a revision holding it. Until then mail for
// the domain goes out unsigned or with a key DNS may no longer publish,
// so Ready waits for it.

// Reasons of the Signing condition.
const (
	ReasonSigning         = "Signing"
	ReasonConfigPending   = "ConfigPending"
	ReasonNoReadyRelays   = "NoReadyRelays"
	ReasonRevisionPending = "RevisionPending"
)

// checkSigning reports the Signing condition for the active selector.
func (r *Reconciler) checkSigning(s *state, selector string) {
	pool := s.in.pool
	v := signingVerdict(s.in, selector)
	s.report(v1alpha1.SendingDomainSigning, v, ReasonSigning,
		fmt.Sprintf("every ready relay of RelayPool %s/%s signs with selector %s", pool.Namespace, pool.Name, selector))
}

func signingVerdict(in *inputs, selector string) conditions.Verdict {
	pool, domain := in.pool, in.sd.Spec.Domain
	name := pool.Namespace + "/" + pool.Name
	if in.shard == nil {
		return conditions.Wait(ReasonConfigPending, fmt.Sprintf("RelayPool %s has not rendered its relay configuration yet", name))
	}
	sh, err := relayconfig.ReadShard(in.shard.Data)
	if err != nil {
		return conditions.Wait(ReasonConfigPending, fmt.Sprintf("the relay configuration of RelayPool %s is unreadable: %v", name, err))
	}
	signs := ""
	for _, d := range sh.Domains {
		if d.Name == domain && len(d.Keys) > 0 {
			signs = d.Keys[0].Selector
		}
	}
	switch {
	case signs == "":
		return conditions.Wait(ReasonConfigPending, fmt.Sprintf("the relay configuration of RelayPool %s does not hold %s yet", name, domain))
	case signs != selector:
		return conditions.Wait(ReasonConfigPending, fmt.Sprintf("the relay configuration of RelayPool %s signs with selector %s; waiting for %s", name, signs, selector))
	}
	rev, _ := strconv.ParseInt(in.shard.Annotations[attachment.AnnotationConfigRevision], 10, 64)
	if pool.Status.ReadyReplicas == 0 {
		return conditions.Wait(ReasonNoReadyRelays, fmt.Sprintf("RelayPool %s has no ready relay pods; the key is in configuration revision %d", name, rev))
	}
	if pool.Status.AppliedRevision < rev {
		return conditions.Wait(ReasonRevisionPending, fmt.Sprintf("the key is in configuration revision %d; the ready relays of RelayPool %s run revision %d or later", rev, name, pool.Status.AppliedRevision))
	}
	return conditions.Pass()
}
