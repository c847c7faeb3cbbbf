package config

import "testing"

// FuzzParse feeds arbitrary bytes to the config loader: it never panics,
// and whatever it accepts is valid (Validate passes on the result).
func FuzzParse(f *testing.F) {
	f.Add([]byte("hostname: relay.example.com\nqueue: {directory: /var/spool/mailroom}\ntls: {certFile: /c, keyFile: /k}\n"))
	f.Add([]byte("hostname: [1, 2]\n"))
	f.Add([]byte("limits: {maxMessageSize: 25Mi, maxRecipients: -1}\n"))
	f.Add([]byte("delivery: {mode: Smarthost, retry: {schedule: [1m, 0s]}}\n"))
	f.Add([]byte("include: [\"../../etc/passwd\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", err)
		}
	})
}
