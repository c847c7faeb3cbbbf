package manifests

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every mailroom metric the dashboard and the alerts query is one the
// relay or the manager exports: a renamed metric fails here, not as an
// empty panel or an alert that can never fire.
func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	exported := map[string]bool{}
	def := regexp.MustCompile(`"(mailroom_[a-z0-9_]+)"`)
	for _, dir := range []string{"internal", "cmd"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, m := range def.FindAllSubmatch(b, -1) {
				exported[string(m[1])] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	use := regexp.MustCompile(`\b(mailroom_[a-z0-9_]+)`)
	for _, f := range []string{"charts/mailroom/files/dashboards/mailroom.json", "charts/mailroom/files/alerts.yaml"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range use.FindAllSubmatch(b, -1) {
			name := string(m[1])
			base := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				base = strings.TrimSuffix(base, suffix)
			}
			if !exported[name] && !exported[base] {
				t.Errorf("%s uses %s, which no relay or manager code exports", f, name)
			}
			n++
		}
		if n == 0 {
			t.Errorf("%s queries no mailroom metric", f)
		}
	}
}
