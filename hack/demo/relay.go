package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/relay/config"
)

// relay is the running relay and the login the demo sends with.
type relay struct {
	submission string
	username   string
	password   string
	roots      *x509.CertPool
	hostname   string
}

// startRelay writes the relay's config the way the operator's config
// Secret lays it out — the DKIM key from the SendingDomain's key Secret, a
// password hash, a TLS certificate — and starts the relay binary on it.
func (d *demo) startRelay(ctx context.Context, sd *v1.SendingDomain) (*relay, error) {
	var secret corev1.Secret
	if err := d.env.Client.Get(ctx, client.ObjectKey{Namespace: sd.Namespace, Name: sd.Name + "-dkim"}, &secret); err != nil {
		return nil, fmt.Errorf("reading the DKIM key Secret: %w", err)
	}
	selector := string(secret.Data["selector"])
	if selector != sd.Status.DKIM.ActiveSelector {
		return nil, fmt.Errorf("key Secret holds selector %q, status says %q", selector, sd.Status.DKIM.ActiveSelector)
	}
	etc := filepath.Join(d.dir, "relay-etc")
	if err := os.MkdirAll(filepath.Join(etc, "dkim"), 0o700); err != nil {
		return nil, err
	}
	keyFile := filepath.Join(etc, "dkim", selector+".pem")
	if err := os.WriteFile(keyFile, secret.Data["key.pem"], 0o600); err != nil {
		return nil, err
	}

	hostname := "relay." + domain
	certFile, keyPEM := filepath.Join(etc, "tls.crt"), filepath.Join(etc, "tls.key")
	roots, err := selfSigned(hostname, certFile, keyPEM)
	if err != nil {
		return nil, err
	}

	r := &relay{username: "shop.demo", password: randomHex(16), roots: roots, hostname: hostname}
	hash, err := bcrypt.GenerateFromPassword([]byte(r.password), bcrypt.DefaultCost)
	if err != nil {
		return nil, err
	}
	r.submission = freeAddr()
	httpAddr := freeAddr()
	cfg := config.Config{
		Hostname: hostname,
		Listeners: config.Listeners{
			Submission:  r.submission,
			Submissions: freeAddr(),
			HTTP:        httpAddr,
			Admin:       freeAddr(),
		},
		TLS: config.TLS{CertFile: certFile, KeyFile: keyPEM},
		Domains: []config.Domain{{
			Name: domain,
			Keys: []config.DKIMKey{{Selector: selector, Algorithm: string(sd.Spec.DKIM.Algorithm), PrivateKeyFile: keyFile}},
		}},
		Credentials: []config.Credential{{
			Username:       r.username,
			PasswordHash:   string(hash),
			AllowedSenders: []string{domain},
		}},
		Queue:    config.Queue{Directory: filepath.Join(d.dir, "queue")},
		Delivery: config.Delivery{Mode: config.ModeDirect, Resolvers: []string{d.bind.Addr}},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(etc, "relay.yaml")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return nil, err
	}
	if err := d.start("relay", filepath.Join(d.root, "bin", "relay"), "--config", cfgPath); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, "http://"+httpAddr+"/readyz", d.timeout); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	return r, nil
}

// send submits one message the way an application would.
func (r *relay) send() error {
	c, err := smtp.DialStartTLS(r.submission, &tls.Config{ServerName: r.hostname, RootCAs: r.roots})
	if err != nil {
		return fmt.Errorf("STARTTLS: %w", err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", r.username, r.password)); err != nil {
		return fmt.Errorf("AUTH: %w", err)
	}
	from, to := "orders@"+domain, "someone@"+recipientHost
	body := strings.ReplaceAll(fmt.Sprintf(`From: Shop <%s>
To: <%s>
Subject: Your order shipped

Hello from the mailroom demo. This message was submitted with STARTTLS and
AUTH, queued durably, signed with the domain's DKIM key and delivered to the
recipient's MX found through BIND.
`, from, to), "\n", "\r\n")
	if err := c.SendMail(from, []string{to}, strings.NewReader(body)); err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	return c.Quit()
}

// selfSigned writes a self-signed certificate for host and returns a pool
// that trusts it, as the operator's self-signed default does.
func selfSigned(host, certFile, keyFile string) (*x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool, nil
}
