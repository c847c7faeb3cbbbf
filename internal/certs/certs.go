// Package certs issues the certificates the operator gives a RelayPool when
// the user names no TLS Secret: a CA per pool, a serving certificate for
// the submission ports, and a peer certificate for the pool's internal,
// mutually authenticated path. Keys are ECDSA P-256. Certificates are
// renewed when a third of their lifetime is left, when their names change,
// or when they no longer chain to the pool's CA.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"time"
)

// Lifetimes of what the operator issues.
const (
	CALifetime   = 10 * 365 * 24 * time.Hour
	LeafLifetime = 90 * 24 * time.Hour
)

// Pair is a PEM certificate and its PEM (PKCS#8) private key.
type Pair struct {
	Cert []byte
	Key  []byte
}

// NewCA makes a self-signed CA.
func NewCA(random io.Reader, commonName string, now time.Time) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), random)
	if err != nil {
		return Pair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(random),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"mailroom"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(random, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return Pair{}, err
	}
	return encode(der, key)
}

// Usage says what a leaf certificate is for.
type Usage int

const (
	Server Usage = 1 << iota
	Client
)

// Issue signs a leaf certificate for dnsNames with ca.
func Issue(random io.Reader, ca Pair, dnsNames []string, usage Usage, now time.Time) (Pair, error) {
	caCert, caKey, err := parse(ca)
	if err != nil {
		return Pair{}, fmt.Errorf("CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), random)
	if err != nil {
		return Pair{}, err
	}
	var eku []x509.ExtKeyUsage
	if usage&Server != 0 {
		eku = append(eku, x509.ExtKeyUsageServerAuth)
	}
	if usage&Client != 0 {
		eku = append(eku, x509.ExtKeyUsageClientAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(random),
		Subject:      pkix.Name{CommonName: dnsNames[0]},
		DNSNames:     dnsNames,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(LeafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  eku,
	}
	der, err := x509.CreateCertificate(random, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return Pair{}, err
	}
	return encode(der, key)
}

// RenewAt is when a certificate valid from notBefore to notAfter is due for
// renewal: with a third of its lifetime left.
func RenewAt(notBefore, notAfter time.Time) time.Time {
	return notAfter.Add(-notAfter.Sub(notBefore) / 3)
}

// Check explains why a leaf must be (re)issued, or returns nil and the time
// it becomes due.
func Check(leaf Pair, ca []byte, dnsNames []string, now time.Time) (time.Time, error) {
	cert, _, err := parse(leaf)
	if err != nil {
		return time.Time{}, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return time.Time{}, errors.New("no CA certificate")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return time.Time{}, fmt.Errorf("does not chain to the pool CA: %w", err)
	}
	if !slices.Equal(cert.DNSNames, dnsNames) {
		return time.Time{}, fmt.Errorf("names %v, want %v", cert.DNSNames, dnsNames)
	}
	due := RenewAt(cert.NotBefore, cert.NotAfter)
	if !now.Before(due) {
		return time.Time{}, fmt.Errorf("expires %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return due, nil
}

// CheckCA explains why a CA must be replaced, or returns when it is due.
func CheckCA(ca Pair, now time.Time) (time.Time, error) {
	cert, _, err := parse(ca)
	if err != nil {
		return time.Time{}, err
	}
	if !cert.IsCA {
		return time.Time{}, errors.New("not a CA")
	}
	due := RenewAt(cert.NotBefore, cert.NotAfter)
	if !now.Before(due) {
		return time.Time{}, fmt.Errorf("expires %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return due, nil
}

// NotAfter reads a PEM certificate's expiry.
func NotAfter(certPEM []byte) (time.Time, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return time.Time{}, errors.New("no PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return time.Time{}, err
	}
	return c.NotAfter, nil
}

func parse(p Pair) (*x509.Certificate, any, error) {
	cb, _ := pem.Decode(p.Cert)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, nil, errors.New("no PEM certificate")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	kb, _ := pem.Decode(p.Key)
	if kb == nil {
		return nil, nil, errors.New("no PEM private key")
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

func encode(der []byte, key *ecdsa.PrivateKey) (Pair, error) {
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Pair{}, err
	}
	return Pair{
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}),
	}, nil
}

func serial(random io.Reader) *big.Int {
	n, err := rand.Int(random, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
