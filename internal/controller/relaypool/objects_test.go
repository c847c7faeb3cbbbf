package relaypool

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
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

func TestHTTPAPIOnTheAppServiceAndPolicy(t *testing.T) {
	p := pool()
	p.Spec.AllowedNamespaces.From = v1alpha1.NamespacesFromSelector
	p.Spec.AllowedNamespaces.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "apps"}}
	p.Spec.Service = &v1alpha1.ExternalServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerSourceRanges: []string{"198.51.100.0/24"}}
	p.Spec.API.Port = 8443

	sts, err := StatefulSet(p, "img", 1, 55)
	if err != nil {
		t.Fatal(err)
	}
	var ctrPort int32
	for _, cp := range sts.Spec.Template.Spec.Containers[0].Ports {
		if cp.Name == "api" {
			ctrPort = cp.ContainerPort
		}
	}
	if ctrPort != 9443 {
		t.Errorf("container port api = %d, want 9443", ctrPort)
	}

	svcs := Services(p)
	app := svcs[0]
	last := app.Spec.Ports[len(app.Spec.Ports)-1]
	if last.Name != "api" || last.Port != 8443 || last.TargetPort.String() != "api" {
		t.Errorf("app Service's API port: %+v", last)
	}
	for _, sp := range svcs[2].Spec.Ports {
		if sp.Name == "api" {
			t.Errorf("the external Service exposes the API: %+v", svcs[2].Spec.Ports)
		}
	}

	np := NetworkPolicy(p)
	var api *networkingv1.NetworkPolicyIngressRule
	for i, r := range np.Spec.Ingress {
		if len(r.Ports) == 1 && r.Ports[0].Port.IntValue() == 9443 {
			api = &np.Spec.Ingress[i]
		}
	}
	if api == nil {
		t.Fatalf("no ingress rule for the API port 9443: %+v", np.Spec.Ingress)
	}
	if len(api.From) != 1 || api.From[0].NamespaceSelector.MatchLabels["team"] != "apps" || api.From[0].IPBlock != nil {
		t.Errorf("the API is admitted from %+v, want the pool's namespace selector alone", api.From)
	}
	if len(np.Spec.PolicyTypes) != 1 || np.Spec.PolicyTypes[0] != networkingv1.PolicyTypeIngress {
		t.Errorf("policy types %v: egress (MX hosts, webhook targets) must stay open", np.Spec.PolicyTypes)
	}

	p.Spec.API.Enabled = ptr.To(false)
	for _, sp := range Services(p)[0].Spec.Ports {
		if sp.Name == "api" {
			t.Error("api.enabled=false still puts the API on the Service")
		}
	}
	for _, r := range NetworkPolicy(p).Spec.Ingress {
		for _, pp := range r.Ports {
			if pp.Port.IntValue() == 9443 {
				t.Error("api.enabled=false still admits the API port")
			}
		}
	}
	off, _ := StatefulSet(p, "img", 1, 55)
	if !equalTemplates(sts.Spec.Template, off.Spec.Template) {
		t.Error("turning the API off changes the pod template (pods would roll)")
	}
}
