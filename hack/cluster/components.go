package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	proxyv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

const (
	apiserverPort = 6443
	clusterDomain = "cluster.local"
	// cniBinDir is where Debian's containernetworking-plugins installs.
	cniBinDir = "/usr/lib/cni"
	// pauseImage is the sandbox image, built by hack/images like ours.
	pauseImage = "localhost/pause:dev"
)

// etcdArgs: client and peer on loopback (ports picked free at up), so
// neither pods (which reach only the node address) nor other interfaces
// see etcd. fsync is off: the data is thrown away and the disk is shared.
func etcdArgs(l layout, clientPort, peerPort int) []string {
	client := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	return []string{
		"--name=mailroom-e2e",
		"--data-dir=" + l.path("etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=mailroom-e2e=" + peer,
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
}

func apiserverArgs(l layout, o options, etcdPort int) []string {
	return []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		"--bind-address=" + o.NodeIP,
		fmt.Sprintf("--secure-port=%d", apiserverPort),
		"--advertise-address=" + o.NodeIP,
		"--tls-cert-file=" + l.pki("apiserver.crt"),
		"--tls-private-key-file=" + l.pki("apiserver.key"),
		"--client-ca-file=" + l.pki("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc." + clusterDomain,
		"--service-account-key-file=" + l.pki("sa.pub"),
		"--service-account-signing-key-file=" + l.pki("sa.key"),
		"--service-cluster-ip-range=" + o.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		// logs, exec and port-forward: the apiserver calls the kubelet with a
		// client certificate the kubelet trusts, and verifies the kubelet's
		// serving certificate against the same CA.
		"--kubelet-client-certificate=" + l.pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + l.pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + l.pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false",
	}
}

// The controller-manager and scheduler serve nothing (--secure-port=0):
// nothing needs their health endpoints, and every port not opened is one
// that cannot clash with another test on this machine.
func controllerManagerArgs(l layout) []string {
	return []string{
		"--kubeconfig=" + l.kubeconfig("controller-manager"),
		// Its flex-volume probe would otherwise create /usr/libexec/kubernetes.
		"--flex-volume-plugin-dir=" + l.path("kubelet-plugins", "volume", "exec"),
		"--secure-port=0",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + l.pki("sa.key"),
		"--root-ca-file=" + l.pki("ca.crt"),
		"--cluster-signing-cert-file=" + l.pki("ca.crt"),
		"--cluster-signing-key-file=" + l.pki("ca.key"),
		"--allocate-node-cidrs=false",
		"--profiling=false",
	}
}

func schedulerArgs(l layout) []string {
	return []string{
		"--kubeconfig=" + l.kubeconfig("scheduler"),
		"--secure-port=0",
		"--leader-elect=false",
		"--profiling=false",
	}
}

// containerdConfig keeps every containerd path inside the run folder or
// runRoot: root (images, snapshots) in the folder, state and sockets under
// runRoot (short paths). Debian's containerd 1.6 reads version 2 configs.
var containerdConfig = template.Must(template.New("containerd").Parse(`version = 2
root = "{{.Root}}"
state = "{{.State}}"
# Plugins that need kernel features or services this machine lacks, or
# would write outside the node's folders.
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{{.Socket}}"

[ttrpc]
  address = "{{.Socket}}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{{.Opt}}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{.Pause}}"
  # The VM lacks CAP_SYS_RESOURCE: without this every sandbox fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # Non-root containers without capabilities may bind ports below 1024
  # (net.ipv4.ip_unprivileged_port_start=0 in each pod's network
  # namespace, as containerd 2 does by default): the relay pods listen on
  # 587 and 465 as uid 65532 with every capability dropped.
  enable_unprivileged_ports = true
  # exec/attach/port-forward stream through the kubelet to this server.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # Pod network namespaces under the state folder, not /run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{{.RuncRoot}}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{.CNIBin}}"
    conf_dir = "{{.CNIConf}}"
    max_conf_num = 1
`))

func writeContainerdConfig(l layout) error {
	var b strings.Builder
	err := containerdConfig.Execute(&b, map[string]string{
		"Root":     l.path("containerd", "root"),
		"State":    l.containerdState(),
		"Socket":   l.containerdSocket(),
		"Opt":      l.path("containerd", "opt"),
		"Pause":    pauseImage,
		"RuncRoot": filepath.Join(runRoot, "runc"),
		"CNIBin":   cniBinDir,
		"CNIConf":  l.path("cni", "net.d"),
	})
	if err != nil {
		return err
	}
	return writeFile(l.path("containerd", "config.toml"), []byte(b.String()))
}

// writeCNIConfig: a bridge with host-local addresses and no masquerading,
// so pod traffic is never rewritten to leave through the host; isGateway
// gives pods a route to Service addresses (DNATed by kube-proxy).
func writeCNIConfig(l layout, o options) error {
	conf := map[string]any{
		"cniVersion": "0.4.0",
		"name":       "mailroom-e2e",
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      o.Bridge,
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true, // a pod reaching its own Service
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  []any{[]any{map[string]any{"subnet": o.PodCIDR}}},
					"routes":  []any{map[string]any{"dst": "0.0.0.0/0"}},
					"dataDir": l.path("cni", "ipam"),
				},
			},
		},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(l.path("cni", "net.d", "10-mailroom.conflist"), data)
}

