package dkim_test

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"sync"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"mailroom.io/mailroom/internal/dkim"
)

// keys are generated once per algorithm: RSA 4096 takes a while.
var (
	keysOnce sync.Once
	keys     map[dkim.Algorithm]crypto.Signer
)

func testKey(t *testing.T, a dkim.Algorithm) crypto.Signer {
	t.Helper()
	keysOnce.Do(func() {
		keys = map[dkim.Algorithm]crypto.Signer{}
		for _, a := range []dkim.Algorithm{dkim.RSA2048, dkim.RSA3072, dkim.RSA4096, dkim.Ed25519} {
			k, err := dkim.Generate(a, rand.Reader)
			if err != nil {
				panic(err)
			}
			keys[a] = k
		}
	})
	return keys[a]
}

var algorithms = []struct {
	alg     dkim.Algorithm
	keyType string
	rsaBits int
}{
	{dkim.RSA2048, "rsa", 2048},
	{dkim.RSA3072, "rsa", 3072},
	{dkim.RSA4096, "rsa", 4096},
	{dkim.Ed25519, "ed25519", 0},
}

func TestGenerateMakesKeysOfTheRequestedAlgorithm(t *testing.T) {
	for _, tc := range algorithms {
		t.Run(string(tc.alg), func(t *testing.T) {
			key := testKey(t, tc.alg)
			if got, err := dkim.AlgorithmOf(key); err != nil || got != tc.alg {
				t.Fatalf("AlgorithmOf = %q, %v; want %q", got, err, tc.alg)
			}
			if tc.rsaBits != 0 {
				if bits := key.(*rsa.PrivateKey).N.BitLen(); bits != tc.rsaBits {
					t.Fatalf("RSA key of %d bits, want %d", bits, tc.rsaBits)
				}
			}
		})
	}
}

func TestGenerateRefusesUnknownAlgorithms(t *testing.T) {
	for _, a := range []dkim.Algorithm{"", "RSA1024", "rsa2048"} {
		if _, err := dkim.Generate(a, rand.Reader); err == nil {
			t.Errorf("Generate(%q) succeeded", a)
		}
		if a.Valid() {
			t.Errorf("%q.Valid() = true", a)
		}
	}
}

func TestPrivateKeyRoundTripsThroughPKCS8PEM(t *testing.T) {
	for _, tc := range algorithms {
		t.Run(string(tc.alg), func(t *testing.T) {
			key := testKey(t, tc.alg)
			pemBytes, err := dkim.MarshalPrivateKey(key)
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(pemBytes)
			if block == nil || block.Type != "PRIVATE KEY" {
				t.Fatalf("not a PKCS#8 PEM block:\n%s", pemBytes)
			}
			back, err := dkim.ParsePrivateKey(pemBytes)
			if err != nil {
				t.Fatal(err)
			}
			if !back.(interface{ Equal(crypto.PrivateKey) bool }).Equal(key) {
				t.Fatal("parsed key differs from the original")
			}
		})
	}
}

func TestParsePrivateKeyRefusesWhatMailroomDidNotWrite(t *testing.T) {
	rsaKey := testKey(t, dkim.RSA2048).(*rsa.PrivateKey)
	good, _ := dkim.MarshalPrivateKey(rsaKey)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallDER, _ := x509.MarshalPKCS8PrivateKey(small)

	for name, data := range map[string][]byte{
		"empty":           nil,
		"not PEM":         []byte("hello"),
		"PKCS#1 block":    pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}),
		"garbage DER":     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
		"two blocks":      append(append([]byte{}, good...), good...),
		"trailing text":   append(append([]byte{}, good...), "extra"...),
		"1024-bit RSA":    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: smallDER}),
		"truncated block": good[:len(good)/2],
	} {
		if _, err := dkim.ParsePrivateKey(data); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
	if _, err := dkim.ParsePrivateKey(append(append([]byte{}, good...), "\n\n"...)); err != nil {
		t.Errorf("trailing newlines refused: %v", err)
	}
}

func TestRecordTextPublishesThePublicKey(t *testing.T) {
	for _, tc := range algorithms {
		t.Run(string(tc.alg), func(t *testing.T) {
			key := testKey(t, tc.alg)
			rec, err := dkim.RecordText(key)
			if err != nil {
				t.Fatal(err)
			}
			prefix := "v=DKIM1; k=" + tc.keyType + "; p="
			if !strings.HasPrefix(rec, prefix) {
				t.Fatalf("record %q does not start with %q", rec, prefix)
			}
			p, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(rec, prefix))
			if err != nil {
				t.Fatalf("p= is not base64: %v", err)
			}
			var pub crypto.PublicKey
			if tc.alg == dkim.Ed25519 {
				// RFC 8463: the raw 32-byte key, not a SubjectPublicKeyInfo.
				pub = ed25519.PublicKey(p)
			} else if pub, err = x509.ParsePKIXPublicKey(p); err != nil {
				t.Fatalf("p= is not a SubjectPublicKeyInfo: %v", err)
			}
			if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
				t.Fatal("p= holds another key")
			}
		})
	}
}

// A message signed with the key verifies against the record text with an
// implementation of DKIM verification that is not ours.
func TestRecordTextVerifiesSignaturesMadeWithTheKey(t *testing.T) {
	for _, tc := range algorithms {
		t.Run(string(tc.alg), func(t *testing.T) {
			key := testKey(t, tc.alg)
			rec, _ := dkim.RecordText(key)
			msg := "From: a@example.test\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
			var signed bytes.Buffer
			err := msgdkim.Sign(&signed, strings.NewReader(msg), &msgdkim.SignOptions{
				Domain: "example.test", Selector: "sel", Signer: key,
				HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
				BodyCanonicalization:   msgdkim.CanonicalizationRelaxed,
				HeaderKeys:             []string{"From", "To", "Subject"},
			})
			if err != nil {
				t.Fatal(err)
			}
			vs, err := msgdkim.VerifyWithOptions(&signed, &msgdkim.VerifyOptions{
				LookupTXT: func(name string) ([]string, error) {
					if name != "sel._domainkey.example.test" {
						t.Errorf("looked up %q", name)
					}
					return []string{rec}, nil
				},
			})
			if err != nil || len(vs) != 1 || vs[0].Err != nil {
				t.Fatalf("verification: %v %+v", err, vs)
			}
		})
	}
}
