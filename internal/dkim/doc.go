// Package dkim holds a sending domain's DKIM keys: key generation (RSA
// 2048/3072/4096 per RFC 8301, Ed25519 per RFC 8463), PKCS#8 PEM encoding,
// the public key's DNS record text (RFC 6376 §3.6.1), selector naming, the
// keyring kept in the domain's "<name>-dkim" Secret, and the rotation
// schedule.
//
// Everything here is pure: no Kubernetes client, no DNS, no clock. The
// controller passes in the time and what DNS verification found, and applies
// the decisions this package makes.
package dkim
