package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

func down(l layout, keepLogs, keepClaim bool) error {
	st, err := loadState(l)
	if errors.Is(err, fs.ErrNotExist) {
		if ownedByUs(l) && !keepClaim {
			// up died between claiming the machine and writing its state.
			fmt.Printf("cluster: no state in %s, but %s is ours; removing it\n", l.Dir, runRoot)
			if err := unmountAll([]string{runRoot}); err != nil {
				return err
			}
			return os.RemoveAll(runRoot)
		}
		fmt.Printf("cluster: no node state in %s: nothing to tear down\n", l.Dir)
		return nil
	}
	if err != nil {
		return err
	}
	return teardown(l, st, keepLogs, keepClaim)
}

// shimsOf lists the containerd shims serving our containerd (their command
// line names its socket); they outlive containerd and are reparented.
func shimsOf(l layout) []proc {
	return pidsWhere(func(exe string, args []string) bool {
		if !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			return false
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == l.containerdSocket() {
				return true
			}
		}
		return false
	})
}

// teardown undoes an up, whatever state it reached, in the order that lets
// each step succeed: processes, then mounts, then network, then the rest.
// Every step runs even when an earlier one failed; the state file stays
// (so down can be repeated) unless all succeeded.
func teardown(l layout, st *state, keepLogs, keepClaim bool) error {
	t0 := time.Now()
	var errs []error
	note := func(what string, err error) {
		if err != nil {
			err = fmt.Errorf("%s: %w", what, err)
			fmt.Fprintln(os.Stderr, "cluster: down:", err)
			errs = append(errs, err)
		}
	}
	say := func(format string, args ...any) {
		fmt.Printf("cluster: [%5.1fs] down: %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, args...))
	}
	reportPeakMemory(l, st)

	// Processes, newest first. Pods die between kubelet and containerd:
	// kubelet must not restart them, containerd's shims must still be
	// there to notice.
	for i := len(st.Procs) - 1; i >= 0; i-- {
		p := st.Procs[i]
		if p.Name == "containerd" {
			note("pods", killPods(30*time.Second))
		}
		note("stop "+p.Name, stop(p, 20*time.Second))
		if p.Name == "containerd" {
			for _, s := range shimsOf(l) {
				note("stop shim", stop(s, 5*time.Second))
			}
		}
	}
	// A shim or pod may survive when up crashed before recording containerd.
	note("pods", killPods(30*time.Second))
	for _, s := range shimsOf(l) {
		note("stop shim", stop(s, 5*time.Second))
	}
	say("processes stopped")

	b := st.Baseline
	if b == nil {
		// up failed before looking at the host: it changed nothing there.
		b = &baseline{}
	}
	absent := map[string]bool{}
	for _, p := range b.Absent {
		absent[p] = true
	}
	// Mounts: the run folder (pod volumes, tokens), containerd's state
	// (rootfs), CNI network namespaces that are new, and the hard-coded
	// paths the node created.
	prefixes := []string{l.Dir}
	if ownedByUs(l) {
		prefixes = append(prefixes, runRoot)
	}
	newNetns := newEntries("/run/netns", b.Netns)
	for _, n := range newNetns {
		prefixes = append(prefixes, filepath.Join("/run/netns", n))
	}
	for _, p := range hostPaths {
		if absent[p] {
			prefixes = append(prefixes, p)
		}
	}
	note("unmount", unmountAll(prefixes))
	for _, n := range newNetns {
		if strings.HasPrefix(n, "cni-") {
			note("netns", os.Remove(filepath.Join("/run/netns", n)))
		}
	}
	say("unmounted; network namespaces removed")

	// Network: the pods' veths went with their namespaces; any left on the
	// bridge go now, then the bridge, the node address and the rules.
	if st.Bridge != "" && linkExists(st.Bridge) && !contains(b.Links, st.Bridge) {
		for _, port := range bridgePorts(st.Bridge) {
			// It may vanish meanwhile: its namespace is being destroyed.
			if err := run("ip", "link", "del", port); err != nil && linkExists(port) {
				note("veth", err)
			}
		}
		note("bridge", run("ip", "link", "del", st.Bridge))
	}
	if st.did("node-ip") {
		if out, _ := commandOutput("ip", "-o", "addr", "show", "dev", "lo"); strings.Contains(out, " "+st.NodeIP+"/32") {
			note("node address", run("ip", "addr", "del", st.NodeIP+"/32", "dev", "lo"))
		}
	}
	if st.Baseline != nil {
		note("iptables", removeOurChains("iptables-save", "iptables-restore"))
		note("ip6tables", removeOurChains("ip6tables-save", "ip6tables-restore"))
		note("nftables", removeNewEmptyTables(b.NftTables))
	}
	flushConntrack(st)
	say("bridge, node address, iptables chains and conntrack entries removed")

	note("cgroups", removeKubepods())
	if st.Baseline != nil {
		restored, rerrs := restoreSysctls(b.Sysctls)
		for _, e := range rerrs {
			note("sysctl", e)
		}
		if len(restored) > 0 {
			say("restored sysctls: %s", strings.Join(restored, ", "))
		}
	}

	// Paths, only once nothing is mounted below them: RemoveAll would
	// otherwise reach into whatever a mount exposes.
	for _, p := range hostPaths {
		if !absent[p] {
			continue
		}
		if left := mountsUnder([]string{p}); len(left) > 0 {
			note("remove "+p, fmt.Errorf("still mounted below it: %s", strings.Join(left, " ")))
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			note("remove "+p, os.RemoveAll(p))
			say("removed %s (created by the node)", p)
		}
	}
	if ownedByUs(l) {
		if left := mountsUnder([]string{runRoot}); len(left) > 0 {
			note("remove "+runRoot, fmt.Errorf("still mounted below it: %s", strings.Join(left, " ")))
		} else if keepClaim {
			// Everything but the marker goes now; release removes it.
			entries, _ := os.ReadDir(runRoot)
			for _, e := range entries {
				if e.Name() != "owner.json" {
					note("remove "+runRoot, os.RemoveAll(filepath.Join(runRoot, e.Name())))
				}
			}
		} else {
			note("remove "+runRoot, os.RemoveAll(runRoot))
		}
	}

	if len(errs) > 0 {
		fmt.Fprintf(os.Stderr, "cluster: down finished with %d problems; state kept in %s, run down again after fixing\n", len(errs), l.stateFile())
		return errors.Join(errs...)
	}
	if left := mountsUnder([]string{l.Dir}); len(left) > 0 {
		return fmt.Errorf("still mounted in the run folder: %s", strings.Join(left, " "))
	}
	entries, _ := os.ReadDir(l.Dir)
	for _, e := range entries {
		if keepLogs && (e.Name() == "logs" || e.Name() == "baseline") {
			continue
		}
		if err := os.RemoveAll(filepath.Join(l.Dir, e.Name())); err != nil {
			return err
		}
	}
	if !keepLogs {
		os.Remove(l.Dir)
	}
	say("node torn down (logs kept in %s)", l.logs())
	return nil
}

// reportPeakMemory prints each component's high-water RSS (VmHWM) and the
// pods' cgroup high-water mark, before the processes go.
func reportPeakMemory(l layout, st *state) {
	var parts []string
	var total int64
	for _, p := range st.Procs {
		if !p.alive() {
			continue
		}
		kb := peakRSS(p.PID)
		total += kb
		parts = append(parts, fmt.Sprintf("%s %d", p.Name, kb/1024))
	}
	var shims int64
	for _, s := range shimsOf(l) {
		shims += peakRSS(s.PID)
	}
	var pods int64
	if data, err := os.ReadFile("/sys/fs/cgroup/memory/kubepods/memory.max_usage_in_bytes"); err == nil {
		pods, _ = strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	}
	if len(parts) == 0 {
		return
	}
	fmt.Printf("cluster: peak memory (MiB): components %d [%s], containerd shims %d, pods (cgroup high-water) %d; sum %d\n",
		total/1024, strings.Join(parts, ", "), shims/1024, pods>>20, (total+shims)/1024+pods>>20)
}

// newEntries lists the names in dir that are not in before.
func newEntries(dir string, before []string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if !contains(before, e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func status(l layout) error {
	st, err := loadState(l)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Printf("no node in %s\n", l.Dir)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Printf("node %s at %s, started %s, run folder %s\n", st.NodeName, st.NodeIP, st.Started.Format(time.RFC3339), st.Dir)
	var total int64
	for _, p := range st.Procs {
		state := "running"
		if !p.alive() {
			state = "NOT RUNNING"
		}
		kb := rss(p.PID)
		total += kb
		fmt.Printf("  %-24s pid %-7d %-11s rss %4d MiB  log %s\n", p.Name, p.PID, state, kb/1024, p.Log)
	}
	var shims int64
	for _, s := range shimsOf(l) {
		shims += rss(s.PID)
	}
	fmt.Printf("  components %d MiB, shims %d MiB\n", total/1024, shims/1024)
	fmt.Printf("  export KUBECONFIG=%s\n", l.admin())
	return nil
}
