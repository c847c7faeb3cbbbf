// Package manifests checks that the install manifests under config/ are
// objects a real API server accepts, so `kubectl apply -k config/default`
// works for users.
package manifests

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"mailroom.io/mailroom/internal/testutil/envtest"
)

func TestDefaultKustomizationAppliesToARealAPIServer(t *testing.T) {
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Fatal("kubectl is needed to render config/default: ", err)
	}
	env, err := envtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()

	root, err := envtest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("kubectl", "kustomize", filepath.Join(root, "config", "default")).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/default: %v", err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	kinds := map[string]int{}
	ctx := context.Background()
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		if len(u.Object) == 0 {
			continue
		}
		kinds[u.GetKind()]++
		// The namespace must exist for real before namespaced objects can
		// be dry-run into it.
		var opts []client.PatchOption
		opts = append(opts, client.ForceOwnership, client.FieldOwner("manifests-test"))
		if u.GetKind() != "Namespace" {
			opts = append(opts, client.DryRunAll)
		}
		if err := env.Client.Patch(ctx, u, client.Apply, opts...); err != nil {
			t.Errorf("%s %s/%s refused: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}
	for _, k := range []string{"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment"} {
		if kinds[k] == 0 {
			t.Errorf("config/default renders no %s (got %v)", k, kinds)
		}
	}
	if kinds["CustomResourceDefinition"] != 3 {
		t.Errorf("config/default renders %d CRDs, want 3", kinds["CustomResourceDefinition"])
	}
}
