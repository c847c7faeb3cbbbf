package relaypool

import (
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/attachment"
	"mailroom.io/mailroom/internal/relayconfig"
)

// Labels every object of a pool carries; the pod selector is a subset.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelComponent = "app.kubernetes.io/component"
	LabelPool      = "mailroom.io/pool"
	ManagedBy      = "mailroom"
	// LabelShard marks a pool's config Secrets with their shard index
	// ("main" for the main file).
	LabelShard = "mailroom.io/config-shard"
	// AnnotationRevision on a config Secret is the revision at which its
	// data last changed.
	AnnotationRevision = attachment.AnnotationConfigRevision
)

const (
	runAsID       = 65532
	containerName = "relay"
	spoolVolume   = "spool"
)

// SelectorLabels select a pool's relay pods.
func SelectorLabels(pool *v1alpha1.RelayPool) map[string]string {
	return map[string]string{LabelName: "mailroom-relay", LabelInstance: pool.Name}
}

func objectLabels(pool *v1alpha1.RelayPool) map[string]string {
	l := SelectorLabels(pool)
	l[LabelManagedBy] = ManagedBy
	l[LabelComponent] = "relay"
	l[LabelPool] = pool.Name
	return l
}

func objMeta(pool *v1alpha1.RelayPool, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: pool.Namespace, Labels: objectLabels(pool)}
}

// TLSSecretName is the serving certificate the relays use: the user's, or
// the one the operator issues.
func TLSSecretName(pool *v1alpha1.RelayPool) string {
	if n := pool.Spec.Submission.TLS.SecretName; n != "" {
		return n
	}
	return pool.Name + "-relay-tls"
}

// Names of the operator-issued certificate objects.
func CASecretName(pool string) string    { return pool + "-relay-ca" }
func CAConfigMapName(pool string) string { return pool + "-relay-ca" }
func PeerSecretName(pool string) string  { return pool + "-relay-peer" }

// ConfigSecret is one of the pool's config Secrets.
func ConfigSecret(pool *v1alpha1.RelayPool, name, shard string, revision int64, data map[string][]byte) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: objMeta(pool, name), Type: corev1.SecretTypeOpaque, Data: data}
	s.Labels[LabelShard] = shard
	s.Annotations = map[string]string{AnnotationRevision: fmt.Sprint(revision)}
	return s
}

// StatefulSet is the relay fleet. Config, certificates and keys come from
// Secrets in one projected volume whose list of Secrets never changes, so
// config changes reach pods by kubelet's refresh and the relay's reload,
// never by a roll; only image and pod-shape changes roll.
func StatefulSet(pool *v1alpha1.RelayPool, image string, replicas int32, grace int64) (*appsv1.StatefulSet, error) {
	s := pool.Spec
	size, err := resource.ParseQuantity(s.Storage.Size)
	if err != nil {
		return nil, fmt.Errorf("spec.storage.size: %w", err)
	}
	var projected []corev1.VolumeProjection
	projected = append(projected, secretProjection(relayconfig.MainSecretName(pool.Name)))
	for i := 0; i < relayconfig.NumShards; i++ {
		projected = append(projected, secretProjection(relayconfig.ShardSecretName(pool.Name, i)))
	}
	whenDeleted := appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	if s.Storage.WhenDeleted == v1alpha1.VolumeDelete {
		whenDeleted = appsv1.DeletePersistentVolumeClaimRetentionPolicyType
	}
	claim := corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: spoolVolume, Labels: objectLabels(pool)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
	if s.Storage.StorageClassName != "" {
		claim.Spec.StorageClassName = ptr.To(s.Storage.StorageClassName)
	}
	ports := []corev1.ContainerPort{
		{Name: "submission", ContainerPort: s.Submission.StartTLSPort},
		{Name: "submissions", ContainerPort: s.Submission.ImplicitTLSPort},
		{Name: "http", ContainerPort: relayconfig.HTTPPort},
		{Name: "peer", ContainerPort: relayconfig.PeerPort},
		// Listed whether or not spec.api is enabled: turning the API on or
		// off changes the config and the Service, never rolls the pods.
		{Name: "api", ContainerPort: relayconfig.APIPort},
	}
	for i := range ports {
		ports[i].Protocol = corev1.ProtocolTCP
	}
	sts := &appsv1.StatefulSet{
		ObjectMeta: objMeta(pool, relayconfig.StatefulSetName(pool.Name)),
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(replicas),
			ServiceName:         relayconfig.HeadlessServiceName(pool.Name),
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: SelectorLabels(pool)},
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType},
			// Claims of pods removed by scaling down are kept: after a
			// drain they are empty (and reused on scale-up), and scaling to
			// 0, which cannot drain, must not delete queued mail. On pool
			// deletion the user decides.
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				WhenDeleted: whenDeleted,
				WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: objectLabels(pool)},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To(grace),
					EnableServiceLinks:            ptr.To(false),
					AutomountServiceAccountToken:  ptr.To(false),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To[int64](runAsID),
						RunAsGroup:     ptr.To[int64](runAsID),
						FSGroup:        ptr.To[int64](runAsID),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						// Preferred, not required: a pool of two must still run
						// on a one-node cluster.
						PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
							Weight: 100,
							PodAffinityTerm: corev1.PodAffinityTerm{
								TopologyKey:   "kubernetes.io/hostname",
								LabelSelector: &metav1.LabelSelector{MatchLabels: SelectorLabels(pool)},
							},
						}},
					}},
					Containers: []corev1.Container{{
						Name:    containerName,
						Image:   image,
						Command: []string{"/relay", "--config", relayconfig.ConfigDir + "/" + relayconfig.MainFile},
						Env: []corev1.EnvVar{{
							Name:      "MAILROOM_POD_NAME",
							ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}},
						}},
						Ports:     ports,
						Resources: s.Resources,
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http"), Scheme: corev1.URISchemeHTTP}},
							PeriodSeconds:    2,
							TimeoutSeconds:   1,
							SuccessThreshold: 1,
							FailureThreshold: 1,
						},
						LivenessProbe: &corev1.Probe{
							ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http"), Scheme: corev1.URISchemeHTTP}},
							PeriodSeconds:    10,
							TimeoutSeconds:   5,
							SuccessThreshold: 1,
							FailureThreshold: 6,
						},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "config", MountPath: relayconfig.ConfigDir, ReadOnly: true},
							{Name: "tls", MountPath: relayconfig.TLSDir, ReadOnly: true},
							{Name: "peer", MountPath: relayconfig.PeerDir, ReadOnly: true},
							{Name: spoolVolume, MountPath: relayconfig.SpoolDir},
						},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							RunAsNonRoot:             ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
							SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
						},
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
					}},
					Volumes: []corev1.Volume{
						{Name: "config", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
							Sources: projected, DefaultMode: ptr.To[int32](0o440),
						}}},
						{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName: TLSSecretName(pool), DefaultMode: ptr.To[int32](0o440),
							Items: []corev1.KeyToPath{{Key: "tls.crt", Path: "tls.crt"}, {Key: "tls.key", Path: "tls.key"}},
						}}},
						{Name: "peer", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName: PeerSecretName(pool.Name), DefaultMode: ptr.To[int32](0o440),
						}}},
					},
				},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{claim},
		},
	}
	return sts, nil
}

