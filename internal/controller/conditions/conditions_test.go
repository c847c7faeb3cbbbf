package conditions

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestChainReturnsTheFirstFailure(t *testing.T) {
	var ran []string
	check := func(name string, v Verdict) Check[int] {
		return func(int) Verdict { ran = append(ran, name); return v }
	}
	c := Chain[int]{check("a", Pass()), check("b", Wait("B", "b waits")), check("c", Block("C", "c blocks"))}
	if v := c.Evaluate(0); v.Reason != "B" || v.State != Progressing {
		t.Fatalf("verdict %+v, want b's", v)
	}
	if len(ran) != 2 {
		t.Fatalf("ran %v; checks after the first failure must not run", ran)
	}
	if v := (Chain[int]{check("a", Pass())}).Evaluate(0); v.State != OK {
		t.Fatalf("all pass: %+v", v)
	}
}

func TestSetterStampsTransitionsOnly(t *testing.T) {
	var conds []metav1.Condition
	t0 := time.Date(2026, 11, 25, 9, 0, 0, 500_000_000, time.UTC)
	s := Setter{Conditions: &conds, Generation: 2, Now: t0}
	s.Set(Ready, metav1.ConditionFalse, "Pending", "waiting")
	c := meta.FindStatusCondition(conds, Ready)
	if !c.LastTransitionTime.Time.Equal(t0.Truncate(time.Second)) || c.ObservedGeneration != 2 {
		t.Fatalf("condition %+v: want the time in whole seconds and generation 2", c)
	}
	// Same status later, new generation and message: the transition time
	// stays.
	s = Setter{Conditions: &conds, Generation: 3, Now: t0.Add(time.Minute)}
	s.Set(Ready, metav1.ConditionFalse, "Pending", "still waiting")
	c = meta.FindStatusCondition(conds, Ready)
	if !c.LastTransitionTime.Time.Equal(t0.Truncate(time.Second)) || c.ObservedGeneration != 3 || c.Message != "still waiting" {
		t.Fatalf("condition %+v", c)
	}
	s.SetBool(Ready, Pass(), "Ready", "ok")
	if c = meta.FindStatusCondition(conds, Ready); c.Status != metav1.ConditionTrue || !c.LastTransitionTime.Time.Equal(t0.Add(time.Minute).Truncate(time.Second)) {
		t.Fatalf("condition %+v after the transition", c)
	}
}

func TestSetReadinessSetsTheKstatusPair(t *testing.T) {
	var conds []metav1.Condition
	s := Setter{Conditions: &conds, Generation: 1, Now: time.Unix(0, 0)}
	status := func(typ string) string {
		if c := meta.FindStatusCondition(conds, typ); c != nil {
			return string(c.Status) + "/" + c.Reason
		}
		return "-"
	}
	s.SetReadiness(Wait("RecordMissing", "not yet"), "Ready", "ok")
	if status(Ready) != "False/RecordMissing" || status(Reconciling) != "True/RecordMissing" || status(Stalled) != "-" {
		t.Fatalf("progressing: Ready %s Reconciling %s Stalled %s", status(Ready), status(Reconciling), status(Stalled))
	}
	s.SetReadiness(Block("PoolNotFound", "no pool"), "Ready", "ok")
	if status(Ready) != "False/PoolNotFound" || status(Reconciling) != "-" || status(Stalled) != "True/PoolNotFound" {
		t.Fatalf("blocked: Ready %s Reconciling %s Stalled %s", status(Ready), status(Reconciling), status(Stalled))
	}
	s.SetReadiness(Pass(), "Ready", "ok")
	if status(Ready) != "True/Ready" || status(Reconciling) != "-" || status(Stalled) != "-" {
		t.Fatalf("ready: Ready %s Reconciling %s Stalled %s", status(Ready), status(Reconciling), status(Stalled))
	}
}

func TestChanged(t *testing.T) {
	a := []metav1.Condition{{Type: Ready, Status: metav1.ConditionFalse, Reason: "X", Message: "m"}}
	b := []metav1.Condition{{Type: Ready, Status: metav1.ConditionFalse, Reason: "X", Message: "m", ObservedGeneration: 5}}
	if Changed(a, b, Ready) {
		t.Fatal("a new generation alone is not a transition")
	}
	b[0].Message = "other"
	if !Changed(a, b, Ready) || !Changed(nil, a, Ready) || !Changed(a, nil, Ready) || Changed(nil, nil, Ready) {
		t.Fatal("message change, appearance and disappearance are transitions")
	}
}

func TestProgressOnAReadyObjectKeepsItsTransitionTime(t *testing.T) {
	var conds []metav1.Condition
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	set := Setter{Conditions: &conds, Generation: 1, Now: t0}
	set.SetReadinessAndProgress(Pass(), Wait("RevisionPending", "1 of 2"), "Ready", "ok")
	set.Now = t0.Add(time.Minute)
	set.SetReadinessAndProgress(Pass(), Wait("RevisionPending", "1 of 2"), "Ready", "ok")
	r := meta.FindStatusCondition(conds, Reconciling)
	if r == nil || r.Status != metav1.ConditionTrue || !r.LastTransitionTime.Time.Equal(t0) {
		t.Fatalf("Reconciling %+v, want True since %s", r, t0)
	}
	if c := meta.FindStatusCondition(conds, Ready); c.Status != metav1.ConditionTrue {
		t.Fatalf("Ready %+v while only progressing", c)
	}
	set.SetReadinessAndProgress(Pass(), Pass(), "Ready", "ok")
	if meta.FindStatusCondition(conds, Reconciling) != nil {
		t.Fatal("Reconciling stays after the work is done")
	}
}
