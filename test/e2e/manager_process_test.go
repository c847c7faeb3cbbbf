package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// The manager as a process of its own, for the measurements that need its
// real memory use (manager_rss_test.go, sendingdomain_scale_test.go).

// managerBinary is the manager to run: $MAILROOM_MANAGER_BIN (for example
// an older build, see hack/measure-manager-rss.sh), else this tree's,
// built into a temp dir.
func managerBinary(t testing.TB, root string) string {
	t.Helper()
	if bin := os.Getenv("MAILROOM_MANAGER_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "manager")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/manager")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the manager: %v\n%s", err, out)
	}
	return bin
}

// startManager runs the manager binary against cfg's API server and waits
// until /readyz says its caches have synced.
func startManager(t testing.TB, bin string, cfg *rest.Config, extraArgs ...string) *process {
	t.Helper()
	probe := freeLoopbackAddr(t)
	args := append([]string{
		"--kubeconfig=" + writeKubeconfig(t, cfg),
		"--metrics-bind-address=0",
		"--health-probe-bind-address=" + probe,
		"--log-format=json",
	}, extraArgs...)
	p := runProcess(t, "manager", bin, args...)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		resp, err := http.Get("http://" + probe + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the manager was not ready within 3m; log:\n%s", tail(p.log.String(), 40))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// rssMiB is the resident set size of a running process, from
// /proc/<pid>/status.
func rssMiB(t testing.TB, p *process) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kib, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatalf("VmRSS line %q: %v", l, err)
			}
			return float64(kib) / 1024
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// settledRSS samples the process's RSS once a second for d and returns the
// largest sample: the figure after the manager has listed and cached what
// it watches.
func settledRSS(t testing.TB, p *process, d time.Duration) float64 {
	t.Helper()
	var peak float64
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(time.Second) {
		peak = max(peak, rssMiB(t, p))
	}
	return peak
}

// metricSum adds up the samples of a metric family (a counter, or a
// histogram's _sum/_count) whose labels include match, from a Prometheus
// text endpoint.
func metricSum(t testing.TB, url, name, match string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") || !strings.Contains(l, match) {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// errorLines are the manager's log lines at level ERROR (JSON log).
func errorLines(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `"level":"ERROR"`) {
			out = append(out, l)
		}
	}
	return out
}

func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