func writeKubeletConfig(l layout, o options) error {
	c := kubeletv1beta1.KubeletConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: "kubelet.config.k8s.io/v1beta1", Kind: "KubeletConfiguration"},
		// Serve on the node address only; health on the same address.
		Address:            o.NodeIP,
		Port:               10250,
		ReadOnlyPort:       0,
		HealthzBindAddress: o.NodeIP,
		HealthzPort:        ptr.To[int32](10248),
		TLSCertFile:        l.pki("kubelet.crt"),
		TLSPrivateKeyFile:  l.pki("kubelet.key"),
		Authentication: kubeletv1beta1.KubeletAuthentication{
			X509:      kubeletv1beta1.KubeletX509Authentication{ClientCAFile: l.pki("ca.crt")},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: ptr.To(true)},
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: ptr.To(false)},
		},
		Authorization: kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeWebhook},
		// This machine runs cgroup v1, which kubelet 1.37 refuses unless told.
		FailCgroupV1: ptr.To(false),
		CgroupDriver: "cgroupfs",
		FailSwapOn:   ptr.To(false),
		// Pods get no upstream resolvers: only the cluster DNS.
		ResolverConfig: ptr.To(""),
		ClusterDomain:  clusterDomain,
		ClusterDNS:     []string{o.dnsIP.String()},
		// Paths kubelet would otherwise put outside the run folder.
		ContainerRuntimeEndpoint: "unix://" + l.containerdSocket(),
		VolumePluginDir:          l.path("kubelet-plugins", "volume", "exec"),
		PodLogsDir:               l.path("pod-logs"),
		// The shared disk may be fuller than kubelet's defaults allow; only a
		// truly full disk should evict test pods. Image GC would delete the
		// imported images, which cannot be pulled back.
		EvictionHard: map[string]string{
			"memory.available": "100Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
			"imagefs.available": "1%", "imagefs.inodesFree": "1%",
		},
		ImageGCHighThresholdPercent: ptr.To[int32](100),
		ImageGCLowThresholdPercent:  ptr.To[int32](99),
		// Lowering its own OOM score needs CAP_SYS_RESOURCE, which the VM lacks.
		OOMScoreAdj:         ptr.To[int32](0),
		SerializeImagePulls: ptr.To(false),
		MaxPods:             32,
		// Status changes (Ready) reach the API server within seconds.
		NodeStatusReportFrequency: metav1.Duration{Duration: 10 * time.Second},
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return writeFile(l.path("kubelet.yaml"), data)
}

func kubeletArgs(l layout, o options) []string {
	return []string{
		"--config=" + l.path("kubelet.yaml"),
		"--kubeconfig=" + l.kubeconfig("kubelet"),
		"--node-ip=" + o.NodeIP,
		"--hostname-override=" + o.NodeName,
		"--root-dir=" + l.path("kubelet"),
		"--v=1",
	}
}

// writeKubeProxyConfig: iptables mode, NodePorts only on the node address,
// no localhost NodePorts (which would set route_localnet), and conntrack
// limits left as the kernel has them (0 = do not touch) so kube-proxy
// changes as few sysctls as possible.
func writeKubeProxyConfig(l layout, o options) error {
	zero := metav1.Duration{}
	c := proxyv1alpha1.KubeProxyConfiguration{
		TypeMeta:           metav1.TypeMeta{APIVersion: "kubeproxy.config.k8s.io/v1alpha1", Kind: "KubeProxyConfiguration"},
		HostnameOverride:   o.NodeName,
		BindAddress:        o.NodeIP,
		HealthzBindAddress: o.NodeIP + ":10256",
		MetricsBindAddress: o.NodeIP + ":10249",
		Mode:               "iptables",
		ClusterCIDR:        o.PodCIDR,
		DetectLocalMode:    "ClusterCIDR",
		NodePortAddresses:  []string{o.NodeIP + "/32"},
		OOMScoreAdj:        ptr.To[int32](0),
		IPTables:           proxyv1alpha1.KubeProxyIPTablesConfiguration{LocalhostNodePorts: ptr.To(false), MasqueradeBit: ptr.To[int32](14)},
		Conntrack: proxyv1alpha1.KubeProxyConntrackConfiguration{
			MaxPerCore:            ptr.To[int32](0),
			Min:                   ptr.To[int32](0),
			TCPEstablishedTimeout: &zero,
			TCPCloseWaitTimeout:   &zero,
		},
	}
	c.ClientConnection.Kubeconfig = l.kubeconfig("kube-proxy")
	data, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return writeFile(l.path("kube-proxy.yaml"), data)
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
