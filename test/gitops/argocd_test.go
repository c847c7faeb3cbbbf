// Package gitops checks how mailroom's objects look to GitOps tools: the
// Argo CD health checks in config/argocd (run with gopher-lua, as Argo CD
// runs them), kstatus (Flux, kubectl wait, cli-utils) over objects the real
// reconcilers wrote, and that no controller writes into spec (Argo CD
// would show the application out of sync forever).
package gitops

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"mailroom.io/mailroom/internal/testutil/envtest"
)

var kinds = []string{"RelayPool", "SendingDomain", "SMTPCredential"}

func customizations(t *testing.T) string {
	t.Helper()
	root, err := envtest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "config", "argocd", "resource_customizations", "mailroom.io")
}

type health struct{ Status, Message string }

// argoHealth runs a health.lua as Argo CD does: the object as the global
// obj, only the safe standard libraries, the returned table's status and
// message.
func argoHealth(script string, obj map[string]any) (health, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return health{}, err
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return health{}, fmt.Errorf("health.lua returned %s, not a table", L.Get(-1).Type())
	}
	return health{Status: lua.LVAsString(ret.RawGetString("status")), Message: lua.LVAsString(ret.RawGetString("message"))}, nil
}

// toLua converts decoded JSON as Argo CD's Lua VM does: objects to tables,
// arrays to 1-based tables, numbers to Lua numbers.
func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case map[string]any:
		t := L.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	case []any:
		t := L.NewTable()
		for _, e := range v {
			t.Append(toLua(L, e))
		}
		return t
	default:
		panic(fmt.Sprintf("toLua: %T", v))
	}
}

func readScript(t *testing.T, kind string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(customizations(t), kind, "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The fixtures in Argo CD's own layout (health_test.yaml, testdata/) give
// the status and message each check returns.
func TestArgoCDHealthChecksOnFixtures(t *testing.T) {
	seen := map[string]bool{}
	for _, kind := range kinds {
		script := readScript(t, kind)
		dir := filepath.Join(customizations(t), kind)
		b, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var spec struct {
			Tests []struct {
				HealthStatus health `json:"healthStatus"`
				InputPath    string `json:"inputPath"`
			} `json:"tests"`
		}
		if err := yaml.UnmarshalStrict(b, &spec); err != nil {
			t.Fatal(err)
		}
		for _, tc := range spec.Tests {
			t.Run(kind+"/"+tc.InputPath, func(t *testing.T) {
				raw, err := os.ReadFile(filepath.Join(dir, tc.InputPath))
				if err != nil {
					t.Fatal(err)
				}
				u := &unstructured.Unstructured{}
				if err := yaml.Unmarshal(raw, &u.Object); err != nil {
					t.Fatal(err)
				}
				if u.GetKind() != kind {
					t.Fatalf("fixture is a %s", u.GetKind())
				}
				got, err := argoHealth(script, u.Object)
				if err != nil {
					t.Fatal(err)
				}
				if got != tc.HealthStatus {
					t.Errorf("got %+v, want %+v", got, tc.HealthStatus)
				}
				seen[kind+" "+got.Status] = true
			})
		}
	}
	for _, want := range []string{"Healthy", "Progressing", "Degraded"} {
		for _, kind := range kinds {
			if !seen[kind+" "+want] {
				t.Errorf("no %s fixture for %s", want, kind)
			}
		}
	}
	if !seen["SMTPCredential Suspended"] {
		t.Error("no Suspended fixture for a suspended SMTPCredential")
	}
}

// The documented argocd-cm snippet carries the scripts verbatim.
func TestArgoCDConfigMapSnippetMatchesScripts(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(customizations(t), "..", "..", "argocd-cm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	if len(cm.Data) != len(kinds) {
		t.Errorf("argocd-cm.yaml has %d keys, want one per kind", len(cm.Data))
	}
	for _, kind := range kinds {
		key := "resource.customizations.health.mailroom.io_" + kind
		if cm.Data[key] != readScript(t, kind) {
			t.Errorf("argocd-cm.yaml %s differs from resource_customizations/mailroom.io/%s/health.lua", key, kind)
		}
	}
}
