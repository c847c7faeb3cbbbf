package relay

import (
	"strings"
	"sync"
	"sync/atomic"

	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/relay/password"
)

// checkPassword reports whether pw is pr's current password or one of its
// previous passwords whose notAfter has not passed on the server's clock.
// The deadline is checked here, at AUTH time, so an old password stops
// working on time even if no configuration is reloaded.
//
// An unknown user (pr nil) still costs a hash comparison of the kind the
// configuration uses, so response times do not tell which users exist:
// a bcrypt one (the password cache's dummy) if any credential has a slow
// hash, else a $mr-sha256$ one, which is what every operator-generated
// credential has.
func (s *Server) checkPassword(pr *principal, user, pw string) bool {
	if pr == nil {
		if slowHashes(s.Config()) {
			return s.passwords.verify(user, "", pw)
		}
		_ = password.Verify(dummyToken(), pw)
		return false
	}
	if s.passwords.verify(user, pr.hash, pw) {
		return true
	}
	now := s.clock.Now()
	for _, p := range pr.previous {
		if now.Before(p.NotAfter.Time) && s.passwords.verify(user, p.Hash, pw) {
			return true
		}
	}
	return false
}

var dummyToken = sync.OnceValue(func() string {
	h, _ := password.HashToken(strings.Repeat("x", password.MinTokenLength))
	return h
})

// hashKinds caches, for the configuration last asked about, whether any
// credential has a slow (bcrypt or argon2id) hash.
type hashKinds struct {
	cfg  *config.Config
	slow bool
}

var lastKinds atomic.Pointer[hashKinds]

func slowHashes(cfg *config.Config) bool {
	if k := lastKinds.Load(); k != nil && k.cfg == cfg {
		return k.slow
	}
	k := &hashKinds{cfg: cfg}
	for _, c := range cfg.Credentials {
		if !password.IsToken(c.PasswordHash) {
			k.slow = true
			break
		}
	}
	lastKinds.Store(k)
	return k.slow
}
