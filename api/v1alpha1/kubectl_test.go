package v1alpha1_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestKubectlShowsWhatToFix applies invalid objects with kubectl, the way
// users do, and checks what it prints: the field, the fix, and unknown
// fields refused by kubectl's default strict field validation.
func TestKubectlShowsWhatToFix(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl is needed on the machine (see DESIGN.md): %v", err)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := env.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t)
	cases := []struct{ name, manifest, want string }{
		{"entry of a list", `
apiVersion: mailroom.io/v1alpha1
kind: SMTPCredential
metadata: {name: shop}
spec:
  poolRef: {name: transactional, namespace: mail}
  allowedSenders: [example.com, shop.example.com, '*@example.com']
`, `spec.allowedSenders[2]: Invalid value: "*@example.com": allowedSenders entries are literal, not patterns: list the domain (example.com) to allow every address at it`},
		{"cross-field with a default", `
apiVersion: mailroom.io/v1alpha1
kind: SendingDomain
metadata: {name: example-com}
spec:
  domain: example.com
  poolRef: {name: transactional}
  dkim: {rotation: {overlap: 2160h}}
`, `spec.dkim.rotation.overlap: Invalid value: dkim.rotation.overlap (2160h) must be shorter than interval (2160h, the default)`},
		{"unknown field", `
apiVersion: mailroom.io/v1alpha1
kind: RelayPool
metadata: {name: transactional}
spec:
  hostname: relay.example.com
  submission: {starttlsport: 2587}
`, `unknown field "spec.submission.starttlsport"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(f, []byte(tc.manifest), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "--namespace", ns, "apply", "--dry-run=server", "-f", f).CombinedOutput()
			if err == nil {
				t.Fatalf("kubectl apply succeeded:\n%s", out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("kubectl printed:\n%s\nwant it to say:\n%s", out, tc.want)
			}
			t.Logf("kubectl: %s", strings.TrimSpace(string(out)))
		})
	}
}
