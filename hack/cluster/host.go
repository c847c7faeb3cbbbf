package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// hostPaths are the paths the components create outside their configured
// folders (CLUSTER-NOTES' list, plus what this harness found): kubelet's
// device-plugin and container-log locations, libcni's result cache,
// containerd 1.6's shim socket folder, CNI network namespaces. Down removes
// those that did not exist before up.
var hostPaths = []string{
	"/var/lib/kubelet",
	"/var/lib/cni",
	"/var/log/containers",
	"/var/log/pods",
	"/run/containerd",
	"/run/netns",
	"/usr/libexec/kubernetes",
	"/opt/containerd",
	"/var/lib/containerd",
	"/etc/cni",
	"/etc/kubernetes",
}

// sysctlRoots are the sysctls kubelet, kube-proxy and the CNI bridge plugin
// change (kernel.panic*, vm.overcommit_memory, kernel.keys.*, forwarding,
// conntrack, bridge netfilter, route_localnet, ...). Folders are walked.
var sysctlRoots = []string{
	"kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	"vm/overcommit_memory", "vm/panic_on_oom",
	"net/ipv4/ip_forward", "net/ipv4/conf", "net/ipv6/conf",
	"net/netfilter", "net/bridge", "net/ipv4/vs",
}

// baseline is the host as it was before up.
type baseline struct {
	Sysctls   map[string]string `json:"sysctls"`
	Absent    []string          `json:"absent"` // hostPaths that did not exist
	Netns     []string          `json:"netns"`  // /run/netns entries
	NftTables []string          `json:"nftTables"`
	Links     []string          `json:"links"`
}

func captureBaseline() (*baseline, error) {
	b := &baseline{Sysctls: readSysctls()}
	for _, p := range hostPaths {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			b.Absent = append(b.Absent, p)
		}
	}
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			b.Netns = append(b.Netns, e.Name())
		}
	}
	b.NftTables = nftTables()
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, i := range ifs {
		b.Links = append(b.Links, i.Name)
	}
	return b, nil
}

