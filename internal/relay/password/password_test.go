package password

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

func TestBcryptHashVerifies(t *testing.T) {
	h, err := Hash("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(h); err != nil {
		t.Fatalf("Check(own hash): %v", err)
	}
	if err := Verify(h, "correct horse"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := Verify(h, "wrong horse"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong password: %v, want ErrMismatch", err)
	}
}

func TestArgon2idPHCStringVerifies(t *testing.T) {
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte("s3cret"), salt, 1, 8*1024, 1, 32)
	h := fmt.Sprintf("$argon2id$v=19$m=8192,t=1,p=1$%s$%s",
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
	if err := Check(h); err != nil {
		t.Fatal(err)
	}
	if err := Verify(h, "s3cret"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := Verify(h, "s3cret!"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestPlaintextAndMalformedHashesAreRefusedWithoutEchoingThem(t *testing.T) {
	for _, h := range []string{"hunter2", "$2a$10$short", "$argon2id$v=19$m=0,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "{SHA}abc"} {
		err := Check(h)
		if err == nil {
			t.Errorf("Check(%q) accepted it", h)
			continue
		}
		if strings.Contains(err.Error(), h) {
			t.Errorf("Check's error %q repeats the hash", err)
		}
		if Verify(h, h) == nil {
			t.Errorf("Verify accepted %q as its own password", h)
		}
	}
}

func TestTokenHashVerifiesFastAndRefusesShortSecrets(t *testing.T) {
	secret := strings.Repeat("k", 43)
	h, err := HashToken(secret)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$mr-sha256$") || strings.Contains(h, secret) {
		t.Fatalf("hash %q", h)
	}
	if err := Check(h); err != nil {
		t.Fatal(err)
	}
	if err := Verify(h, secret); err != nil {
		t.Fatalf("right secret: %v", err)
	}
	if err := Verify(h, secret+"x"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong secret: %v", err)
	}
	h2, _ := HashToken(secret)
	if h2 == h {
		t.Fatal("two hashes of one secret are equal: no salt")
	}
	if _, err := HashToken("hunter2"); err == nil {
		t.Fatal("HashToken accepted a short password")
	}
	for _, bad := range []string{"$mr-sha256$", "$mr-sha256$c2FsdHNhbHQ", "$mr-sha256$c2FsdHNhbHQ$c2hvcnQ", "$mr-sha256$!!$!!"} {
		if Check(bad) == nil || Verify(bad, secret) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func BenchmarkVerifyToken(b *testing.B) {
	secret := strings.Repeat("k", 43)
	h, _ := HashToken(secret)
	for b.Loop() {
		if Verify(h, secret) != nil {
			b.Fatal("mismatch")
		}
	}
}
