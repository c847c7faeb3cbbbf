package sendingdomain

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/conditions"
)

func readinessState() *state {
	sd := testSendingDomain()
	sd.Generation = 3
	return newState(&inputs{sd: sd, now: time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)})
}

func TestReadinessIsTheFirstFailingCheck(t *testing.T) {
	for _, tc := range []struct {
		name     string
		edit     func(verdicts)
		reason   string
		message  string
		kstatus  string // the kstatus condition set True, or ""
		notReady bool
	}{
		{"nothing known yet", func(verdicts) {}, ReasonPending, "KeyReady is not known yet", conditions.Reconciling, true},
		{"conflict outranks everything", func(v verdicts) {
			v[conflictCheck] = conditions.Block(ReasonConflict, "mail/other claimed example.com for this pool first")
			v[v1alpha1.SendingDomainKeyReady] = conditions.Block(ReasonKeyInvalid, "broken")
		}, ReasonConflict, "mail/other claimed example.com for this pool first", conditions.Stalled, true},
		{"a broken key stalls", func(v verdicts) {
			v[v1alpha1.SendingDomainKeyReady] = conditions.Block(ReasonKeyInvalid, "broken")
		}, ReasonKeyInvalid, "KeyReady: broken", conditions.Stalled, true},
		{"records not resolving yet is progress", func(v verdicts) {
			v[v1alpha1.SendingDomainKeyReady] = conditions.Pass()
			v[v1alpha1.SendingDomainDNSPublished] = conditions.Pass()
			v[v1alpha1.SendingDomainDNSVerified] = conditions.Wait("DKIMRecordMissing", "no record")
		}, "DKIMRecordMissing", "DNSVerified: no record", conditions.Reconciling, true},
		{"records resolve but the relays do not sign yet", func(v verdicts) {
			v[v1alpha1.SendingDomainKeyReady] = conditions.Pass()
			v[v1alpha1.SendingDomainDNSPublished] = conditions.Pass()
			v[v1alpha1.SendingDomainDNSVerified] = conditions.Pass()
			v[v1alpha1.SendingDomainSigning] = conditions.Wait(ReasonNoReadyRelays, "no relay pods")
		}, ReasonNoReadyRelays, "Signing: no relay pods", conditions.Reconciling, true},
		{"all pass", func(v verdicts) {
			v[v1alpha1.SendingDomainKeyReady] = conditions.Pass()
			v[v1alpha1.SendingDomainDNSPublished] = conditions.Pass()
			v[v1alpha1.SendingDomainDNSVerified] = conditions.Pass()
			v[v1alpha1.SendingDomainSigning] = conditions.Pass()
		}, ReasonReady, "mail for example.com is signed by the relays and its records resolve", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := readinessState()
			tc.edit(s.verdicts)
			(&Reconciler{}).setReadiness(s)
			ready := meta.FindStatusCondition(s.status.Conditions, v1alpha1.ConditionReady)
			if ready == nil || ready.Reason != tc.reason || ready.Message != tc.message || (ready.Status == metav1.ConditionFalse) != tc.notReady {
				t.Fatalf("Ready %+v, want %s %q", ready, tc.reason, tc.message)
			}
			if ready.ObservedGeneration != 3 {
				t.Fatalf("observedGeneration %d", ready.ObservedGeneration)
			}
			for _, typ := range []string{conditions.Reconciling, conditions.Stalled} {
				c := meta.FindStatusCondition(s.status.Conditions, typ)
				if want := typ == tc.kstatus; (c != nil && c.Status == metav1.ConditionTrue) != want {
					t.Fatalf("%s = %+v, want set %v", typ, c, want)
				}
			}
		})
	}
}
