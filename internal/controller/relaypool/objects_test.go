package relaypool

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"mailroom.io/mailroom/api/v1alpha1"
)

func pool() *v1alpha1.RelayPool {
	return &v1alpha1.RelayPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "mail", Name: "tx"},
		Spec: v1alpha1.RelayPoolSpec{
			Hostname:   "relay.example.com",
			Storage:    v1alpha1.StorageSpec{Size: "5Gi"},
			Submission: v1alpha1.SubmissionSpec{StartTLSPort: 587, ImplicitTLSPort: 465},
		},
	}
}

func TestNoBudgetForASinglePod(t *testing.T) {
	if PodDisruptionBudget(pool(), 1) != nil {
		t.Error("a PDB for one replica would block every node drain")
	}
	if PodDisruptionBudget(pool(), 3) == nil {
		t.Error("no PDB for three replicas")
	}
}

func TestNetworkPolicyFollowsAllowedNamespaces(t *testing.T) {
	p := pool()
	if np := NetworkPolicy(p); np.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "mail" {
		t.Errorf("from: Same admits %v", np.Spec.Ingress[0].From)
	}
	p.Spec.AllowedNamespaces.From = v1alpha1.NamespacesFromAll
	if np := NetworkPolicy(p); len(np.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels) != 0 {
		t.Errorf("from: All admits %v", np.Spec.Ingress[0].From)
	}
	p.Spec.Service = &v1alpha1.ExternalServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerSourceRanges: []string{"198.51.100.0/24"}}
	if np := NetworkPolicy(p); np.Spec.Ingress[0].From[1].IPBlock.CIDR != "198.51.100.0/24" {
		t.Errorf("an external Service's source ranges are not admitted: %v", np.Spec.Ingress[0].From)
	}
	p.Spec.NetworkPolicy.Enabled = ptr.To(false)
	if NetworkPolicy(p) != nil {
		t.Error("networkPolicy.enabled=false still writes one")
	}
}

func TestExternalServiceOnlyWhenAsked(t *testing.T) {
	p := pool()
	if n := len(Services(p)); n != 2 {
		t.Errorf("%d Services without spec.service, want 2", n)
	}
	p.Spec.Service = &v1alpha1.ExternalServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal}
	svcs := Services(p)
	if len(svcs) != 3 || svcs[2].Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("external Service: %+v", svcs)
	}
}

func TestPodShapeDoesNotDependOnTheConfiguration(t *testing.T) {
	a, err := StatefulSet(pool(), "img", 2, 55)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := StatefulSet(pool(), "img", 3, 55)
	// Replicas differ; the template (what rolls pods) does not.
	if !equalTemplates(a.Spec.Template, b.Spec.Template) {
		t.Error("the pod template changes with replicas")
	}
	p := pool()
	p.Spec.Storage.WhenDeleted = v1alpha1.VolumeDelete
	c, _ := StatefulSet(p, "img", 2, 55)
	if c.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted != "Delete" || c.Spec.PersistentVolumeClaimRetentionPolicy.WhenScaled != "Retain" {
		t.Errorf("retention %+v", c.Spec.PersistentVolumeClaimRetentionPolicy)
	}
}

func equalTemplates(a, b corev1.PodTemplateSpec) bool {
	return a.String() == b.String()
}
