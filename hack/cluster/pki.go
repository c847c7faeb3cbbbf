package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

// certValidity: the CA is thrown away with the node; a week outlives any run.
const certValidity = 7 * 24 * time.Hour

// authority is the node's throwaway CA. It signs every serving and client
// certificate: the apiserver's, the kubelet's (so the apiserver can verify
// it for logs/exec), and each component's client identity.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

func newAuthority(l layout) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cert, err := certutil.NewSelfSignedCACert(certutil.Config{CommonName: "mailroom-e2e-ca"}, key)
	if err != nil {
		return nil, err
	}
	ca := &authority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: certutil.CertificateBlockType, Bytes: cert.Raw})}
	if err := writeKeyPair(l, "ca", ca.pem, key); err != nil {
		return nil, err
	}
	return ca, nil
}

// certSpec is one certificate to issue.
type certSpec struct {
	file   string // pki/<file>.crt and .key
	cn     string
	orgs   []string
	dns    []string
	ips    []net.IP
	server bool // serving certificate (else client)
}

type keyPair struct {
	certPEM, keyPEM []byte
	certFile        string
	keyFile         string
}

func (ca *authority) issue(l layout, s certSpec) (keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return keyPair{}, err
	}
	usage := x509.ExtKeyUsageClientAuth
	if s.server {
		usage = x509.ExtKeyUsageServerAuth
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: s.cn, Organization: s.orgs},
		NotBefore:    now.Add(-time.Hour), // tolerate a little clock skew
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     s.dns,
		IPAddresses:  s.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return keyPair{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: certutil.CertificateBlockType, Bytes: der})
	if err := writeKeyPair(l, s.file, certPEM, key); err != nil {
		return keyPair{}, err
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{certPEM: certPEM, keyPEM: keyPEM, certFile: l.pki(s.file + ".crt"), keyFile: l.pki(s.file + ".key")}, nil
}

func writeKeyPair(l layout, name string, certPEM []byte, key crypto.Signer) error {
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(l.pki(name)), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(l.pki(name+".crt"), certPEM, 0o644); err != nil {
		return err
	}
	return os.WriteFile(l.pki(name+".key"), keyPEM, 0o600)
}

// serviceAccountKeys writes the key pair the apiserver signs and verifies
// service account tokens with (the controller-manager signs with it too).
func serviceAccountKeys(l layout) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	if err := os.WriteFile(l.pki("sa.key"), keyPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(l.pki("sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

// writeKubeconfig writes a self-contained kubeconfig (certificates inline)
// for one identity.
func writeKubeconfig(path, server string, ca *authority, kp keyPair, user string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["mailroom-e2e"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca.pem}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: kp.certPEM, ClientKeyData: kp.keyPEM}
	cfg.Contexts["mailroom-e2e"] = &clientcmdapi.Context{Cluster: "mailroom-e2e", AuthInfo: user}
	cfg.CurrentContext = "mailroom-e2e"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*cfg, path)
}
