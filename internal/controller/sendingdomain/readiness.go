package sendingdomain

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/conditions"
)

// This file is the readiness concern: Ready is the first of an ordered
// list of pure checks that fails (conditions.Chain), and the kstatus
// conditions Reconciling and Stalled follow from how it fails.

// Reasons of SendingDomain conditions and Events.
const (
	ReasonKeyCreated      = "KeyCreated"
	ReasonKeyAdopted      = "KeyAdopted"
	ReasonKeyReady        = "KeyReady"
	ReasonKeyInvalid      = "KeyInvalid"
	ReasonKeyMismatch     = "KeyMismatch"
	ReasonKeyReplaced     = "KeyReplaced"
	ReasonNextKeyCreated  = "NextKeyCreated"
	ReasonKeyActivated    = "KeyActivated"
	ReasonKeyWithdrawn    = "KeyWithdrawn"
	ReasonPublished       = "Published"
	ReasonPoolNotFound    = "PoolNotFound"
	ReasonPoolNotAllowed  = "PoolNotAllowed"
	ReasonInvalidRecords  = "InvalidRecords"
	ReasonConflict        = "Conflict"
	ReasonPending         = "Pending"
	ReasonReady           = "Ready"
	ReasonWithinLimit     = "WithinLimit"
	ReasonLookupsExceeded = "TooManyLookups"
	ReasonVerifyFailed    = "DNSVerificationFailed"
	ReasonVerified        = "DNSVerified"
	ReasonRecordsVerified = "RecordsVerified"
)

// conflictCheck names the verdict of the conflict check in verdicts.
const conflictCheck = "Conflict"

// verdicts holds each concern's verdict of this reconcile, by condition
// type; a concern this reconcile did not reach is pending.
type verdicts map[string]conditions.Verdict

func pendingVerdicts() verdicts {
	v := verdicts{conflictCheck: conditions.Pass()}
	for _, typ := range []string{v1alpha1.SendingDomainKeyReady, v1alpha1.SendingDomainDNSPublished, v1alpha1.SendingDomainDNSVerified, v1alpha1.SendingDomainSigning} {
		v[typ] = conditions.Wait(ReasonPending, typ+" is not known yet")
	}
	return v
}

// readiness is the order in which Ready looks at a domain: the first check
// that fails gives Ready its reason.
var readiness = conditions.Chain[*state]{
	// Another SendingDomain claims the domain for the pool first.
	func(s *state) conditions.Verdict { return s.verdicts[conflictCheck] },
	// A key signs (keys.go).
	concern(v1alpha1.SendingDomainKeyReady),
	// The DNSEndpoint holds the records (records.go).
	concern(v1alpha1.SendingDomainDNSPublished),
	// DNS serves them (verification.go).
	concern(v1alpha1.SendingDomainDNSVerified),
	// Every ready relay of the pool signs with the active key (signing.go).
	concern(v1alpha1.SendingDomainSigning),
}

// concern is the check that the concern behind condition typ passed; its
// reason is the concern's, its message names the condition.
func concern(typ string) conditions.Check[*state] {
	return func(s *state) conditions.Verdict {
		v := s.verdicts[typ]
		if v.State != conditions.OK && v.Reason != ReasonPending {
			v.Message = typ + ": " + v.Message
		}
		return v
	}
}

// setReadiness sets Ready, Reconciling and Stalled from the checks.
func (r *Reconciler) setReadiness(s *state) {
	s.set.SetReadiness(readiness.Evaluate(s), ReasonReady, "mail for "+s.in.sd.Spec.Domain+" is signed by the relays and its records resolve")
}

// checkConflict reports a conflict with an older domain; it returns true
// when there is one, and nothing else may be done for sd.
func (r *Reconciler) checkConflict(s *state) bool {
	rival := s.in.rival
	if rival == nil {
		return false
	}
	sd := s.in.sd
	v := conditions.Block(ReasonConflict, fmt.Sprintf("SendingDomain %s/%s claimed %s for this pool first", rival.Namespace, rival.Name, sd.Spec.Domain))
	s.verdicts[conflictCheck] = v
	old := slices.Clone(s.status.Conditions)
	r.setReadiness(s)
	if conditions.Changed(old, s.status.Conditions, v1alpha1.ConditionReady) {
		r.Recorder.Eventf(sd, rival, corev1.EventTypeWarning, ReasonConflict, "CheckConflict", "%s", v.Message)
	}
	return true
}

// older orders SendingDomains by age for conflicts: the earlier creation
// time wins, then namespace/name so that the order is total even within
// one second.
func older(a, b *v1alpha1.SendingDomain) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}
