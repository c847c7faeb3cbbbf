package delivery

import "mailroom.io/mailroom/internal/relay/config"

// Config is what the relay's configuration file says about delivery,
// translated into this package's terms. The caller adds what the file does
// not hold (Registerer, Logger, Suppressions, RootCAs) to Options.
type Config struct {
	Options  Options
	Resolver ResolverOptions
	Retry    RetryPolicy
	// Paused: accept and queue, deliver nothing.
	Paused bool
}

// FromConfig translates a validated relay configuration.
//
// The configuration's smarthost TLS values are Required, Opportunistic and
// None; Implicit TLS (RFC 8314) is chosen for Required on port 465, where
// no server speaks STARTTLS.
func FromConfig(c *config.Config) Config {
	dc := c.Delivery
	out := Config{
		Options: Options{
			Hostname:                c.Hostname,
			Mode:                    Mode(dc.Mode),
			MaxConnectionsPerDomain: dc.MaxConnectionsPerDomain,
		},
		Resolver: ResolverOptions{Servers: dc.Resolvers},
		Retry:    RetryPolicy{Jitter: DefaultJitter},
		Paused:   dc.Paused,
	}
	if out.Options.Mode == Smarthost {
		tls := SmarthostTLS(dc.Smarthost.TLS)
		if tls == SmarthostTLSRequired && dc.Smarthost.Port == 465 {
			tls = SmarthostTLSImplicit
		}
		out.Options.Smarthost = SmarthostOptions{
			Host:            dc.Smarthost.Host,
			Port:            dc.Smarthost.Port,
			TLS:             tls,
			CredentialsFile: dc.Smarthost.CredentialsFile,
		}
	}
	for _, s := range dc.Retry.Schedule {
		out.Retry.Schedule = append(out.Retry.Schedule, s.Duration)
	}
	if dc.Retry.MaxAge != nil {
		out.Retry.MaxAge = dc.Retry.MaxAge.Duration
	}
	if dc.Retry.DelayWarningAfter != nil {
		out.Retry.DelayWarningAfter = dc.Retry.DelayWarningAfter.Duration
	}
	return out
}
