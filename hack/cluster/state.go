package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// runRoot holds what needs short paths (containerd's sockets and state:
// unix socket paths are limited to 108 bytes and shim sockets live under
// the state folder) and doubles as the machine-wide "a node is up" marker:
// a second up from any folder finds it and refuses.
const runRoot = "/run/mailroom-cluster"

// layout names every path of one node. Everything except runRoot and the
// hard-coded paths in hostPaths is inside Dir.
type layout struct{ Dir string }

func newLayout(dir string) layout { return layout{Dir: dir} }

func (l layout) path(p ...string) string { return filepath.Join(append([]string{l.Dir}, p...)...) }
func (l layout) logs() string            { return l.path("logs") }
func (l layout) log(name string) string  { return l.path("logs", name+".log") }
func (l layout) pki(name string) string  { return l.path("pki", name) }
func (l layout) kubeconfig(n string) string {
	return l.path("kubeconfig", n+".kubeconfig")
}
func (l layout) admin() string       { return l.path("admin.kubeconfig") }
func (l layout) stateFile() string   { return l.path("state.json") }
func (l layout) baselineDir() string { return l.path("baseline") }
func (l layout) clusterInfo() string { return l.path("cluster.json") }

func (l layout) containerdSocket() string { return filepath.Join(runRoot, "containerd.sock") }
func (l layout) containerdState() string  { return filepath.Join(runRoot, "containerd") }
func (l layout) marker() string           { return filepath.Join(runRoot, "owner.json") }

// options are up's settings.
type options struct {
	K8sBin, Images      string
	NodeIP, NodeName    string
	PodCIDR             string
	ServiceCIDR         string
	Bridge              string
	PVs                 int
	StorageClass        string
	DNSForward          listFlag
	NoInstall           bool
	Wait                time.Duration
	HolderPID           int
	apiServiceIP, dnsIP net.IP
}

type listFlag []string

func (f *listFlag) String() string     { return strings.Join(*f, ",") }
func (f *listFlag) Set(v string) error { *f = append(*f, v); return nil }

// state is what down needs to undo an up, written after every step so that
// a crashed or killed up can still be torn down: which processes it started
// and what the host looked like before (so only what the node created is
// removed, and changed sysctls are put back).
type state struct {
	Dir      string    `json:"dir"`
	Started  time.Time `json:"started"`
	NodeIP   string    `json:"nodeIP"`
	NodeName string    `json:"nodeName"`
	Bridge   string    `json:"bridge"`
	PodCIDR  string    `json:"podCIDR"`
	// ServiceCIDR (with PodCIDR and NodeIP) identifies the node's
	// connection-tracking entries.
	ServiceCIDR string `json:"serviceCIDR"`
	// Procs are the components in start order; down stops them in reverse.
	Procs []proc `json:"procs"`
	// Done lists host changes up made itself ("node-ip", "guard-ipv4", ...).
	Done     []string  `json:"done"`
	Baseline *baseline `json:"baseline"`
}

func (s *state) did(step string) bool {
	for _, d := range s.Done {
		if d == step {
			return true
		}
	}
	return false
}

func (s *state) save(l layout) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := l.stateFile() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, l.stateFile())
}

func (s *state) record(l layout, step string) error {
	s.Done = append(s.Done, step)
	return s.save(l)
}

func loadState(l layout) (*state, error) {
	data, err := os.ReadFile(l.stateFile())
	if err != nil {
		return nil, err
	}
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", l.stateFile(), err)
	}
	return &s, nil
}

// owner is the marker's content: which folder's node holds the machine,
// and the process holding it (up itself, or the e2e script that runs up,
// the tests and down, so that the machine stays claimed until its
// leftovers check is done).
type owner struct {
	Dir      string    `json:"dir"`
	PID      int       `json:"pid"`
	PIDStart uint64    `json:"pidStart"`
	Started  time.Time `json:"started"`
}

// claim creates runRoot exclusively. The mkdir is the lock: two ups racing
// cannot both succeed.
func claim(l layout, holder int) error {
	if err := os.Mkdir(runRoot, 0o700); err != nil {
		if !errors.Is(err, os.ErrExist) {
			return err
		}
		msg := fmt.Sprintf("a node is already up or was not torn down (%s exists)", runRoot)
		if data, err := os.ReadFile(l.marker()); err == nil {
			var o owner
			if json.Unmarshal(data, &o) == nil {
				msg = fmt.Sprintf("a node from %s (started %s) is already up or was not torn down; run: hack/cluster/down -dir %s",
					o.Dir, o.Started.Format(time.RFC3339), o.Dir)
			}
		}
		return refusedError{msg: "refusing to start: " + msg}
	}
	start, _, err := procStat(holder)
	if err != nil {
		os.Remove(runRoot)
		return fmt.Errorf("holder pid %d: %w", holder, err)
	}
	data, _ := json.Marshal(owner{Dir: l.Dir, PID: holder, PIDStart: start, Started: time.Now()})
	return os.WriteFile(l.marker(), data, 0o600)
}

// release gives the machine back: runRoot goes, if it is ours and nothing
// is mounted below it.
func release(l layout) error {
	if !ownedByUs(l) {
		return nil
	}
	if left := mountsUnder([]string{runRoot}); len(left) > 0 {
		return fmt.Errorf("not releasing %s: still mounted below it: %s", runRoot, strings.Join(left, " "))
	}
	return os.RemoveAll(runRoot)
}

// ownedByUs reports whether runRoot belongs to the node in l.Dir; down never
// removes another folder's marker.
func ownedByUs(l layout) bool {
	data, err := os.ReadFile(l.marker())
	if err != nil {
		return false
	}
	var o owner
	return json.Unmarshal(data, &o) == nil && o.Dir == l.Dir
}
