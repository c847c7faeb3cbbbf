package certs

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func TestIssuedLeafChainsAndServesTLS(t *testing.T) {
	ca, err := NewCA(rand.Reader, "test CA", t0)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"relay.example.com", "pool-relay.mail.svc"}
	leaf, err := Issue(rand.Reader, ca, names, Server|Client, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(leaf.Cert, leaf.Key); err != nil {
		t.Fatalf("the pair does not load as a TLS certificate: %v", err)
	}
	due, err := Check(leaf, ca.Cert, names, t0)
	if err != nil {
		t.Fatalf("a fresh certificate needs renewal: %v", err)
	}
	if want := t0.Add(-time.Hour).Add(2 * (LeafLifetime + time.Hour) / 3); !due.Equal(want) {
		t.Errorf("renewal due %s, want %s (a third of the lifetime left)", due, want)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.Cert)
	cert, _ := tls.X509KeyPair(leaf.Cert, leaf.Key)
	parsed, _ := x509.ParseCertificate(cert.Certificate[0])
	if _, err := parsed.Verify(x509.VerifyOptions{Roots: roots, DNSName: "pool-relay.mail.svc", CurrentTime: t0}); err != nil {
		t.Errorf("a client trusting the CA refuses the certificate: %v", err)
	}
}

func TestCheckSaysWhyToReissue(t *testing.T) {
	ca, _ := NewCA(rand.Reader, "test CA", t0)
	other, _ := NewCA(rand.Reader, "another CA", t0)
	names := []string{"a.example"}
	leaf, _ := Issue(rand.Reader, ca, names, Server, t0)
	for _, tc := range []struct {
		name  string
		ca    []byte
		names []string
		now   time.Time
		want  string
	}{
		{"near expiry", ca.Cert, names, t0.Add(LeafLifetime - 24*time.Hour), "expires"},
		{"names changed", ca.Cert, []string{"a.example", "b.example"}, t0, "names"},
		{"another CA", other.Cert, names, t0, "does not chain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Check(leaf, tc.ca, tc.names, tc.now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Check = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := Check(Pair{}, ca.Cert, names, t0); err == nil {
		t.Error("an empty pair passes the check")
	}
}

func TestCAIsReplacedOnlyNearItsEnd(t *testing.T) {
	ca, _ := NewCA(rand.Reader, "test CA", t0)
	if _, err := CheckCA(ca, t0.Add(5*365*24*time.Hour)); err != nil {
		t.Errorf("a CA halfway through its life: %v", err)
	}
	if _, err := CheckCA(ca, t0.Add(CALifetime-24*time.Hour)); err == nil {
		t.Error("a CA a day before expiry is kept")
	}
}
