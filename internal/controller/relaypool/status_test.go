package relaypool

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"mailroom.io/mailroom/internal/controller/conditions"
	"mailroom.io/mailroom/internal/relayconfig"
)

func readyPod(name string) corev1.Pod {
	return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.PodStatus{PodIP: "10.0.0.1",
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
}

func TestReadinessSaysWhatItWaitsFor(t *testing.T) {
	ok := func(rev int64) relayReport { return relayReport{status: RelayStatus{Revision: rev, Ready: true}} }
	for _, tc := range []struct {
		name    string
		pods    []corev1.Pod
		relays  map[string]relayReport
		plan    plan
		tlsErr  string
		state   conditions.State
		reason  string
		message string
	}{
		{name: "no pods", plan: plan{desired: 2, revision: 3}, state: conditions.Progressing, reason: ReasonNoReadyRelays, message: "none of 2"},
		{name: "one relay behind", pods: []corev1.Pod{readyPod("p-0"), readyPod("p-1")},
			relays: map[string]relayReport{"p-0": ok(3), "p-1": ok(2)}, plan: plan{desired: 2, revision: 3},
			state: conditions.Progressing, reason: ReasonRevisionPending, message: "1 of 2 ready relays run revision 3; waiting for p-1"},
		{name: "a relay that does not answer", pods: []corev1.Pod{readyPod("p-0")},
			relays: map[string]relayReport{"p-0": {err: errors.New("refused")}}, plan: plan{desired: 1, revision: 3},
			state: conditions.Progressing, reason: ReasonRelayUnreachable, message: "p-0"},
		{name: "a draining pod still holding mail", pods: []corev1.Pod{readyPod("p-0"), readyPod("p-1")},
			relays: map[string]relayReport{"p-0": ok(4), "p-1": {status: RelayStatus{Revision: 4, Draining: true, Queued: 7}}},
			plan:   plan{desired: 1, revision: 4, drain: []string{"p-1"}},
			state:  conditions.Progressing, reason: ReasonScalingDown, message: "p-1 (7 messages left)"},
		{name: "configuration the relay would refuse", plan: plan{desired: 1, configErr: "the relay would refuse this configuration: x"},
			state: conditions.Blocked, reason: ReasonInvalidConfig, message: "keep their current configuration"},
		{name: "missing TLS Secret", plan: plan{desired: 1}, tlsErr: "TLS Secret mine does not exist",
			state: conditions.Blocked, reason: ReasonTLS, message: "mine"},
		{name: "scaled to zero", plan: plan{desired: 0}, state: conditions.Blocked, reason: ReasonScaledToZero, message: "stays on the volumes"},
		{name: "all ready on the current revision", pods: []corev1.Pod{readyPod("p-0"), readyPod("p-1")},
			relays: map[string]relayReport{"p-0": ok(5), "p-1": ok(5)}, plan: plan{desired: 2, revision: 5}, state: conditions.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &world{pods: tc.pods, relays: tc.relays, tlsErr: tc.tlsErr}
			if w.relays == nil {
				w.relays = map[string]relayReport{}
			}
			o := observe(w, &tc.plan)
			v := readiness.Evaluate(o)
			if v.State == conditions.OK {
				v = progress.Evaluate(o) // in flight on a usable pool: Reconciling, Ready stays
			}
			if v.State != tc.state || v.Reason != tc.reason || !strings.Contains(v.Message, tc.message) {
				t.Errorf("verdict %+v, want state %d reason %s with %q", v, tc.state, tc.reason, tc.message)
			}
		})
	}
}

func TestAppliedRevisionIsTheOldestReadyRelays(t *testing.T) {
	w := &world{pods: []corev1.Pod{readyPod("p-0"), readyPod("p-1"), {ObjectMeta: metav1.ObjectMeta{Name: "p-2"}}},
		relays: map[string]relayReport{"p-0": {status: RelayStatus{Revision: 9}}, "p-1": {status: RelayStatus{Revision: 7}}, "p-2": {status: RelayStatus{Revision: 1}}}}
	if got := observe(w, &plan{revision: 9}).applied; got != 7 {
		t.Errorf("applied revision %d, want 7 (p-2 is not ready and does not count)", got)
	}
	w.relays["p-1"] = relayReport{err: errors.New("timeout")}
	if got := observe(w, &plan{revision: 9}).applied; got != 0 {
		t.Errorf("applied revision %d with a silent ready relay, want 0: nothing is known to be applied everywhere", got)
	}
}

func TestBouncesSignedWarnsWhenNoDomainCoversTheHostname(t *testing.T) {
	w := &world{pool: pool()}
	w.domains = []relayconfig.Domain{{Name: "example.org"}}
	v := bouncesSigned(w)
	if v.State == conditions.OK || v.Reason != ReasonBouncesUnsigned || !strings.Contains(v.Message, "MAILER-DAEMON@relay.example.com") {
		t.Errorf("hostname relay.example.com, domains example.org: %+v", v)
	}
	w.domains = append(w.domains, relayconfig.Domain{Name: "example.com"})
	if v := bouncesSigned(w); v.State != conditions.OK || signingDomain(w) != "example.com" {
		t.Errorf("example.com covers relay.example.com: %+v", v)
	}
}
