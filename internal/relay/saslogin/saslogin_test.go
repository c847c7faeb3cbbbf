package saslogin

import (
	"bytes"
	"errors"
	"testing"
)

func TestLoginWithoutInitialResponsePromptsForBoth(t *testing.T) {
	var gotUser, gotPass string
	s := NewServer(func(u, p string) error { gotUser, gotPass = u, p; return nil })
	ch, done, err := s.Next(nil)
	if err != nil || done || !bytes.Equal(ch, []byte("Username:")) {
		t.Fatalf("first step: %q %v %v", ch, done, err)
	}
	ch, done, err = s.Next([]byte("alice"))
	if err != nil || done || !bytes.Equal(ch, []byte("Password:")) {
		t.Fatalf("second step: %q %v %v", ch, done, err)
	}
	_, done, err = s.Next([]byte("s3cret"))
	if err != nil || !done || gotUser != "alice" || gotPass != "s3cret" {
		t.Fatalf("last step: done=%v err=%v user=%q pass=%q", done, err, gotUser, gotPass)
	}
	if _, _, err := s.Next([]byte("more")); err == nil {
		t.Fatal("a response after completion was accepted")
	}
}

func TestLoginWithInitialResponseSkipsTheUsernamePrompt(t *testing.T) {
	var gotUser string
	s := NewServer(func(u, p string) error { gotUser = u; return nil })
	ch, done, err := s.Next([]byte("bob"))
	if err != nil || done || !bytes.Equal(ch, []byte("Password:")) {
		t.Fatalf("initial response: %q %v %v", ch, done, err)
	}
	if _, done, err := s.Next([]byte("pw")); err != nil || !done || gotUser != "bob" {
		t.Fatalf("password step: %v %v user=%q", done, err, gotUser)
	}
}

func TestLoginReportsTheAuthenticatorsVerdict(t *testing.T) {
	bad := errors.New("bad credentials")
	s := NewServer(func(u, p string) error { return bad })
	s.Next([]byte("bob"))
	if _, done, err := s.Next([]byte("wrong")); !done || err != bad {
		t.Fatalf("done=%v err=%v, want the authenticator's error", done, err)
	}
}
