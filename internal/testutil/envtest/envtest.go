// Package envtest starts a real kube-apiserver and etcd for tests, with
// mailroom's CRDs and external-dns' DNSEndpoint CRD installed.
//
// The binaries are built from the Go module proxy by hack/build-k8s.sh
// (make envtest-assets) into bin/k8s/<version>/; this package never
// downloads anything. KUBEBUILDER_ASSETS overrides the folder.
package envtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"
	externaldnsv1alpha1 "sigs.k8s.io/external-dns/apis/v1alpha1"

	mailroomv1alpha1 "mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/testutil/kubeapp"
)

// KubernetesVersion is the kube-apiserver version tests run against.
const KubernetesVersion = "v1.37.2"

// Env is a running API server.
type Env struct {
	Config  *rest.Config
	Client  client.Client
	Scheme  *runtime.Scheme
	Version string // as reported by the server's /version

	env *crenvtest.Environment
}

// Scheme returns a scheme with the built-in kinds, mailroom's kinds and
// DNSEndpoint registered.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	must(clientgoscheme.AddToScheme(s))
	must(mailroomv1alpha1.AddToScheme(s))
	must(externaldnsv1alpha1.AddToScheme(s))
	return s
}

// Start starts etcd and kube-apiserver and installs the CRDs. It fails
// unless the server is KubernetesVersion. Call Stop when done (typically
// from TestMain).
func Start() (*Env, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(root, "bin", "k8s", KubernetesVersion)
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			return nil, fmt.Errorf("envtest: %s not found in %s; run 'make envtest-assets' to build it from the Go module proxy", b, assets)
		}
	}
	dnsEndpointCRD, err := externalDNSCRD(root)
	if err != nil {
		return nil, err
	}
	s := NewScheme()
	env := &crenvtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases"), dnsEndpointCRD},
		ErrorIfCRDPathMissing: true,
		Scheme:                s,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("envtest: starting kube-apiserver from %s: %w", assets, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("envtest: reading server version: %w", err)
	}
	if v.GitVersion != KubernetesVersion {
		_ = env.Stop()
		return nil, fmt.Errorf("envtest: kube-apiserver in %s reports %s, want %s; remove it and run 'make envtest-assets'", assets, v.GitVersion, KubernetesVersion)
	}
	return &Env{Config: cfg, Client: c, Scheme: s, Version: v.GitVersion, env: env}, nil
}

// Stop stops the API server and etcd.
func (e *Env) Stop() error { return e.env.Stop() }

// WriteKubeconfig writes the server's address and client certificate as a
// kubeconfig file, for child processes (the manager, external-dns,
// kubectl) to connect the way a user's tools would.
func (e *Env) WriteKubeconfig(path string) error { return WriteKubeconfig(e.Config, path) }

// WriteKubeconfig writes cfg (a client-certificate or token config, as
// envtest hands out) as a kubeconfig file.
func WriteKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["envtest"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "envtest"}
	kc.CurrentContext = "envtest"
	return clientcmd.WriteToFile(*kc, path)
}

// RepoRoot finds the mailroom module root from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module mailroom.io/mailroom\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("envtest: not inside the mailroom module")
		}
		dir = parent
	}
}

// externalDNSCRD locates the DNSEndpoint CRD shipped in the external-dns
// module the project depends on, so its version always matches the Go
// types the operator uses.
func externalDNSCRD(root string) (string, error) {
	p, err := kubeapp.DNSEndpointCRD(root)
	if err != nil {
		return "", fmt.Errorf("envtest: %w", err)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("envtest: DNSEndpoint CRD: %w", err)
	}
	return p, nil
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
