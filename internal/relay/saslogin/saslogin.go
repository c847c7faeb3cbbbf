// Package saslogin is the server side of the LOGIN SASL mechanism
// (draft-murchison-sasl-login), which go-sasl no longer ships but many
// clients (Outlook, older PHP and .NET mailers) still use. Both forms are
// accepted: "AUTH LOGIN" followed by the username and password prompts, and
// "AUTH LOGIN <base64 username>" with the username as initial response.
package saslogin

import (
	"errors"

	"github.com/emersion/go-sasl"
)

// Mechanism is the SASL name.
const Mechanism = "LOGIN"

// Authenticator checks a username and password.
type Authenticator func(username, password string) error

type server struct {
	auth     Authenticator
	step     int
	username string
}

// NewServer returns a LOGIN server that calls auth once both values are in.
func NewServer(auth Authenticator) sasl.Server {
	return &server{auth: auth}
}

// The prompts are fixed by the de-facto standard; clients match on them.
var (
	promptUsername = []byte("Username:")
	promptPassword = []byte("Password:")
)

func (s *server) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.step {
	case 0:
		s.step = 1
		if response == nil {
			// No initial response: ask for the username.
			return promptUsername, false, nil
		}
		fallthrough
	case 1:
		s.username = string(response)
		s.step = 2
		return promptPassword, false, nil
	case 2:
		s.step = 3
		return nil, true, s.auth(s.username, string(response))
	default:
		return nil, false, errors.New("saslogin: unexpected client response")
	}
}
