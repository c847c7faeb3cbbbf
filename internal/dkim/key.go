package dkim

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
)

// Algorithm is a key type and size. The values match the SendingDomain API
// (spec.dkim.algorithm), so converting between them is a type conversion.
type Algorithm string

const (
	RSA2048 Algorithm = "RSA2048"
	RSA3072 Algorithm = "RSA3072"
	RSA4096 Algorithm = "RSA4096"
	Ed25519 Algorithm = "Ed25519"
)

// rsaBits are the RSA sizes offered. RFC 8301 makes 1024 bits the floor
// verifiers must accept and recommends 2048; smaller keys are not offered.
var rsaBits = map[Algorithm]int{RSA2048: 2048, RSA3072: 3072, RSA4096: 4096}

// Valid reports whether a is one of the algorithms offered.
func (a Algorithm) Valid() bool {
	return a == Ed25519 || rsaBits[a] != 0
}

// KeyType is the k= tag of the DNS record (RFC 6376 §3.6.1, RFC 8463 §4.2).
func (a Algorithm) KeyType() string {
	if a == Ed25519 {
		return "ed25519"
	}
	return "rsa"
}

// Generate makes a new private key of algorithm a, reading randomness from
// random (crypto/rand.Reader outside tests).
func Generate(a Algorithm, random io.Reader) (crypto.Signer, error) {
	if a == Ed25519 {
		_, priv, err := ed25519.GenerateKey(random)
		if err != nil {
			return nil, fmt.Errorf("generate Ed25519 key: %w", err)
		}
		return priv, nil
	}
	bits, ok := rsaBits[a]
	if !ok {
		return nil, fmt.Errorf("unknown DKIM algorithm %q", a)
	}
	key, err := rsa.GenerateKey(random, bits)
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", a, err)
	}
	return key, nil
}

// AlgorithmOf tells which algorithm key is, so a stored key can be checked
// against the spec. RSA keys of sizes not offered are an error: they were
// not made by mailroom and must not be used silently.
func AlgorithmOf(key crypto.Signer) (Algorithm, error) {
	switch k := key.(type) {
	case ed25519.PrivateKey:
		return Ed25519, nil
	case *rsa.PrivateKey:
		for a, bits := range rsaBits {
			if k.N.BitLen() == bits {
				return a, nil
			}
		}
		return "", fmt.Errorf("RSA key of %d bits; mailroom uses 2048, 3072 or 4096", k.N.BitLen())
	default:
		return "", fmt.Errorf("unsupported key type %T", key)
	}
}

// pemTypePrivateKey is the PEM block type of PKCS#8 private keys (RFC 7468).
const pemTypePrivateKey = "PRIVATE KEY"

// MarshalPrivateKey encodes key as a PKCS#8 "PRIVATE KEY" PEM block, the
// format openssl, OpenDKIM and Go all read.
func MarshalPrivateKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemTypePrivateKey, Bytes: der}), nil
}

// ParsePrivateKey decodes a PKCS#8 PEM private key of one of the offered
// algorithms. Anything else in the input (a second block, trailing bytes)
// is an error: a Secret edited by hand is better refused than half-read.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if block.Type != pemTypePrivateKey {
		return nil, fmt.Errorf("PEM block is %q, want %q (PKCS#8)", block.Type, pemTypePrivateKey)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("unexpected data after the PEM block")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("PKCS#8: %w", err)
	}
	key, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", parsed)
	}
	if _, err := AlgorithmOf(key); err != nil {
		return nil, err
	}
	return key, nil
}

// PublicKeyData is the p= value for key: base64 of the DER
// SubjectPublicKeyInfo for RSA (what RFC 6376 verifiers and openssl
// produce), base64 of the raw 32-byte key for Ed25519 (RFC 8463 §4.2).
func PublicKeyData(key crypto.Signer) (string, error) {
	switch pub := key.Public().(type) {
	case ed25519.PublicKey:
		return base64.StdEncoding.EncodeToString(pub), nil
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", fmt.Errorf("encode public key: %w", err)
		}
		return base64.StdEncoding.EncodeToString(der), nil
	default:
		return "", fmt.Errorf("unsupported public key type %T", pub)
	}
}

// RecordText is the TXT record value publishing key under a selector:
// "v=DKIM1; k=rsa; p=<base64>". Long values are split into DNS strings by
// the caller (package dnsrecord), not here: this is the text receivers see
// once the strings are joined.
func RecordText(key crypto.Signer) (string, error) {
	a, err := AlgorithmOf(key)
	if err != nil {
		return "", err
	}
	p, err := PublicKeyData(key)
	if err != nil {
		return "", err
	}
	return "v=DKIM1; k=" + a.KeyType() + "; p=" + p, nil
}
