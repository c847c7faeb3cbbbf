// Command mailroom-cluster brings a real single-node Kubernetes v1.37.2 up
// on this machine for mailroom's end-to-end tests, and tears it down again
// completely: etcd, the control plane, containerd, kubelet, kube-proxy, a
// CNI bridge and CoreDNS, in a run folder of its own.
//
//	mailroom-cluster up    -dir tmp/e2e-cluster   start a node (refuses while one runs)
//	mailroom-cluster down  -dir tmp/e2e-cluster   stop it and undo every host change
//	mailroom-cluster status -dir tmp/e2e-cluster  what runs, with memory use
//	mailroom-cluster release -dir ...            end a claim kept by down -keep-claim
//
// hack/cluster/up, down and e2e.sh wrap it; docs/cluster.md explains the
// design and CLUSTER-NOTES.md the facts it rests on. It must run as root:
// it adds an address to lo, creates a bridge, programs iptables and cgroups.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// exitRefused is up's exit status when another node already runs (or left
// state behind): the caller must not tear anything down in response.
const exitRefused = 3

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "up":
		err = cmdUp(args)
	case "down":
		err = cmdDown(args)
	case "status":
		err = cmdStatus(args)
	case "release":
		err = cmdRelease(args)
	case "-h", "-help", "--help", "help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "mailroom-cluster: unknown command %q\n", cmd)
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mailroom-cluster:", err)
		var refused refusedError
		if errors.As(err, &refused) {
			os.Exit(exitRefused)
		}
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: mailroom-cluster up|down|status|release [flags]   (-h after a command lists its flags)`)
}

// refusedError is returned when up will not start because a node is there.
type refusedError struct{ msg string }

func (e refusedError) Error() string { return e.msg }

// dirFlag registers -dir; the run folder is made absolute because the
// components run with other working directories.
func dirFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("MAILROOM_CLUSTER_DIR")
	if def == "" {
		def = "tmp/e2e-cluster"
	}
	return fs.String("dir", def, "run folder of the node (state, certificates, data, logs); $MAILROOM_CLUSTER_DIR")
}

// parse parses a subcommand's flags (dir registered by dirFlag) and returns
// the layout of the run folder, made absolute.
func parse(fs *flag.FlagSet, dir *string, args []string) (layout, error) {
	if err := fs.Parse(args); err != nil {
		return layout{}, err
	}
	a, err := filepath.Abs(*dir)
	if err != nil {
		return layout{}, err
	}
	return newLayout(filepath.Clean(a)), nil
}

// signalContext ends on SIGINT/SIGTERM, so an interrupted up tears down
// what it started instead of leaving it behind.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
}

func cmdUp(args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	dir := dirFlag(fs)
	var o options
	fs.StringVar(&o.K8sBin, "k8s-bin", "bin/k8s/v1.37.2", "folder with etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl (hack/build-k8s.sh all)")
	fs.StringVar(&o.Images, "images", "bin/images", "folder with images.json and the image tarballs (go run ./hack/images)")
	fs.StringVar(&o.NodeIP, "node-ip", "10.245.0.1", "node address, added to lo as a /32 (no dummy driver here); must be unused")
	fs.StringVar(&o.NodeName, "node-name", "mailroom-e2e", "node name")
	fs.StringVar(&o.PodCIDR, "pod-cidr", "10.244.0.0/24", "pod addresses (CNI host-local range on the bridge)")
	fs.StringVar(&o.ServiceCIDR, "service-cidr", "10.96.0.0/24", "ClusterIP range; .1 is the kubernetes Service, .10 the cluster DNS")
	fs.StringVar(&o.Bridge, "bridge", "mrcni0", "name of the CNI bridge (created by the bridge plugin, deleted by down)")
	fs.IntVar(&o.PVs, "pvs", 12, "hostPath PersistentVolumes to create for the storage class")
	fs.StringVar(&o.StorageClass, "storage-class", "mailroom-e2e", "StorageClass of those PVs (made the default class)")
	fs.Var(&o.DNSForward, "dns-forward", "address (ip[:port]) on this machine CoreDNS forwards non-cluster names to; repeatable; none: only cluster.local resolves")
	fs.DurationVar(&o.Wait, "wait", 0, "when another node holds the machine, wait up to this long for its teardown before refusing (shared machines)")
	fs.IntVar(&o.HolderPID, "holder-pid", 0, "process that holds the machine while this node exists (the e2e script passes its own); 0: up itself")
	fs.BoolVar(&o.NoInstall, "no-install", false, "fail instead of apt-get installing missing packages (containerd, runc, CNI plugins, iptables, nftables)")
	l, err := parse(fs, dir, args)
	if err != nil {
		return err
	}
	for _, p := range []*string{&o.K8sBin, &o.Images} {
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	ctx, cancel := signalContext()
	defer cancel()
	return up(ctx, l, o)
}

func cmdDown(args []string) error {
	fs := flag.NewFlagSet("down", flag.ContinueOnError)
	dir := dirFlag(fs)
	keepLogs := fs.Bool("keep-logs", true, "keep <dir>/logs and <dir>/baseline (for check-clean) after tearing down")
	keepClaim := fs.Bool("keep-claim", false, "keep the machine claimed (only /run/mailroom-cluster/owner.json stays) until `release`, so no other node starts before check-clean ran")
	l, err := parse(fs, dir, args)
	if err != nil {
		return err
	}
	// Teardown runs to the end even on SIGINT: stopping half-way is what
	// leaves a machine dirty.
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP)
	return down(l, *keepLogs, *keepClaim)
}

func cmdRelease(args []string) error {
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	dir := dirFlag(fs)
	l, err := parse(fs, dir, args)
	if err != nil {
		return err
	}
	return release(l)
}

func cmdStatus(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	dir := dirFlag(fs)
	l, err := parse(fs, dir, args)
	if err != nil {
		return err
	}
	return status(l)
}
