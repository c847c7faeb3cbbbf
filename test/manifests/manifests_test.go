// Package manifests checks that the install manifests under config/ and
// the Helm chart are objects a real API server accepts, so `kubectl apply
// -k config/default` and `helm install` work for users, and that the chart
// never drifts from config/.
package manifests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"

	"mailroom.io/mailroom/internal/testutil/envtest"
)

// The Prometheus Operator's CRDs (ServiceMonitor, PodMonitor,
// PrometheusRule) are not part of mailroom; the test installs them into
// its API server from the prometheus-operator module, fetched through the
// Go module proxy like every other tool here, so those objects are
// validated against their real schemas too.
const promOperatorModule = "github.com/prometheus-operator/prometheus-operator@v0.85.0"

var (
	env  *envtest.Env
	root string
)

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	var err error
	if root, err = envtest.RepoRoot(); err != nil {
		return 0, err
	}
	if env, err = envtest.Start(); err != nil {
		return 0, err
	}
	defer env.Stop()
	dir, err := promOperatorCRDs()
	if err != nil {
		return 0, err
	}
	if _, err := crenvtest.InstallCRDs(env.Config, crenvtest.CRDInstallOptions{Paths: []string{
		filepath.Join(dir, "monitoring.coreos.com_servicemonitors.yaml"),
		filepath.Join(dir, "monitoring.coreos.com_podmonitors.yaml"),
		filepath.Join(dir, "monitoring.coreos.com_prometheusrules.yaml"),
	}, ErrorIfPathMissing: true}); err != nil {
		return 0, fmt.Errorf("installing the Prometheus Operator CRDs: %w", err)
	}
	return m.Run(), nil
}

func promOperatorCRDs() (string, error) {
	out, err := exec.Command("go", "mod", "download", "-json", promOperatorModule).Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w", promOperatorModule, err)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil {
		return "", err
	}
	if mod.Error != "" {
		return "", errors.New(mod.Error)
	}
	return filepath.Join(mod.Dir, "example", "prometheus-operator-crd"), nil
}

func decodeAll(t *testing.T, out []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatal(err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// dryRun server-side applies every object with dryRun=All (a Namespace
// for real, so that namespaced objects can be dry-run into it) and counts
// the kinds.
func dryRun(t *testing.T, objs []*unstructured.Unstructured) map[string]int {
	t.Helper()
	kinds := map[string]int{}
	ctx := context.Background()
	for _, u := range objs {
		kinds[u.GetKind()]++
		opts := []client.PatchOption{client.ForceOwnership, client.FieldOwner("manifests-test")}
		if u.GetKind() != "Namespace" {
			opts = append(opts, client.DryRunAll)
		}
		if err := env.Client.Patch(ctx, u.DeepCopy(), client.Apply, opts...); err != nil {
			t.Errorf("%s %s/%s refused: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}
	return kinds
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.Client.Create(context.Background(), ns); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
}

func kustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Fatal("kubectl is needed to render config/: ", err)
	}
	out, err := exec.Command("kubectl", "kustomize", filepath.Join(root, dir)).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	return decodeAll(t, out)
}

func wantKinds(t *testing.T, what string, kinds map[string]int, want map[string]int) {
	t.Helper()
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%s renders %d %s, want %d (all: %v)", what, kinds[k], k, n, kinds)
		}
	}
}

func TestDefaultKustomizationAppliesToARealAPIServer(t *testing.T) {
	kinds := dryRun(t, kustomize(t, "config/default"))
	wantKinds(t, "config/default", kinds, map[string]int{"Namespace": 1, "CustomResourceDefinition": 3, "ServiceAccount": 1,
		"ClusterRole": 1, "ClusterRoleBinding": 1, "Role": 1, "RoleBinding": 1, "Deployment": 1})
}

func TestPrometheusKustomizationAppliesToARealAPIServer(t *testing.T) {
	ensureNamespace(t, "mailroom-system")
	kinds := dryRun(t, kustomize(t, "config/prometheus"))
	wantKinds(t, "config/prometheus", kinds, map[string]int{"ServiceMonitor": 1, "PodMonitor": 1, "PrometheusRule": 1, "ConfigMap": 1, "Service": 1})
}