// writeBaselineFiles stores the baseline as plain files hack/cluster/check-clean
// reads with shell tools.
func writeBaselineFiles(l layout, b *baseline, st *state) error {
	dir := l.baselineDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var sys []string
	for k, v := range b.Sysctls {
		sys = append(sys, k+" = "+v)
	}
	sort.Strings(sys)
	files := map[string][]string{
		"sysctl.conf":  sys,
		"absent-paths": b.Absent,
		"netns":        b.Netns,
		"nft-tables":   b.NftTables,
		"links":        b.Links,
		"node":         {"node-ip=" + st.NodeIP, "bridge=" + st.Bridge, "pod-cidr=" + st.PodCIDR, "service-cidr=" + st.ServiceCIDR},
		"iptables-v4":  {iptablesSave("iptables-save")},
		"iptables-v6":  {iptablesSave("ip6tables-save")},
	}
	for name, lines := range files {
		data := strings.Join(lines, "\n")
		if data != "" && !strings.HasSuffix(data, "\n") {
			data += "\n"
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// readSysctls reads every writable sysctl under sysctlRoots, as
// "net.ipv4.ip_forward" -> "0". Interface names with dots are skipped (the
// dotted form would be ambiguous for sysctl(8)).
func readSysctls() map[string]string {
	out := map[string]string{}
	for _, root := range sysctlRoots {
		filepath.WalkDir(filepath.Join("/proc/sys", root), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			rel := strings.TrimPrefix(p, "/proc/sys/")
			if strings.Contains(rel, ".") {
				return nil
			}
			info, err := d.Info()
			if err != nil || info.Mode().Perm()&0o200 == 0 || info.Mode().Perm()&0o444 == 0 {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return nil // e.g. stable_secret: readable only once set
			}
			out[strings.ReplaceAll(rel, "/", ".")] = strings.Join(strings.Fields(string(data)), " ")
			return nil
		})
	}
	return out
}

// restoreSysctls writes back every value that differs from the baseline;
// keys that no longer exist (interfaces that are gone) are skipped. The
// global forwarding switch goes first because writing it resets the
// per-interface ones.
func restoreSysctls(saved map[string]string) (restored []string, errs []error) {
	now := readSysctls()
	keys := make([]string, 0, len(saved))
	for k := range saved {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if (keys[i] == "net.ipv4.ip_forward") != (keys[j] == "net.ipv4.ip_forward") {
			return keys[i] == "net.ipv4.ip_forward"
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		cur, ok := now[k]
		if !ok || cur == saved[k] {
			continue
		}
		if k != "net.ipv4.ip_forward" {
			// Re-read: restoring ip_forward may already have fixed it.
			data, err := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/")))
			if err == nil && strings.Join(strings.Fields(string(data)), " ") == saved[k] {
				continue
			}
		}
		p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(saved[k]), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s: restore %q (is %q): %w", k, saved[k], cur, err))
			continue
		}
		restored = append(restored, fmt.Sprintf("%s=%s (was %s)", k, saved[k], cur))
	}
	return restored, errs
}

// flushConntrack deletes the connection-tracking entries of the node's
// addresses (pods, Services, the node address): killed pods never closed
// their connections, and established entries would linger for days.
func flushConntrack(st *state) {
	for _, f := range [][]string{
		{"-s", st.PodCIDR}, {"-d", st.PodCIDR}, {"-d", st.ServiceCIDR}, {"-s", st.NodeIP}, {"-d", st.NodeIP},
	} {
		if f[1] == "" {
			continue
		}
		// Exit status 1 means "nothing to delete".
		exec.Command("conntrack", "-D", f[0], f[1]).Run()
	}
}

// ensurePackages installs the Debian packages the node needs when missing.
func ensurePackages(noInstall bool) error {
	need := map[string]bool{}
	for pkg, files := range map[string][]string{
		"containerd":                  {"/usr/bin/containerd", "/usr/bin/ctr", "/usr/bin/containerd-shim-runc-v2"},
		"runc":                        {"/usr/sbin/runc"},
		"containernetworking-plugins": {cniBinDir + "/bridge", cniBinDir + "/host-local", cniBinDir + "/loopback"},
		"iptables":                    {"/usr/sbin/iptables", "/usr/sbin/ip6tables", "/usr/sbin/iptables-save", "/usr/sbin/iptables-restore"},
		"nftables":                    {"/usr/sbin/nft"},
		"conntrack":                   {"/usr/sbin/conntrack"},
	} {
		for _, f := range files {
			if _, err := os.Stat(f); err != nil {
				need[pkg] = true
			}
		}
	}
	if len(need) == 0 {
		return nil
	}
	var pkgs []string
	for p := range need {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	if noInstall {
		return fmt.Errorf("missing Debian packages: %s (apt-get install -y %s)", strings.Join(pkgs, " "), strings.Join(pkgs, " "))
	}
	fmt.Printf("cluster: installing %s\n", strings.Join(pkgs, " "))
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{
		{"apt-get", "update", "-qq"},
		append([]string{"apt-get", "install", "-y", "-qq", "--no-install-recommends"}, pkgs...),
	} {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// run executes a host tool and returns its combined output in the error.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func runInput(input, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s\ninput:\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)), input)
	}
	return nil
}

// addressInUse reports whether ip is assigned to any interface.
func addressInUse(ip net.IP) (bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true, nil
		}
	}
	return false, nil
}

// guardChain is our own chain in the mangle table, jumped to first from
// FORWARD. mangle runs before filter, where kube-proxy inserts its
// ACCEPT rules, so nothing kube-proxy adds can let pod traffic past it.
const guardChain = "MAILROOM-FORWARD"

// addGuard makes forwarding bridge-internal only: pods reach each other and
// Services (DNAT back onto the bridge), never another interface. The CNI
// bridge plugin turns net.ipv4.ip_forward on; when it was off before, the
// guard also drops all other forwarding, so the machine routes nothing it
// did not route before.
func addGuard(tool, bridge string, forwardingWasOff bool) error {
	rules := fmt.Sprintf("*mangle\n:%s - [0:0]\n-A %s -i %s -o %s -j RETURN\n", guardChain, guardChain, bridge, bridge)
	if forwardingWasOff {
		rules += fmt.Sprintf("-A %s -j DROP\n", guardChain)
	} else {
		rules += fmt.Sprintf("-A %s -i %s -j DROP\n-A %s -o %s -j DROP\n", guardChain, bridge, guardChain, bridge)
	}
	rules += fmt.Sprintf("-I FORWARD 1 -j %s\nCOMMIT\n", guardChain)
	return runInput(rules, tool, "--noflush")
}

// iptablesSave returns the rules without counters and comments, comparable
// across runs.
func iptablesSave(tool string) string {
	out, err := exec.Command(tool).Output()
	if err != nil {
		return ""
	}
	var lines []string
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, ":") {
			// ":CHAIN POLICY [packets:bytes]" -> ":CHAIN POLICY"
			if i := strings.LastIndex(line, " ["); i > 0 {
				line = line[:i]
			}
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

// removeOurChains deletes, in every table, the jumps from built-in chains
// to KUBE-* (kubelet's and kube-proxy's) and MAILROOM-* (ours) chains, then
// flushes and deletes those chains. iptables-restore --noflush parses the
// rules exactly as iptables-save printed them (quoting included).
func removeOurChains(save, restore string) error {
	out, err := exec.Command(save).Output()
	if err != nil {
		return fmt.Errorf("%s: %w", save, err)
	}
	script := chainRemovalScript(string(out))
	if script == "" {
		return nil
	}
	return runInput(script, restore, "--noflush")
}

// chainRemovalScript turns iptables-save output into the iptables-restore
// input that removes the node's chains and the jumps to them.
func chainRemovalScript(saved string) string {
	ours := func(chain string) bool {
		return strings.HasPrefix(chain, "KUBE-") || strings.HasPrefix(chain, "MAILROOM-")
	}
	var script strings.Builder
	var table string
	var dels, chains []string
	flush := func() {
		if table == "" || (len(dels) == 0 && len(chains) == 0) {
			return
		}
		script.WriteString("*" + table + "\n")
		for _, d := range dels {
			script.WriteString(d + "\n")
		}
		for _, c := range chains {
			script.WriteString("-F " + c + "\n")
		}
		for _, c := range chains {
			script.WriteString("-X " + c + "\n")
		}
		script.WriteString("COMMIT\n")
	}
	for _, line := range strings.Split(saved, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			flush()
			table, dels, chains = line[1:], nil, nil
		case strings.HasPrefix(line, ":"):
			if name := strings.Fields(line[1:])[0]; ours(name) {
				chains = append(chains, name)
			}
		case strings.HasPrefix(line, "-A "):
			f := strings.Fields(line)
			if ours(f[1]) {
				continue // goes with its chain
			}
			for i := 0; i+1 < len(f); i++ {
				if (f[i] == "-j" || f[i] == "-g") && ours(f[i+1]) {
					dels = append(dels, "-D"+line[2:])
					break
				}
			}
		}
	}
	flush()
	return script.String()
}

// nftTables lists "family name" of every nftables table.
func nftTables() []string {
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		return nil
	}
	var t []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "table" {
			t = append(t, f[1]+" "+f[2])
		}
	}
	return t
}

