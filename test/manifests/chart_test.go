package manifests

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// helmBinary is the helm hack/build-helm.sh builds (make helm).
func helmBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		bin = filepath.Join(root, "bin", "helm", "v3.22.0", "helm")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("helm not found at %s; run 'make helm' to build it from the Go module proxy", bin)
	}
	return bin
}

// everything turns on every optional part of the chart.
var everything = []string{
	"--set", "metrics.serviceMonitor.enabled=true",
	"--set", "metrics.prometheusRule.enabled=true",
	"--set", "metrics.grafanaDashboard.enabled=true",
	"--set", "defaultPool.create=true",
	"--set", "relayImage=localhost/mailroom-relay:test",
}

func helmTemplate(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helmBinary(t), append([]string{"template", "mailroom", filepath.Join(root, "charts", "mailroom"),
		"--namespace", "mailroom-system", "--include-crds"}, args...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &helmError{err: err, stderr: stderr.String()}
	}
	return out, nil
}

type helmError struct {
	err    error
	stderr string
}

func (e *helmError) Error() string { return e.err.Error() + ": " + e.stderr }

func render(t *testing.T, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := helmTemplate(t, args...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	return decodeAll(t, out)
}

func TestChartAppliesToARealAPIServer(t *testing.T) {
	ensureNamespace(t, "mailroom-system")
	t.Run("defaults", func(t *testing.T) {
		kinds := dryRun(t, render(t))
		wantKinds(t, "the chart", kinds, map[string]int{"CustomResourceDefinition": 3, "ServiceAccount": 1, "ClusterRole": 1,
			"ClusterRoleBinding": 1, "Role": 1, "RoleBinding": 1, "Deployment": 1, "Service": 1,
			"ServiceMonitor": 0, "PodMonitor": 0, "PrometheusRule": 0, "ConfigMap": 0, "RelayPool": 0})
	})
	t.Run("everything enabled", func(t *testing.T) {
		kinds := dryRun(t, render(t, everything...))
		wantKinds(t, "the chart", kinds, map[string]int{"CustomResourceDefinition": 3, "Deployment": 1,
			"ServiceMonitor": 1, "PodMonitor": 1, "PrometheusRule": 1, "ConfigMap": 1, "RelayPool": 1})
	})
}

// values.schema.json refuses what the chart could not render into a
// working install.
func TestChartValuesSchemaRefusesMistakes(t *testing.T) {
	for _, bad := range [][]string{
		{"--set", "logLevel=verbose"},
		{"--set", "leaderElection=true"}, // an object since 0.1.0
		{"--set", "metrics.serviceMonitor=true"},
		{"--set", "replicas=-1"},
		{"--set", "image.repository="},
		{"--set", "unknownKey=1"},
	} {
		_, err := helmTemplate(t, bad...)
		if err == nil {
			t.Errorf("helm template %v succeeded; the schema should refuse it", bad)
			continue
		}
		if !strings.Contains(err.Error(), "values don't meet the specifications of the schema") {
			t.Errorf("helm template %v: not refused by the schema: %v", bad, err)
		}
	}
}

func byKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

func readYAML(t *testing.T, rel string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return decodeAll(t, b)
}

// The chart installs what config/ installs: the same CRDs, the same
// ClusterRole rules (generated from the reconcilers' RBAC markers), the
// same leader election rules, the same alerts and dashboard, and the
// manager gets the same downward-API environment it needs to find its
// own image.
func TestChartMatchesConfig(t *testing.T) {
	chart := render(t, everything...)

	t.Run("CRDs", func(t *testing.T) {
		want := map[string]any{}
		for _, f := range []string{"mailroom.io_relaypools.yaml", "mailroom.io_sendingdomains.yaml", "mailroom.io_smtpcredentials.yaml"} {
			for _, o := range readYAML(t, filepath.Join("config", "crd", "bases", f)) {
				want[o.GetName()] = o.Object
			}
		}
		got := map[string]any{}
		for _, o := range byKind(chart, "CustomResourceDefinition") {
			got[o.GetName()] = o.Object
		}
		if len(got) != len(want) {
			t.Fatalf("chart has CRDs %v, config/crd/bases has %v", keys(got), keys(want))
		}
		for name, w := range want {
			if !reflect.DeepEqual(got[name], w) {
				t.Errorf("CRD %s in charts/mailroom/crds differs from config/crd/bases: run 'make manifests'", name)
			}
		}
	})

	t.Run("ClusterRole", func(t *testing.T) {
		roles := byKind(chart, "ClusterRole")
		if len(roles) != 1 {
			t.Fatalf("chart renders %d ClusterRoles", len(roles))
		}
		want := readYAML(t, "config/rbac/role.yaml")[0]
		if !reflect.DeepEqual(roles[0].Object["rules"], want.Object["rules"]) {
			t.Errorf("the chart's ClusterRole rules differ from config/rbac/role.yaml:\nchart:  %v\nconfig: %v", roles[0].Object["rules"], want.Object["rules"])
		}
	})

	t.Run("leader election Role", func(t *testing.T) {
		roles := byKind(chart, "Role")
		var want *unstructured.Unstructured
		for _, o := range readYAML(t, "config/rbac/leader_election_role.yaml") {
			if o.GetKind() == "Role" {
				want = o
			}
		}
		if len(roles) != 1 || want == nil {
			t.Fatalf("chart renders %d Roles; config has %v", len(roles), want)
		}
		if !reflect.DeepEqual(roles[0].Object["rules"], want.Object["rules"]) {
			t.Errorf("the chart's leader election rules differ from config/rbac/leader_election_role.yaml")
		}
	})

	t.Run("alerts", func(t *testing.T) {
		rules := byKind(chart, "PrometheusRule")
		want := readYAML(t, "config/prometheus/prometheusrule.yaml")
		if len(rules) != 1 || len(want) != 1 {
			t.Fatalf("%d PrometheusRules in the chart, %d in config/prometheus", len(rules), len(want))
		}
		if !reflect.DeepEqual(rules[0].Object["spec"], want[0].Object["spec"]) {
			t.Errorf("the chart's PrometheusRule differs from config/prometheus/prometheusrule.yaml: run 'make manifests'")
		}
	})

	t.Run("dashboard", func(t *testing.T) {
		cms := byKind(chart, "ConfigMap")
		b, err := os.ReadFile(filepath.Join(root, "config", "prometheus", "mailroom-dashboard.json"))
		if err != nil {
			t.Fatal(err)
		}
		if len(cms) != 1 {
			t.Fatalf("%d ConfigMaps in the chart", len(cms))
		}
		data, _, _ := unstructured.NestedString(cms[0].Object, "data", "mailroom.json")
		if data != string(b) {
			t.Errorf("the chart's dashboard differs from config/prometheus/mailroom-dashboard.json: run 'make manifests'")
		}
		if cms[0].GetLabels()["grafana_dashboard"] != "1" {
			t.Errorf("dashboard ConfigMap labels %v: the Grafana sidecar looks for grafana_dashboard", cms[0].GetLabels())
		}
	})

	t.Run("manager environment and flags", func(t *testing.T) {
		envOf := func(d *unstructured.Unstructured) map[string]any {
			ctrs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
			out := map[string]any{}
			for _, c := range ctrs {
				c := c.(map[string]any)
				if c["name"] != "manager" {
					continue
				}
				envs, _ := c["env"].([]any)
				for _, e := range envs {
					e := e.(map[string]any)
					out[e["name"].(string)] = e["valueFrom"]
				}
				args, _ := c["args"].([]any)
				for _, a := range args {
					out["arg "+strings.SplitN(a.(string), "=", 2)[0]] = true
				}
			}
			return out
		}
		chartDeps := byKind(chart, "Deployment")
		configDeps := byKind(kustomize(t, "config/default"), "Deployment")
		if len(chartDeps) != 1 || len(configDeps) != 1 {
			t.Fatalf("%d Deployments in the chart, %d in config/default", len(chartDeps), len(configDeps))
		}
		c, k := envOf(chartDeps[0]), envOf(configDeps[0])
		for _, name := range []string{"POD_NAME", "POD_NAMESPACE"} {
			if k[name] == nil {
				t.Errorf("config/manager does not set %s (the manager reads its own Pod for the default relay image)", name)
			}
			if !reflect.DeepEqual(c[name], k[name]) {
				t.Errorf("%s: chart %v, config/manager %v", name, c[name], k[name])
			}
		}
		for _, flag := range []string{"arg --leader-elect", "arg --metrics-bind-address", "arg --health-probe-bind-address", "arg --relay-image"} {
			if c[flag] == nil {
				t.Errorf("the chart's manager has no %s", strings.TrimPrefix(flag, "arg "))
			}
		}
	})
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
