package main

import (
	"context"
	"fmt"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "mailroom.io/mailroom/api/v1alpha1"
)

// sample is one mailroom object the demo waits for.
type sample struct {
	kind string
	key  types.NamespacedName
	obj  client.Object
}

func samples(poolNS, pool, domainName, credNS, cred string) []sample {
	return []sample{
		{"RelayPool", types.NamespacedName{Namespace: poolNS, Name: pool}, &v1.RelayPool{}},
		{"SendingDomain", types.NamespacedName{Namespace: poolNS, Name: domainName}, &v1.SendingDomain{}},
		{"SMTPCredential", types.NamespacedName{Namespace: credNS, Name: cred}, &v1.SMTPCredential{}},
	}
}

// waitAllReady waits until every object is Ready for its current
// generation, printing each Ready condition as it changes (with the time
// since start).
func waitAllReady(ctx context.Context, c client.Client, start time.Time, timeout time.Duration, objs []sample) error {
	last := map[string]string{}
	deadline := time.Now().Add(timeout)
	for {
		ready := 0
		for _, o := range objs {
			name := o.kind + " " + o.key.String()
			if err := c.Get(ctx, o.key, o.obj); err != nil {
				last[name] = err.Error()
				continue
			}
			var conds []metav1.Condition
			var observed int64
			switch x := o.obj.(type) {
			case *v1.RelayPool:
				conds, observed = x.Status.Conditions, x.Status.ObservedGeneration
			case *v1.SendingDomain:
				conds, observed = x.Status.Conditions, x.Status.ObservedGeneration
			case *v1.SMTPCredential:
				conds, observed = x.Status.Conditions, x.Status.ObservedGeneration
			}
			line := "Ready=?"
			if cond := apimeta.FindStatusCondition(conds, v1.ConditionReady); cond != nil {
				line = fmt.Sprintf("Ready=%s %s: %s", cond.Status, cond.Reason, cond.Message)
				if cond.Status == metav1.ConditionTrue && observed == o.obj.GetGeneration() {
					ready++
				}
			}
			if line != last[name] {
				fmt.Printf("    [%3.0fs] %-34s %s\n", time.Since(start).Seconds(), name, shorten(line, 110))
				last[name] = line
			}
		}
		if ready == len(objs) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not Ready after %s: %v", timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