func secretProjection(name string) corev1.VolumeProjection {
	return corev1.VolumeProjection{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}
}

func smtpPorts(pool *v1alpha1.RelayPool) []corev1.ServicePort {
	s := pool.Spec.Submission
	return []corev1.ServicePort{
		{Name: "submission", Port: s.StartTLSPort, TargetPort: intstr.FromString("submission"), Protocol: corev1.ProtocolTCP},
		{Name: "submissions", Port: s.ImplicitTLSPort, TargetPort: intstr.FromString("submissions"), Protocol: corev1.ProtocolTCP},
	}
}

// Services are the ClusterIP Service applications use, the headless
// Service that names each pod (the peer path reaches pods by these names,
// ready or not, so a draining pod is still reachable), and the optional
// external one.
func Services(pool *v1alpha1.RelayPool) []*corev1.Service {
	app := &corev1.Service{
		ObjectMeta: objMeta(pool, relayconfig.ServiceName(pool.Name)),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: SelectorLabels(pool),
			Ports:    smtpPorts(pool),
		},
	}
	// The HTTP API is on the in-cluster Service only; the external one
	// keeps exposing SMTP alone.
	if relayconfig.APIEnabled(pool) {
		app.Spec.Ports = append(app.Spec.Ports, corev1.ServicePort{
			Name: "api", Port: relayconfig.APIServicePort(pool), TargetPort: intstr.FromString("api"), Protocol: corev1.ProtocolTCP,
		})
	}
	headless := &corev1.Service{
		ObjectMeta: objMeta(pool, relayconfig.HeadlessServiceName(pool.Name)),
		Spec: corev1.ServiceSpec{
			ClusterIP:                corev1.ClusterIPNone,
			Selector:                 SelectorLabels(pool),
			PublishNotReadyAddresses: true,
			Ports: []corev1.ServicePort{
				{Name: "http", Port: relayconfig.HTTPPort, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
				{Name: "peer", Port: relayconfig.PeerPort, TargetPort: intstr.FromString("peer"), Protocol: corev1.ProtocolTCP},
			},
		},
	}
	out := []*corev1.Service{app, headless}
	if e := pool.Spec.Service; e != nil {
		ext := &corev1.Service{
			ObjectMeta: objMeta(pool, ExternalServiceName(pool.Name)),
			Spec: corev1.ServiceSpec{
				Type:                     e.Type,
				Selector:                 SelectorLabels(pool),
				Ports:                    smtpPorts(pool),
				ExternalTrafficPolicy:    e.ExternalTrafficPolicy,
				LoadBalancerSourceRanges: slices.Clone(e.LoadBalancerSourceRanges),
			},
		}
		if len(e.Annotations) > 0 {
			ext.Annotations = e.Annotations
		}
		out = append(out, ext)
	}
	return out
}

