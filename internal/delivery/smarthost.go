package delivery

import (
	"errors"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// SmarthostTLS is the TLS policy towards the smarthost.
type SmarthostTLS string

// Smarthost TLS policies.
const (
	// SmarthostTLSRequired: STARTTLS with a certificate valid for the
	// smarthost's name, or no delivery.
	SmarthostTLSRequired SmarthostTLS = "Required"
	// SmarthostTLSImplicit: TLS from the first byte (port 465), verified.
	SmarthostTLSImplicit SmarthostTLS = "Implicit"
	// SmarthostTLSOpportunistic: STARTTLS when offered, unverified;
	// credentials are still only sent over TLS.
	SmarthostTLSOpportunistic SmarthostTLS = "Opportunistic"
	// SmarthostTLSNone: cleartext; not allowed with credentials.
	SmarthostTLSNone SmarthostTLS = "None"
)

func (t SmarthostTLS) policy() tlsPolicy {
	switch t {
	case SmarthostTLSImplicit:
		return tlsImplicit
	case SmarthostTLSOpportunistic:
		return tlsOpportunistic
	case SmarthostTLSNone:
		return tlsNone
	}
	return tlsRequired
}

// SmarthostOptions describe the upstream server of Smarthost mode.
type SmarthostOptions struct {
	Host string
	Port int
	// TLS defaults to Required.
	TLS SmarthostTLS
	// CredentialsFile is a YAML file with "username:" and "password:"
	// (a mounted Secret); empty: no AUTH. It is read for every new
	// connection, so a rotated Secret takes effect without a restart.
	CredentialsFile string
}

func (o *SmarthostOptions) validate() error {
	if o.Host == "" {
		return errors.New("delivery: smarthost host is required")
	}
	if o.Port <= 0 || o.Port > 65535 {
		return fmt.Errorf("delivery: smarthost port %d", o.Port)
	}
	switch o.TLS {
	case "":
		o.TLS = SmarthostTLSRequired
	case SmarthostTLSRequired, SmarthostTLSImplicit, SmarthostTLSOpportunistic:
	case SmarthostTLSNone:
		if o.CredentialsFile != "" {
			return errors.New("delivery: smarthost credentials are never sent without TLS; TLS None cannot have credentials")
		}
	default:
		return fmt.Errorf("delivery: smarthost TLS %q", o.TLS)
	}
	return nil
}

// Credentials are a smarthost login.
type Credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// LoadCredentials reads a credentials file: YAML with "username:" and
// "password:".
func LoadCredentials(path string) (Credentials, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Credentials{}, err
	}
	var c Credentials
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return Credentials{}, fmt.Errorf("%s: %w", path, err)
	}
	if c.Username == "" || c.Password == "" {
		return Credentials{}, fmt.Errorf("%s: username and password are required", path)
	}
	return c, nil
}
