// Package conditions computes the status conditions every mailroom kind
// carries: Ready from an ordered list of pure checks (the first that fails
// decides, as in cert-manager's readiness policies), and the kstatus
// conditions Reconciling and Stalled that Flux, Argo CD and kstatus read.
//
// A check looks at gathered inputs only; it never calls the API server, so
// the whole chain is testable without a cluster.
package conditions

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types shared by every kind.
const (
	Ready       = "Ready"
	Reconciling = "Reconciling"
	Stalled     = "Stalled"
)

// State says how a failing check blocks readiness.
type State int

const (
	// OK: the check passes.
	OK State = iota
	// Progressing: the operator (or something it waits for) is still
	// working; no change from the user is needed. Reconciling=True.
	Progressing
	// Blocked: nothing moves until the user changes something (a missing
	// reference, a refusal, an invalid key). Stalled=True.
	Blocked
)

// Verdict is a check's result. Reason is CamelCase; Message says what is
// wrong and, for Blocked, what to change.
type Verdict struct {
	State   State
	Reason  string
	Message string
}

// Pass is the verdict of a passing check.
func Pass() Verdict { return Verdict{} }

// Wait is the verdict of a check still in progress.
func Wait(reason, message string) Verdict {
	return Verdict{State: Progressing, Reason: reason, Message: message}
}

// Block is the verdict of a check that needs the user.
func Block(reason, message string) Verdict {
	return Verdict{State: Blocked, Reason: reason, Message: message}
}

// Check is one readiness check over the gathered inputs T.
type Check[T any] func(T) Verdict

// Chain is an ordered list of checks.
type Chain[T any] []Check[T]

// Evaluate returns the verdict of the first failing check, or Pass.
func (c Chain[T]) Evaluate(in T) Verdict {
	for _, check := range c {
		if v := check(in); v.State != OK {
			return v
		}
	}
	return Pass()
}

// Setter writes conditions of one object's status.
type Setter struct {
	Conditions *[]metav1.Condition
	Generation int64
	// Now stamps lastTransitionTime when a condition changes. It is
	// truncated to seconds, as the API server stores it, so an unchanged
	// status compares equal and writes nothing.
	Now time.Time
}

// Set sets one condition.
func (s Setter) Set(typ string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(s.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: message,
		ObservedGeneration: s.Generation,
		LastTransitionTime: metav1.NewTime(s.Now.Truncate(time.Second)),
	})
}

// SetBool sets a condition True with okReason/okMessage when v passes and
// False with v's reason and message otherwise.
func (s Setter) SetBool(typ string, v Verdict, okReason, okMessage string) {
	if v.State == OK {
		s.Set(typ, metav1.ConditionTrue, okReason, okMessage)
		return
	}
	s.Set(typ, metav1.ConditionFalse, v.Reason, v.Message)
}

// Remove drops a condition.
func (s Setter) Remove(typ string) { meta.RemoveStatusCondition(s.Conditions, typ) }

// SetReadiness sets Ready from v and the kstatus pair from v's state:
// Reconciling=True while progressing, Stalled=True while blocked, both
// absent when ready (kstatus treats them as abnormal-true conditions).
func (s Setter) SetReadiness(v Verdict, okReason, okMessage string) {
	s.SetReadinessAndProgress(v, Pass(), okReason, okMessage)
}

// SetReadinessAndProgress is SetReadiness for an object that can be Ready
// while work is still in flight (progress): then Ready is True and
// Reconciling=True carries progress's reason. Each condition is set once,
// so an unchanged state keeps its lastTransitionTime and writes nothing.
func (s Setter) SetReadinessAndProgress(v, progress Verdict, okReason, okMessage string) {
	s.SetBool(Ready, v, okReason, okMessage)
	if v.State == OK && progress.State != OK {
		v = Verdict{State: Progressing, Reason: progress.Reason, Message: progress.Message}
	}
	switch v.State {
	case OK:
		s.Remove(Reconciling)
		s.Remove(Stalled)
	case Progressing:
		s.Set(Reconciling, metav1.ConditionTrue, v.Reason, v.Message)
		s.Remove(Stalled)
	case Blocked:
		s.Set(Stalled, metav1.ConditionTrue, v.Reason, v.Message)
		s.Remove(Reconciling)
	}
}

// Changed reports whether condition typ differs between old and new in
// status, reason or message: the transitions worth an Event.
func Changed(old, new []metav1.Condition, typ string) bool {
	a, b := meta.FindStatusCondition(old, typ), meta.FindStatusCondition(new, typ)
	if a == nil || b == nil {
		return (a == nil) != (b == nil)
	}
	return a.Status != b.Status || a.Reason != b.Reason || a.Message != b.Message
}
