// Package kubeapp holds the pieces the end-to-end suites on the real node
// (test/e2e/cluster) and the demo (hack/demo) both put into the cluster: an
// application pod that submits one message through a relay with an
// SMTPCredential's Secret as its environment, the restricted Pod Security
// Standard's container settings, and external-dns' DNSEndpoint CRD from the
// module this repository builds against.
package kubeapp

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// RestrictedContainer is a container security context that meets the
// restricted Pod Security Standard.
func RestrictedContainer() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// Submission is one message an application pod sends.
type Submission struct {
	Pod       string // pod name
	Namespace string
	Image     string // the e2e helper image (test/e2e/cluster/helper)
	Secret    string // the SMTPCredential's Secret in Namespace
	From, To  string
	Subject   string
}

// SubmitPod is a pod that runs `e2e-helper submit` as an application
// would: the credential Secret's keys as environment variables (SMTP_HOST,
// SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD, SMTP_CA_CRT), the relay reached
// by the host name the Secret gives (the pool Service's DNS name), STARTTLS
// verified against the pool's CA. It runs once and never restarts.
func SubmitPod(s Submission) *corev1.Pod {
	env := func(name, key string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: s.Secret}, Key: key}}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: s.Pod, Namespace: s.Namespace},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name:            "app",
				Image:           s.Image,
				ImagePullPolicy: corev1.PullNever,
				Args:            []string{"submit", "-from", s.From, "-to", s.To, "-subject", s.Subject},
				Env: []corev1.EnvVar{
					env("SMTP_HOST", "host"), env("SMTP_PORT", "port"), env("SMTP_USERNAME", "username"),
					env("SMTP_PASSWORD", "password"), env("SMTP_CA_CRT", "ca.crt"),
				},
				SecurityContext: RestrictedContainer(),
			}},
		},
	}
}

// DNSEndpointCRD is the path of external-dns' DNSEndpoint CRD in the
// external-dns module of this repository's go.mod (the version whose types
// the SendingDomain controller writes). dir is any folder inside the
// module.
func DNSEndpointCRD(dir string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/external-dns")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("locating the external-dns module: %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard", "dnsendpoints.externaldns.k8s.io.yaml"), nil
}
