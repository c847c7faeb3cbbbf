// Command manager is the mailroom operator: it reconciles SendingDomains,
// SMTPCredentials and RelayPools.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	externaldnsv1alpha1 "sigs.k8s.io/external-dns/apis/v1alpha1"

	mailroomv1alpha1 "mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller"
)

func main() {
	if err := run(ctrl.SetupSignalHandler(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

// options are the manager's command-line settings.
type options struct {
	metricsAddr    string
	probeAddr      string
	leaderElect    bool
	leaderElectNS  string
	logLevel       slog.Level
	logFormat      string
	kubeconfigPath string
	relayImage     string
	watch          []string
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus /metrics endpoint; 0 disables it")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader so that only one of several replicas reconciles")
	fs.StringVar(&o.leaderElectNS, "leader-election-namespace", "", "namespace of the leader election Lease; empty: the pod's namespace")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&o.kubeconfigPath, "kubeconfig", "", "kubeconfig file; empty: in-cluster config or $KUBECONFIG")
	fs.Func("watch-namespaces", "comma-separated namespaces to watch (SendingDomains, SMTPCredentials, RelayPools and what they own); empty: all", func(v string) error {
		for _, ns := range strings.Split(v, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				o.watch = append(o.watch, ns)
			}
		}
		return nil
	})
	fs.StringVar(&o.relayImage, "relay-image", "", "relay image for pools that name none; empty: the image of this manager's own container (both binaries ship in one image)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.logFormat != "json" && o.logFormat != "text" {
		return o, fmt.Errorf("--log-format must be json or text, not %q", o.logFormat)
	}
	return o, nil
}

// newScheme registers every kind the manager reads or writes.
func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme,
		mailroomv1alpha1.AddToScheme,
		externaldnsv1alpha1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// run starts the manager and blocks until ctx ends.
func run(ctx context.Context, args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	hopts := &slog.HandlerOptions{Level: o.logLevel}
	var h slog.Handler = slog.NewJSONHandler(os.Stderr, hopts)
	if o.logFormat == "text" {
		h = slog.NewTextHandler(os.Stderr, hopts)
	}
	log := logr.FromSlogHandler(h)
	ctrl.SetLogger(log)

	if o.kubeconfigPath != "" {
		os.Setenv("KUBECONFIG", o.kubeconfigPath)
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	scheme, err := newScheme()
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		// Only the Secrets mailroom writes; the rest are read live.
		Cache:                   controller.CacheOptions(o.watch...),
		Metrics:                 metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:  o.probeAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "manager.mailroom.io",
		LeaderElectionNamespace: o.leaderElectNS,
		// Step down quickly on SIGTERM so a new replica takes over at once.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	relayImage := o.relayImage
	if relayImage == "" {
		relayImage = ownImage(ctx, mgr.GetAPIReader())
	}
	if err := setupReconcilers(mgr, relayImage); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	// Ready once the informer caches have synced: before that the manager
	// would act on a partial view of the cluster.
	if err := mgr.AddReadyzCheck("readyz", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return fmt.Errorf("caches not synced")
		}
		return nil
	}); err != nil {
		return err
	}
	log.Info("starting manager", "metrics", o.metricsAddr, "probes", o.probeAddr, "leaderElection", o.leaderElect)
	return mgr.Start(ctx)
}