// removeNewEmptyTables deletes nftables tables that appeared during the run
// (iptables-nft creates one per table it touched) once they hold no rule,
// and kube-proxy's own tables.
func removeNewEmptyTables(before []string) error {
	had := map[string]bool{}
	for _, t := range before {
		had[t] = true
	}
	var errs []error
	for _, t := range nftTables() {
		if had[t] {
			continue
		}
		f := strings.Fields(t)
		out, err := exec.Command("nft", "list", "table", f[0], f[1]).Output()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if f[1] != "kube-proxy" && nftHasRules(string(out)) {
			errs = append(errs, fmt.Errorf("nft table %s appeared during the run and still has rules; left alone", t))
			continue
		}
		if err := run("nft", "delete", "table", f[0], f[1]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func nftHasRules(listing string) bool {
	for _, line := range strings.Split(listing, "\n") {
		s := strings.TrimSpace(line)
		switch {
		case s == "", s == "}", strings.HasPrefix(s, "table "), strings.HasPrefix(s, "chain "),
			strings.HasPrefix(s, "type "), strings.HasPrefix(s, "policy "):
		default:
			return true
		}
	}
	return false
}

// mountsUnder lists mount points at or below any of the prefixes, deepest
// first (the order they must be unmounted in).
func mountsUnder(prefixes []string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		for _, p := range prefixes {
			if mp == p || strings.HasPrefix(mp, p+"/") {
				out = append(out, mp)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountAll unmounts everything under prefixes, repeating because one
// mount point may be stacked several times.
func unmountAll(prefixes []string) error {
	for attempt := 0; attempt < 5; attempt++ {
		mps := mountsUnder(prefixes)
		if len(mps) == 0 {
			return nil
		}
		for _, mp := range mps {
			if err := syscall.Unmount(mp, 0); err != nil {
				// Busy (a process still has it open): detach it, the kernel
				// frees it when the last user goes.
				syscall.Unmount(mp, syscall.MNT_DETACH)
			}
		}
	}
	if left := mountsUnder(prefixes); len(left) > 0 {
		return fmt.Errorf("still mounted: %s", strings.Join(left, " "))
	}
	return nil
}

// cgroupMounts are the cgroup v1 hierarchies (/sys/fs/cgroup/<controller>).
func cgroupMounts() []string {
	m, _ := filepath.Glob("/sys/fs/cgroup/*")
	var out []string
	for _, p := range m {
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			out = append(out, p)
		}
	}
	return out
}

// kubepodsProcs lists the processes in the pod cgroups (every container of
// this node and nothing else: up refuses to start when kubepods exists).
func kubepodsProcs() []int {
	seen := map[int]bool{}
	var pids []int
	for _, m := range cgroupMounts() {
		filepath.WalkDir(filepath.Join(m, "kubepods"), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			data, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(data)) {
				var pid int
				if _, err := fmt.Sscanf(f, "%d", &pid); err == nil && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// killPods SIGKILLs every container process until the pod cgroups are empty.
func killPods(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids := kubepodsProcs()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pod processes survive SIGKILL: %v", pids)
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// removeKubepods removes the pod cgroup trees, children first.
func removeKubepods() error {
	var errs []error
	for _, m := range cgroupMounts() {
		root := filepath.Join(m, "kubepods")
		if _, err := os.Stat(root); err != nil {
			continue
		}
		var dirs []string
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		// An emptied cgroup can take a moment to become removable.
		for attempt := 0; ; attempt++ {
			var failed error
			for i := len(dirs) - 1; i >= 0; i-- {
				if err := syscall.Rmdir(dirs[i]); err != nil && err != syscall.ENOENT {
					failed = fmt.Errorf("rmdir %s: %w", dirs[i], err)
				}
			}
			if failed == nil {
				break
			}
			if attempt == 20 {
				errs = append(errs, failed)
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// bridgePorts lists the interfaces enslaved to the bridge (pods' host-side veths).
func bridgePorts(bridge string) []string {
	entries, _ := os.ReadDir(filepath.Join("/sys/class/net", bridge, "brif"))
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

func commandOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