// ExternalServiceName is the Service for clients outside the cluster.
func ExternalServiceName(pool string) string { return pool + "-relay-external" }

// PodDisruptionBudget keeps all but one relay up during node drains; nil
// when the pool has one replica (a budget would block every drain).
func PodDisruptionBudget(pool *v1alpha1.RelayPool, replicas int32) *policyv1.PodDisruptionBudget {
	if replicas <= 1 {
		return nil
	}
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: objMeta(pool, relayconfig.StatefulSetName(pool.Name)),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       &metav1.LabelSelector{MatchLabels: SelectorLabels(pool)},
		},
	}
}

// ManagerPodLabels select the operator's own pods, which read the relays'
// /status.
var ManagerPodLabels = map[string]string{LabelName: "mailroom", LabelComponent: "manager"}

// NetworkPolicy admits SMTP from the namespaces the pool admits (and from
// anywhere when an external Service exposes it), the HTTP API from the
// namespaces the pool admits, the HTTP port from the operator and
// metricsFrom, and the peer port from the pool's own pods. nil when
// disabled.
//
// It restricts ingress only. Egress stays open, because the relays reach
// MX hosts on port 25 anywhere and webhook targets (Services in any
// namespace, on any port): which webhooks they may call is decided by
// spec.events.allowedTargets, which the relays enforce themselves.
func NetworkPolicy(pool *v1alpha1.RelayPool) *networkingv1.NetworkPolicy {
	np := pool.Spec.NetworkPolicy
	if np.Enabled != nil && !*np.Enabled {
		return nil
	}
	tcp := ptr.To(corev1.ProtocolTCP)
	port := func(p int32) networkingv1.NetworkPolicyPort {
		return networkingv1.NetworkPolicyPort{Protocol: tcp, Port: ptr.To(intstr.FromInt32(p))}
	}
	var smtpFrom []networkingv1.NetworkPolicyPeer
	switch a := pool.Spec.AllowedNamespaces; a.From {
	case v1alpha1.NamespacesFromAll:
		smtpFrom = []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}
	case v1alpha1.NamespacesFromSelector:
		smtpFrom = []networkingv1.NetworkPolicyPeer{{NamespaceSelector: a.Selector.DeepCopy()}}
	default:
		smtpFrom = []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{
			MatchLabels: map[string]string{"kubernetes.io/metadata.name": pool.Namespace}}}}
	}
	if e := pool.Spec.Service; e != nil {
		ranges := e.LoadBalancerSourceRanges
		if len(ranges) == 0 {
			ranges = []string{"0.0.0.0/0", "::/0"}
		}
		for _, r := range ranges {
			smtpFrom = append(smtpFrom, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: r}})
		}
	}
	metrics := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{
		MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}}
	if m := np.MetricsFrom; m != nil {
		metrics = networkingv1.NetworkPolicyPeer{NamespaceSelector: m.NamespaceSelector.DeepCopy(), PodSelector: m.PodSelector.DeepCopy()}
		if metrics.NamespaceSelector == nil && metrics.PodSelector == nil {
			metrics.NamespaceSelector = &metav1.LabelSelector{}
		}
	}
	s := pool.Spec.Submission
	var apiRule []networkingv1.NetworkPolicyIngressRule
	if relayconfig.APIEnabled(pool) {
		// The API's clients are the apps that use SMTP, without the
		// external Service's ranges (the API is not exposed there).
		apiRule = append(apiRule, networkingv1.NetworkPolicyIngressRule{
			From:  slices.DeleteFunc(slices.Clone(smtpFrom), func(p networkingv1.NetworkPolicyPeer) bool { return p.IPBlock != nil }),
			Ports: []networkingv1.NetworkPolicyPort{port(relayconfig.APIPort)},
		})
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: objMeta(pool, relayconfig.StatefulSetName(pool.Name)),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: SelectorLabels(pool)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: append([]networkingv1.NetworkPolicyIngressRule{
				{From: smtpFrom, Ports: []networkingv1.NetworkPolicyPort{port(s.StartTLSPort), port(s.ImplicitTLSPort)}},
				{From: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: &metav1.LabelSelector{MatchLabels: ManagerPodLabels}},
					metrics,
				}, Ports: []networkingv1.NetworkPolicyPort{port(relayconfig.HTTPPort)}},
				{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: SelectorLabels(pool)}}},
					Ports: []networkingv1.NetworkPolicyPort{port(relayconfig.PeerPort)}},
			}, apiRule...),
		},
	}
}
