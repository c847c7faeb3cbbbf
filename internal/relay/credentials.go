package relay

// checkPassword reports whether pw is pr's current password or one of its
// previous passwords whose notAfter has not passed on the server's clock.
// The deadline is checked here, at AUTH time, so an old password stops
// working on time even if no configuration is reloaded. pr nil (unknown
// user) still costs a hash comparison.
func (s *Server) checkPassword(pr *principal, user, pw string) bool {
	if pr == nil {
		return s.passwords.verify(user, "", pw)
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
