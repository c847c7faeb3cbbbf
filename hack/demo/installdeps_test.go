package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallTestDepsStopsOnlyTheDaemonItsInstallStarted runs
// hack/install-test-deps.sh (the demo's first step) with a fake apt-get
// whose "install" starts a named the way the bind9 package does (pid file
// included), next to another named the script did not start, as a test's
// BIND would be. Only the first may be stopped. It runs in its own PID
// namespace, so even a script that killed by name could not reach the
// machine's other processes.
func TestInstallTestDepsStopsOnlyTheDaemonItsInstallStarted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: the script only installs as root, and the test uses a PID namespace (unshare)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatal("unshare (util-linux) is needed for this test")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	// Two executables named "named": the package's and a bystander's.
	for _, d := range []string{"pkg", "other"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
		b, err := os.ReadFile(sleep)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, d, "named"), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fakes := map[string]string{
		"id":                     "echo 0",
		"debconf-set-selections": "cat >/dev/null",
		"service":                "exit 1", // no init scripts in this container
		// The real named writes its pid file once it runs as named; until the
		// child has exec'd it is still this shell, which the script rightly
		// refuses to kill, so the fake waits for the exec as named would.
		"apt-get": `case "$*" in *install*)
	"$FAKE_DIR/pkg/named" 300 >/dev/null 2>&1 &
	pid=$!
	i=0
	while [ "$(cat /proc/$pid/comm 2>/dev/null)" != named ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done
	echo $pid >"$NAMED_PIDFILE";;
esac`,
	}
	for name, body := range fakes {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	driver := `
"$FAKE_DIR/other/named" 300 & other=$!
bash "$ROOT/hack/install-test-deps.sh" || echo "script failed: $?"
pkg=$(cat "$NAMED_PIDFILE")
kill -0 "$other" 2>/dev/null && echo "bystander: running" || echo "bystander: gone"
kill -0 "$pkg" 2>/dev/null && echo "package named: running" || echo "package named: gone"
kill "$other" 2>/dev/null; true
`
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", "bash", "-c", driver)
	// No /usr/sbin on PATH: named counts as missing, so the script installs.
	cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "FAKE_DIR=" + dir, "ROOT=" + root,
		"NAMED_PIDFILE=" + filepath.Join(dir, "named.pid"), "HOME=" + dir}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("driver: %v\n%s", err, out)
	}
	got := string(out)
	if !strings.Contains(got, "bystander: running") || !strings.Contains(got, "package named: gone") || strings.Contains(got, "script failed") {
		t.Fatalf("want the bystander running and the package's named stopped:\n%s", got)
	}
}
