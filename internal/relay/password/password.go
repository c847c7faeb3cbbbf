// Package password checks SMTP passwords against the stored hashes that the
// operator renders into the relay config. Only hashes are ever configured:
//
//   - "$mr-sha256$<salt>$<digest>" (unpadded standard base64): SHA-256 of a
//     16-byte random salt followed by the secret, compared in constant time.
//     HashToken makes it. This is what the operator uses for the passwords
//     it generates.
//   - bcrypt ("$2a$", "$2b$", "$2y$"), made by Hash, and argon2id in the
//     PHC string format ("$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>",
//     unpadded base64), for configurations written by hand.
//
// Why a fast hash is safe for operator-generated passwords, and only for
// them: a slow KDF (bcrypt, argon2id) exists to make guessing a
// low-entropy, human-chosen password from a stolen hash expensive. The
// operator's passwords are 256 bits from crypto/rand; guessing one costs
// 2^255 hash evaluations on average whether each takes a nanosecond or a
// second, and no dictionary contains it, so the KDF's cost buys nothing.
// What it does cost is real: about 60 ms of CPU per AUTH and per hash for
// bcrypt, minutes for a config of 5,000 credentials. The salt still keeps
// equal secrets from having equal hashes. A password a person picked must
// never be stored this way: HashToken refuses secrets shorter than
// MinTokenLength bytes, and hand-written configs should keep bcrypt or
// argon2id.
package password

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// ErrMismatch is returned by Verify when the password is wrong.
var ErrMismatch = errors.New("password does not match")

// Check reports whether hash is a well-formed, supported hash. The hash
// itself never appears in the error.
func Check(hash string) error {
	switch {
	case isBcrypt(hash):
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return fmt.Errorf("malformed bcrypt hash")
		}
		return nil
	case strings.HasPrefix(hash, "$argon2id$"):
		_, _, _, err := parseArgon2id(hash)
		return err
	case strings.HasPrefix(hash, tokenPrefix):
		_, _, err := parseToken(hash)
		return err
	default:
		return errors.New("unsupported hash: want $mr-sha256$, bcrypt ($2a$/$2b$/$2y$) or argon2id ($argon2id$)")
	}
}

// Verify returns nil if password matches hash, ErrMismatch if not, and
// another error if hash is unusable.
func Verify(hash, password string) error {
	switch {
	case isBcrypt(hash):
		err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return ErrMismatch
		}
		return err
	case strings.HasPrefix(hash, "$argon2id$"):
		p, salt, want, err := parseArgon2id(hash)
		if err != nil {
			return err
		}
		got := argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, uint32(len(want)))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			return ErrMismatch
		}
		return nil
	case strings.HasPrefix(hash, tokenPrefix):
		salt, want, err := parseToken(hash)
		if err != nil {
			return err
		}
		got := tokenDigest(salt, password)
		if subtle.ConstantTimeCompare(got[:], want) != 1 {
			return ErrMismatch
		}
		return nil
	default:
		return Check(hash)
	}
}

// Hash returns a bcrypt hash of password at bcrypt's default cost.
func Hash(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	return string(h), err
}

// MinTokenLength is the shortest secret HashToken accepts. A 256-bit
// random password is 43 characters in base64, 64 in hex.
const MinTokenLength = 32

const tokenPrefix = "$mr-sha256$"

// HashToken returns a salted SHA-256 hash ("$mr-sha256$<salt>$<digest>")
// of a high-entropy, machine-generated secret; see the package doc for
// why it must not be used for passwords people choose.
func HashToken(secret string) (string, error) {
	if len(secret) < MinTokenLength {
		return "", fmt.Errorf("HashToken is for generated secrets of at least %d bytes; use Hash for other passwords", MinTokenLength)
	}
	var salt [16]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return "", err
	}
	d := tokenDigest(salt[:], secret)
	return tokenPrefix + base64.RawStdEncoding.EncodeToString(salt[:]) + "$" + base64.RawStdEncoding.EncodeToString(d[:]), nil
}

// IsToken reports whether hash is a HashToken hash.
func IsToken(hash string) bool { return strings.HasPrefix(hash, tokenPrefix) }

func tokenDigest(salt []byte, secret string) [sha256.Size]byte {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(secret))
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

func parseToken(h string) (salt, digest []byte, err error) {
	rest := strings.TrimPrefix(h, tokenPrefix)
	s, d, ok := strings.Cut(rest, "$")
	if !ok {
		return nil, nil, errors.New("malformed $mr-sha256$ hash: want $mr-sha256$<salt>$<digest>")
	}
	if salt, err = base64.RawStdEncoding.DecodeString(s); err != nil || len(salt) < 8 {
		return nil, nil, errors.New("malformed $mr-sha256$ salt")
	}
	if digest, err = base64.RawStdEncoding.DecodeString(d); err != nil || len(digest) != sha256.Size {
		return nil, nil, errors.New("malformed $mr-sha256$ digest")
	}
	return salt, digest, nil
}

func isBcrypt(h string) bool {
	return strings.HasPrefix(h, "$2a$") || strings.HasPrefix(h, "$2b$") || strings.HasPrefix(h, "$2y$")
}

type argonParams struct {
	time, memory uint32
	threads      uint8
}

func parseArgon2id(h string) (p argonParams, salt, key []byte, err error) {
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	parts := strings.Split(h, "$")
	if len(parts) != 6 || parts[2] != "v=19" {
		return p, nil, nil, errors.New("malformed argon2id hash: want $argon2id$v=19$m=…,t=…,p=…$salt$hash")
	}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, perr := strconv.ParseUint(v, 10, 32)
		if !ok || perr != nil {
			return p, nil, nil, errors.New("malformed argon2id parameters")
		}
		switch k {
		case "m":
			p.memory = uint32(n)
		case "t":
			p.time = uint32(n)
		case "p":
			if n > 255 {
				return p, nil, nil, errors.New("argon2id parallelism above 255")
			}
			p.threads = uint8(n)
		default:
			return p, nil, nil, fmt.Errorf("unknown argon2id parameter %q", k)
		}
	}
	if p.memory == 0 || p.time == 0 || p.threads == 0 {
		return p, nil, nil, errors.New("argon2id parameters m, t and p are required")
	}
	if salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil || len(salt) < 8 {
		return p, nil, nil, errors.New("malformed argon2id salt")
	}
	if key, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(key) < 16 {
		return p, nil, nil, errors.New("malformed argon2id hash value")
	}
	return p, salt, key, nil
}
