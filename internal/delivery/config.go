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
// The configuration's smarthost TLS values map one to one onto
// SmarthostTLS (Required, Implicit, Opportunistic, None).
func FromConfig(c *config.Config) Config {
	dc := c.Delivery
	out := Config{
		Options: Options{
			Hostname:                c.Hostname,
			Mode:                    Mode(dc.Mode),
			MaxConnectionsPerDomain: dc.MaxConnectionsPerDomain,
			Port:                    dc.MXPort,
		},
		Resolver: ResolverOptions{Servers: dc.Resolvers},
		Retry:    RetryPolicy{Jitter: DefaultJitter},
		Paused:   dc.Paused,
	}
	if out.Options.Mode == Smarthost {
		tls := SmarthostTLS(dc.Smarthost.TLS)
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
